"""The zoo's client side against a real server: push, pull, search on the command line, and
`microzoo predict zoo:NAME/VERSION` giving what the package itself gives."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tifffile
from _zoo import ZooServer, cli, package_zip

from microzoo.errors import PackageError
from microzoo.package.zoo_ref import fetch_zoo_package, parse_zoo_ref

pytestmark = pytest.mark.slow


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_push_pull_search_round_trip(zoo_server: ZooServer, shared_data: Path, published_example, tmp_path: Path):
    name, version = published_example
    env = zoo_server.env
    pushed = cli("push", str(shared_data / "bmz" / "unet2d_nuclei_broad"), "--zoo", zoo_server.url,
                 "--token", zoo_server.tokens["uploader"], env=env)  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    new_name, new_version = pushed.stdout.strip().split("/")
    assert new_name != name and new_version == "1"

    with zoo_server.client() as http:  # other tests may have published newer versions of it
        latest = http.get(f"/api/models/{name}").json()["latest"]
    found = cli("search", "nuclei", "--zoo", zoo_server.url, env=env)
    assert found.returncode == 0, found.stderr
    assert f"{name}/{latest}" in found.stdout and new_name not in found.stdout  # drafts are not listed

    pulled = cli("pull", name, "--zoo", zoo_server.url, "-o", str(tmp_path / "pulled"), env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert f"{name}/{latest}" in pulled.stdout
    stored = _tree_digest(tmp_path / "pulled")
    source = _tree_digest(shared_data / "bmz" / "unet2d_nuclei_broad")
    assert {k: v for k, v in source.items() if k != "bioimageio.yaml"}.items() <= stored.items()
    assert "rdf.yaml" in stored or "bioimageio.yaml" in stored

    again = cli("pull", f"{name}/{version}", "--zoo", zoo_server.url, "-o", str(tmp_path / "pulled"), env=env)
    assert again.returncode == 2 and "not empty" in again.stderr


def test_push_without_a_valid_token_shows_the_zoo_message(zoo_server: ZooServer, shared_data: Path):
    refused = cli("push", str(shared_data / "bmz" / "unet2d_nuclei_broad"), "--zoo", zoo_server.url,
                  "--token", "wrong", env=zoo_server.env)  # fmt: skip
    assert refused.returncode == 2
    assert "unknown token" in refused.stderr and "Traceback" not in refused.stderr


def test_predict_with_a_zoo_model_gives_what_the_package_gives(
    zoo_server: ZooServer, shared_data: Path, published_example, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    name, version = published_example
    image = sorted((shared_data / "dsb2018" / "test" / "images").glob("*.png"))[0]
    env = zoo_server.env
    from_zoo = cli("predict", f"zoo:{name}/{version}", str(image), "-o", str(tmp_path / "zoo.tif"),
                   "--zoo", zoo_server.url, "--weights", "onnx", env=env)  # fmt: skip
    assert from_zoo.returncode == 0, from_zoo.stderr
    local = cli("predict", str(shared_data / "bmz" / "unet2d_nuclei_broad"), str(image),
                "-o", str(tmp_path / "local.tif"), "--weights", "onnx", env=env)  # fmt: skip
    assert local.returncode == 0, local.stderr
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "zoo.tif"), tifffile.imread(tmp_path / "local.tif"))
    cached = list((Path(env["MICROZOO_CACHE"]) / "zoo").rglob(f"{name}/{version}.zip"))
    assert len(cached) == 1

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached version was asked for again")

    monkeypatch.setenv("MICROZOO_CACHE", env["MICROZOO_CACHE"])
    monkeypatch.setattr(httpx, "get", no_network)
    monkeypatch.setattr(httpx, "stream", no_network)
    assert fetch_zoo_package(f"zoo:{name}/{version}", zoo=zoo_server.url) == cached[0]
    monkeypatch.undo()

    latest = cli("info", f"zoo:{name}", "--zoo", zoo_server.url, env=env)
    assert latest.returncode == 0 and "UNet 2D Nuclei Broad" in latest.stdout
    unknown = cli("predict", "zoo:no-such-model/1", str(image), "-o", str(tmp_path / "x.tif"),
                  "--zoo", zoo_server.url, env=env)  # fmt: skip
    assert unknown.returncode == 2 and "no-such-model" in unknown.stderr


def test_zoo_references_are_checked(monkeypatch: pytest.MonkeyPatch):
    assert parse_zoo_ref("zoo:affable-shark/1.2") == ("affable-shark", "1.2")
    assert parse_zoo_ref("zoo:affable-shark") == ("affable-shark", None)
    for bad in ("zoo:", "zoo:a/b/c", "zoo:../x", "zoo:a/.."):
        with pytest.raises(PackageError, match="zoo:NAME"):
            parse_zoo_ref(bad)
    monkeypatch.delenv("MICROZOO_ZOO", raising=False)
    with pytest.raises(PackageError, match="--zoo URL"):
        fetch_zoo_package("zoo:affable-shark/1")


def test_zoo_admin_commands_import_retest_and_revoke(
    zoo_server: ZooServer, shared_data: Path, published_example, tmp_path: Path
):
    root, env = str(zoo_server.root), zoo_server.env
    folder = tmp_path / "zips"
    folder.mkdir()
    (folder / "good.zip").write_bytes(package_zip(shared_data / "bmz" / "unet2d_nuclei_broad"))
    (folder / "broken.zip").write_bytes(b"not a zip at all")
    imported = cli("zoo", "import", str(folder), "--root", root, env=env)
    assert imported.returncode == 1, imported.stderr
    assert "1 imported, 1 refused" in imported.stdout and "broken.zip" in imported.stdout
    assert "good.zip -> " in imported.stdout and "(test queued)" in imported.stdout

    retest = cli("zoo", "retest", "--root", root, env=env)
    assert retest.returncode == 0 and "re-test(s) queued" in retest.stdout
    name, version = published_example
    deadline = time.monotonic() + 300
    with zoo_server.client() as http:
        while http.get(f"/api/models/{name}/{version}").json()["retest_status"] is None:
            assert time.monotonic() < deadline, "the re-test did not run"
            time.sleep(0.5)
        assert http.get(f"/api/models/{name}/{version}").json()["retest_status"] == "passed"

    created = cli("zoo", "token", "create", "--root", root, "--role", "uploader", "--label", "leaving", env=env)
    token = created.stdout.strip()
    comment = {"json": {"text": "hello"}, "headers": {"Authorization": f"Bearer {token}"}}
    with zoo_server.client() as http:
        assert http.post(f"/api/models/{name}/{version}/comments", **comment).status_code == 201
        assert cli("zoo", "token", "revoke", "leaving", "--root", root, env=env).returncode == 0
        revoked = http.post(f"/api/models/{name}/{version}/comments", **comment)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    listed = cli("zoo", "token", "list", "--root", root, env=env)
    assert listed.returncode == 0 and token not in listed.stdout
    leaving = next(line for line in listed.stdout.splitlines() if line.strip().startswith("leaving"))
    assert "uploader" in leaving and leaving.count("-") >= 4  # created and revoked dates


def test_a_zoo_that_requires_a_token_to_read_serves_microzoo_with_microzoo_token(tmp_path: Path, shared_data: Path):
    from _zoo import start_zoo

    extra = ("--read-token-required", "--publish-on-pass")
    server = start_zoo(tmp_path / "root", cache=tmp_path / "cache", extra=extra)
    try:
        answer = server.upload(package_zip(shared_data / "bmz" / "unet2d_nuclei_broad"))
        name, version = answer["name"], answer["version"]
        assert server.wait_tested(name, version)["status"] == "published"
        args = ("pull", f"{name}/{version}", "--zoo", server.url)
        anonymous = cli(*args, "-o", str(tmp_path / "anonymous"), env=server.env)
        assert anonymous.returncode == 2 and "token" in anonymous.stderr
        assert not (tmp_path / "anonymous").exists()
        reader = {**server.env, "MICROZOO_TOKEN": server.tokens["uploader"]}
        pulled = cli(*args, "-o", str(tmp_path / "pulled"), env=reader)
        assert pulled.returncode == 0, pulled.stderr
        assert (tmp_path / "pulled" / "weights.onnx").read_bytes() == (
            shared_data / "bmz" / "unet2d_nuclei_broad" / "weights.onnx"
        ).read_bytes()
    finally:
        server.stop()
