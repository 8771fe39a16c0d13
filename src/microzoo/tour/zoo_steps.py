"""Steps 1 and 5: a local zoo, the example model in it, and a trained model published to it.

:class:`LocalZoo` is ``microzoo serve`` (uvicorn on loopback, a free port, with its test
worker) in a child process over a folder of the tour's output (SQLite index), its tokens made
by the zoo's own token API. Step 1 pushes the BioImage Model Zoo example model to it; the zoo
validates it, its worker test-runs every weight format, and the version is published once the
tests pass. Step 5 pushes the Noise2Void package step 3 trained, finds it by search and has
stock bioimageio.core test it by the zoo's ids (the three ``BIOIMAGEIO_*`` variables only).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from microzoo.errors import MicrozooError
from microzoo.tour.common import StepResult, Table, TourContext, command, shown, write_json

#: the BioImage Model Zoo example package under the shared data
EXAMPLE = Path("bmz") / "unet2d_nuclei_broad"


class TourError(MicrozooError):
    """A step of the tour could not run (the zoo did not start, a test run did not end)."""


@dataclasses.dataclass
class LocalZoo:
    """``microzoo serve`` on loopback over ``root``, started by :meth:`start`, ended by :meth:`stop`."""

    root: Path
    url: str = ""
    token: str = ""  # an admin's: it uploads, and reads drafts
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.root / "serve.log"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def start(self, *, timeout: float = 90.0) -> LocalZoo:
        """Create the zoo (its index migrated), a token, and start its server and worker."""
        from microzoo.zoo.service import Zoo

        self.root.mkdir(parents=True, exist_ok=True)
        zoo = Zoo(self.root, publish_on_pass=True)
        try:
            self.token = zoo.create_token("admin", label="the tour")
        finally:
            zoo.close()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        self.url = f"http://127.0.0.1:{port}"
        serve = [sys.executable, "-m", "microzoo.cli", "serve", "--root", str(self.root), "--port", str(port),
                 "--publish-on-pass"]  # fmt: skip
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(serve, stdout=log, stderr=subprocess.STDOUT)
        import httpx

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise TourError(f"the local zoo stopped at once (exit {self.process.returncode}): {self._tail()}")
            try:
                if httpx.get(self.url + "/api/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise TourError(f"the local zoo did not answer within {timeout:.0f} s: {self._tail()}")

    def stop(self) -> None:
        """End the server (it stops its worker); safe to call twice."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self) -> Any:
        from microzoo.zoo.client import ZooClient

        return ZooClient(self.url, token=self.token)

    def wait_tested(self, name: str, version: str, *, timeout: float = 600.0) -> dict[str, Any]:
        """The version once its worker's test run ended (passed, failed or error)."""
        end = time.monotonic() + timeout
        with self.client() as client:
            while time.monotonic() < end:
                info: dict[str, Any] = client.version_info(name, version)
                if info["test_status"] not in ("pending", "running"):
                    return info
                time.sleep(0.5)
        raise TourError(f"{name}/{version} was not test-run within {timeout:.0f} s: {self._tail()}")

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:] if self.log.exists() else "(no log)"


def push_and_test(zoo: LocalZoo, package: Path, ctx: TourContext, what: str) -> dict[str, Any]:
    """Push ``package``, wait for the worker's test run; the version's details (``compat`` included)."""
    with zoo.client() as client:
        answer = client.push(package)
    name, version = answer["name"], str(answer["version"])
    ctx.progress(1, 3, f"{what}: {name}/{version} uploaded, the zoo's worker is test-running it")
    info = zoo.wait_tested(name, version)
    ctx.progress(2, 3, f"{what}: tests {info['test_status']}")
    if info["test_status"] == "passed" and info.get("status") != "published":  # published on pass: wait for it
        end = time.monotonic() + 30
        with zoo.client() as client:
            while info.get("status") != "published" and time.monotonic() < end:
                time.sleep(0.3)
                info = client.version_info(name, version)
    return info


def compat_table(compat: dict[str, Any]) -> Table:
    """The compatibility matrix as a table: one row per zoo tool."""
    rows = tuple(
        (tool, "yes" if entry["runs"] else "no", entry["reason"]) for tool, entry in compat["consumers"].items()
    )
    formats = ", ".join(f"{fmt}: {result}" for fmt, result in compat["formats"].items())
    return Table(f"Compatibility matrix (format {compat['format_version']}; test runs: {formats})",
                 ("tool", "runs it", "why"), rows)  # fmt: skip


def step_zoo(ctx: TourContext) -> StepResult:
    """Step 1: a local zoo starts and the example model is imported, validated and test-run."""
    start = time.perf_counter()
    zoo = ctx.zoo = LocalZoo(ctx.out / "zoo")
    ctx.progress(0, 3, "starting a local zoo (SQLite)")
    zoo.start()
    package = ctx.data / EXAMPLE
    info = push_and_test(zoo, package, ctx, "the example model")
    name, version = info["name"], str(info["version"])
    compat = info.get("compat") or {}
    runs = [tool for tool, entry in compat.get("consumers", {}).items() if entry["runs"]]
    report = info.get("test_report") or {}
    ctx.progress(3, 3, "the example model is in the zoo")
    return StepResult(
        number=1,
        title="A model zoo on your machine",
        what=(
            "A model repository starts on this machine (an SQLite index in a folder), and the BioImage Model Zoo's "
            "example nuclei model is uploaded to it: the zoo checks the package against the format, its worker "
            "reproduces the package's test outputs with every weight format, and the version is published."
        ),
        why=(
            "A model is a package: weights, a description of its inputs and processing, and test data that prove it "
            "still computes what its authors measured; the compatibility matrix says which tools (bioimageio.core, "
            "deepImageJ, ilastik, microzoo) can run it, before you try."
        ),
        commands=(
            command("serve", "--root", ctx.out / "zoo", "--port", "8000", "--publish-on-pass") + " &",
            command("zoo", "token", "create", "--root", ctx.out / "zoo", "--role", "uploader"),
            command("push", package, "--zoo", "http://127.0.0.1:8000", "--token", "TOKEN"),
        ),
        summary=f"{name}/{version}: test run {info['test_status']}, {info.get('status')}; runs in {', '.join(runs)}",
        figures=(
            ("model", f"{name}/{version}"),
            ("test run", str(info["test_status"])),
            ("status", str(info.get("status"))),
            ("tools that run it", f"{len(runs)} of {len(compat.get('consumers', {}))}"),
        ),
        lines=tuple(_report_lines(report)),
        tables=(compat_table(compat),) if compat else (),
        reports=(("the zoo's record of the version (JSON)", write_json(ctx.folder("zoo") / "example.json", info)),),
        seconds=time.perf_counter() - start,
        facts={"name": name, "version": version, "test_status": info["test_status"], "compat": compat,
               "status": info.get("status")},
    )  # fmt: skip


def _report_lines(report: dict[str, Any]) -> list[str]:
    """One line per weight format of a test report, where it has them."""
    lines = []
    for fmt, result in (report.get("formats") or {}).items():
        if isinstance(result, dict):
            lines.append(f"{fmt}: {result.get('status', result.get('result', ''))} {result.get('detail', '')}".strip())
    return lines


def stock_bioimageio(url: str, folder: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``bioimageio ARGS`` (the one installed beside this Python), told about the zoo only by
    ``BIOIMAGEIO_COLLECTION_HTTP_PATTERN``, ``BIOIMAGEIO_ID_MAP`` and ``BIOIMAGEIO_ID_MAP_DRAFT``,
    with a fresh cache and home under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder / "home"),
        "BIOIMAGEIO_COLLECTION_HTTP_PATTERN": f"{url}/artifacts/{{bioimageio_id}}/files/rdf.yaml",
        "BIOIMAGEIO_ID_MAP": f"{url}/id_map.json",
        "BIOIMAGEIO_ID_MAP_DRAFT": f"{url}/id_map_draft.json",
        "BIOIMAGEIO_CACHE_PATH": str(folder / "bioimageio-cache"),
    }
    executable = Path(sys.executable).parent / "bioimageio"
    return subprocess.run([str(executable), *args], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=folder)  # fmt: skip


def bioimageio_core_missing() -> str | None:
    """Why stock bioimageio.core cannot run here, or None when it can."""
    if importlib.util.find_spec("bioimageio.core") is None:
        return "bioimageio.core is not installed here (pip install bioimageio.core)"
    if not (Path(sys.executable).parent / "bioimageio").exists():
        return f"the `bioimageio` command is not installed beside {sys.executable}"
    return None


def step_publish(ctx: TourContext) -> StepResult:
    """Step 5: the trained model is published, found by search and run by stock bioimageio.core."""
    start = time.perf_counter()
    zoo, package = ctx.zoo, ctx.trained
    if zoo is None or package is None:
        raise TourError("step 5 needs the zoo of step 1 and the model of step 3")
    info = push_and_test(zoo, package, ctx, "the trained model")
    name, version = info["name"], str(info["version"])
    words = "noise2void"
    with zoo.client() as client:
        found = client.search(words)
    hits = [f"{item['name']}/{item['version']}" for item in found["items"]]
    ctx.progress(2, 3, "stock bioimageio.core tests the model by its zoo id")
    missing = bioimageio_core_missing()
    lines: list[str] = []
    core_passed: bool | None = None
    if missing is None:
        done = stock_bioimageio(zoo.url, ctx.out / "publish" / "bioimageio", "test", f"{name}/{version}")
        output = done.stdout + done.stderr
        core_passed = done.returncode == 0 and re.search(r"status\s+passed", output) is not None
        status_lines = [line.strip() for line in output.splitlines() if re.search(r"status|passed|failed", line)]
        lines.append(f"`bioimageio test {name}/{version}` (stock bioimageio.core, by the zoo's id): "
                     f"{'passed' if core_passed else f'FAILED (exit {done.returncode})'}")  # fmt: skip
        if not core_passed:
            lines.extend(status_lines[:8] or output.splitlines()[-8:])
    else:
        lines.append(f"Not run: {missing}; the zoo serves the ids it would use all the same.")
    core_words = "passed" if core_passed else "not run" if core_passed is None else "FAILED"
    compat = info.get("compat") or {}
    runs = [tool for tool, entry in compat.get("consumers", {}).items() if entry["runs"]]
    sample = sorted((ctx.data / "w2s" / "test" / "noisy").glob("*.tif"))[0]
    url = "http://127.0.0.1:8000"  # the zoo as step 1's command starts it (the tour's own port is gone after it)
    env = (f"BIOIMAGEIO_COLLECTION_HTTP_PATTERN='{url}/artifacts/{{bioimageio_id}}/files/rdf.yaml' "
           f"BIOIMAGEIO_ID_MAP={url}/id_map.json BIOIMAGEIO_ID_MAP_DRAFT={url}/id_map_draft.json")  # fmt: skip
    ctx.progress(3, 3, "published")
    return StepResult(
        number=5,
        title="Publish the model, find it, run it elsewhere",
        what=(
            "The Noise2Void package trained in step 3 is uploaded to the local zoo, test-run by its worker and "
            "published; a search for its name finds it, and stock bioimageio.core, told only where the zoo's ids "
            "live, downloads it by its id and reproduces its test outputs."
        ),
        why=(
            "A trained model is worth something to others only as a package that runs outside the program that "
            "made it; a zoo that speaks the BioImage Model Zoo's ids lets the community's tools (and your "
            "colleagues) use it by name."
        ),
        commands=(
            command("push", package, "--zoo", url, "--token", "TOKEN"),
            command("search", words, "--zoo", url),
            f"{env} bioimageio test {name}/{version}",
            command("serve", "--root", ctx.out / "zoo", "--port", "8000") + f"   # the web pages: {url}",
            f"MICROZOO_ZOO={url} napari {shown(sample)} -w microzoo Model Run"
            f"   # Model: zoo:{name}/{version}",
        ),
        summary=(f"{name}/{version} published ({info['test_status']}); search '{words}' finds {len(hits)}; "
                 f"bioimageio.core test: {core_words}"),  # fmt: skip
        figures=(
            ("model", f"{name}/{version}"),
            ("zoo test run", str(info["test_status"])),
            ("found by search", ", ".join(hits) or "nothing"),
            ("tools that run it", ", ".join(runs) or "none"),
            ("stock bioimageio.core", core_words),
        ),
        lines=tuple(lines),
        tables=(compat_table(compat),) if compat else (),
        reports=(("the zoo's record of the version (JSON)", write_json(ctx.folder("zoo") / "trained.json", info)),),
        seconds=time.perf_counter() - start,
        facts={"name": name, "version": version, "test_status": info["test_status"], "found": hits,
               "core_passed": core_passed, "core_missing": missing},
    )  # fmt: skip
