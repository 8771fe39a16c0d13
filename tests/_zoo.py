"""A real zoo for the tests: ``microzoo serve`` in a subprocess, with its worker.

``start_zoo(root)`` creates a token of each role with ``microzoo zoo token create``, starts
``microzoo serve --root ROOT --port FREE`` on loopback (its worker a child of it), waits until it
answers and returns a :class:`ZooServer`; ``stop()`` ends it with SIGTERM (the server stops its
worker). ``zoo_server`` (a session fixture in the test modules that import it) shares one server
between the zoo's test modules: each test uses its own model names.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROLES = ("uploader", "reviewer", "admin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``microzoo ARGS`` (this interpreter, this source tree) and return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "microzoo.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=env or os.environ.copy(),
    )  # fmt: skip


@dataclass
class ZooServer:
    url: str
    root: Path
    tokens: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def client(self, role: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def upload(self, package_zip: bytes, *, name: str | None = None, role: str = "uploader") -> dict[str, Any]:
        with self.client(role) as http:
            response = http.post("/api/models", files={"package": ("p.zip", package_zip)}, data={"name": name or ""})
        assert response.status_code == 201, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def wait_tested(self, name: str, version: str, timeout: float = 300) -> dict[str, Any]:
        """The version once its test run ended (passed, failed or error)."""
        end = time.monotonic() + timeout
        with self.client("admin") as http:  # a token: some zoos need one to read
            while time.monotonic() < end:
                info: dict[str, Any] = http.get(f"/api/models/{name}/{version}").raise_for_status().json()
                if info["test_status"] not in ("pending", "running"):
                    return info
                time.sleep(0.5)
        raise AssertionError(
            f"{name}/{version} not tested after {timeout} s; server log:\n{self.log.read_text()[-3000:]}"
        )

    def wait_job(self, job_id: int, timeout: float = 300) -> dict[str, Any]:
        """The job once it ended (done or failed)."""
        end = time.monotonic() + timeout
        with self.client() as http:
            while time.monotonic() < end:
                job: dict[str, Any] = http.get(f"/api/jobs/{job_id}").raise_for_status().json()
                if job["status"] in ("done", "failed"):
                    return job
                time.sleep(0.5)
        raise AssertionError(
            f"job {job_id} not finished after {timeout} s; server log:\n{self.log.read_text()[-3000:]}"
        )

    def publish(self, name: str, version: str) -> dict[str, Any]:
        info = self.wait_tested(name, version)
        assert info["test_status"] == "passed", info.get("test_report")
        with self.client("reviewer") as http:
            http.post(f"/api/models/{name}/{version}/submit").raise_for_status()
            response = http.post(f"/api/models/{name}/{version}/publish", json={"comment": "looks good"})
        assert response.status_code == 200, response.text
        published: dict[str, Any] = response.json()
        return published

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_zoo(root: Path, *, cache: Path, db: str | None = None, extra: tuple[str, ...] = ()) -> ZooServer:
    """Start ``microzoo serve`` on a free loopback port with a temporary ``root`` (and index ``db``)."""
    env = {**os.environ, "MICROZOO_CACHE": str(cache)}
    where = ("--root", str(root), *(("--db", db) if db else ()))
    extra = (*(("--db", db) if db else ()), *extra)
    tokens = {}
    for role in ROLES:
        done = cli("zoo", "token", "create", *where, "--role", role, "--label", f"test {role}", env=env)
        assert done.returncode == 0, done.stderr
        tokens[role] = done.stdout.strip().splitlines()[-1]
    port = free_port()
    log = root / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "microzoo.cli", "serve", "--root", str(root), "--port", str(port), *extra],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    server = ZooServer(f"http://127.0.0.1:{port}", root, tokens, process, log, env)
    end = time.monotonic() + 90
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"microzoo serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            # 401: a zoo that needs a token to read is up too
            if httpx.get(server.url + "/api/models", timeout=2).status_code in (200, 401):
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"microzoo serve did not answer within 90 s:\n{log.read_text()[-3000:]}")


def package_zip(folder: Path, *, changes: dict[str, str] | None = None) -> bytes:
    """A package folder as zip bytes; ``changes`` replaces text in its description (a new version, ...)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            data = path.read_bytes()
            if changes and path.name in ("bioimageio.yaml", "rdf.yaml"):
                text = data.decode()
                for old, new in changes.items():
                    text = text.replace(old, new)
                data = text.encode()
            archive.writestr(path.name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def zoo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooServer]:
    """One real zoo for each test file (a temporary root, its own download cache).

    Not one for the session: files publish into it (a second version of the example, new models)
    and read what is there, so with the suite spread over processes (``make test``) what a file
    found would depend on which files ran before it in the same process.
    """
    server = start_zoo(tmp_path_factory.mktemp("zoo-root"), cache=tmp_path_factory.mktemp("zoo-cache"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def published_example(zoo_server: ZooServer, shared_data: Path) -> tuple[str, str]:
    """The BioImage Model Zoo example package, uploaded, tested by the worker and published: (name, version)."""
    answer = zoo_server.upload(package_zip(shared_data / "bmz" / "unet2d_nuclei_broad"))
    zoo_server.publish(answer["name"], answer["version"])
    return answer["name"], answer["version"]
