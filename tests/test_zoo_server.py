"""The zoo's server against a real `microzoo serve` (with its worker) on loopback.

The key test: stock bioimageio.core, pointed at the zoo by the three environment variables
bioimageio.spec reads and nothing else, runs `bioimageio test NAME/VERSION` on a published model
and passes; a draft is not found that way.
"""

# ruff: noqa: F811  (the fixtures imported are the test functions' parameters)
from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

import httpx
import imageio.v3 as iio
import pytest
from _postgres import postgres_admin_url  # noqa: F401  (fixture)
from _zoo import ZooServer, package_zip, start_zoo
from _zoo_db import db  # noqa: F401  (fixture)

from microzoo.tour.zoo_steps import stock_bioimageio

pytestmark = pytest.mark.slow
EXAMPLE = "bmz/unet2d_nuclei_broad"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_search_finds_the_published_model_with_facets(zoo_server: ZooServer, published_example: tuple[str, str]):
    name, version = published_example
    with zoo_server.client() as http:
        found = http.get("/api/models", params={"q": "nuclei"}).raise_for_status().json()
        assert f"{name}/{version}" in [f"{i['name']}/{i['version']}" for i in found["items"]]
        assert found["facets"]["weight_format"].get("onnx", 0) >= 1
        nothing = http.get("/api/models", params={"q": "nuclei", "weight_format": "keras_hdf5"}).json()
        assert nothing["total"] == 0 and nothing["items"] == []


def test_model_and_version_say_status_tests_and_compatibility(zoo_server: ZooServer, published_example):
    name, version = published_example
    with zoo_server.client() as http:
        model = http.get(f"/api/models/{name}").raise_for_status().json()
        info = http.get(f"/api/models/{name}/{version}").raise_for_status().json()
    assert model["latest"] == version
    assert info["status"] == "published" and info["test_status"] == "passed"
    assert {fmt: r["status"] for fmt, r in info["test_report"]["formats"].items()} == {
        "torchscript": "passed",
        "onnx": "passed",
    }
    assert info["compat"]["consumers"]["deepImageJ"]["runs"] is True
    assert info["summary"]["title"] == "UNet 2D Nuclei Broad"
    assert any(c["kind"] == "status" for c in info["comments"])


def test_writes_need_a_token_of_the_right_role(zoo_server: ZooServer, shared_data: Path, published_example):
    name, version = published_example
    with zoo_server.client() as anonymous:
        response = anonymous.post("/api/models", files={"package": ("p.zip", b"PK")})
        assert response.status_code == 401 and "token" in response.json()["detail"]
    with httpx.Client(base_url=zoo_server.url, headers={"Authorization": "Bearer not-a-token"}) as wrong:
        response = wrong.post(f"/api/models/{name}/{version}/comments", json={"text": "hi"})
        assert response.status_code == 401 and response.json()["detail"]
    with zoo_server.client("uploader") as uploader:
        response = uploader.post(f"/api/models/{name}/{version}/publish", json={"comment": ""})
        assert response.status_code == 403, response.text
        assert "reviewer" in response.json()["detail"]


def test_errors_are_json_with_a_message(zoo_server: ZooServer):
    with zoo_server.client("uploader") as http:
        missing = http.get("/api/models/no-such-model")
        assert missing.status_code == 404 and "no-such-model" in missing.json()["detail"]
        bad_page = http.get("/api/models", params={"page": 0})
        assert bad_page.status_code == 422 and "page" in bad_page.json()["detail"]
        not_a_zip = http.post("/api/models", files={"package": ("p.zip", b"this is not a zip")})
        assert 400 <= not_a_zip.status_code < 500 and isinstance(not_a_zip.json()["detail"], str)
        no_file = http.get("/artifacts/no-such-model/files/rdf.yaml")
        assert no_file.status_code == 404 and no_file.json()["detail"]


def test_served_files_are_the_exact_bytes(zoo_server: ZooServer, shared_data: Path, published_example):
    name, version = published_example
    source = shared_data / EXAMPLE
    with zoo_server.client() as http:
        for file_name in ("weights.pt", "weights.onnx", "test_input.npy", "cover0.png"):
            expected = (source / file_name).read_bytes()
            got = http.get(f"/artifacts/{name}/{version}/files/{file_name}")
            assert got.status_code == 200 and _sha256(got.content) == _sha256(expected)
            head = http.head(f"/artifacts/{name}/files/{file_name}")
            assert head.status_code == 200 and int(head.headers["content-length"]) == len(expected)
            assert head.content == b""
        for outside in ("..%2F..%2F..%2Fzoo.sqlite", "%2e%2e/%2e%2e/%2e%2e/zoo.sqlite", "/etc/passwd"):
            refused = http.get(f"/artifacts/{name}/{version}/files/{outside}")
            assert refused.status_code == 404 and b"SQLite" not in refused.content
        rdf = http.get(f"/artifacts/{name}/files/rdf.yaml").raise_for_status()
        id_map = http.get("/id_map.json").raise_for_status().json()
        zip_response = http.get(f"/api/models/{name}/{version}/package.zip").raise_for_status()
        info = http.get(f"/api/models/{name}/{version}").json()
    assert id_map[f"{name}/{version}"] == {
        "source": f"{zoo_server.url}/artifacts/{name}/{version}/files/rdf.yaml",
        "sha256": _sha256(rdf.content),
    }
    assert id_map[name]["source"] == f"{zoo_server.url}/artifacts/{name}/files/rdf.yaml"
    assert _sha256(zip_response.content) == info["zip_sha256"] and info["downloads"] >= 1


def test_review_workflow_over_http(zoo_server: ZooServer, shared_data: Path, published_example):
    name, _ = published_example
    with_qc = "    pytorch_version: 2.5.1\nconfig:\n  microzoo:\n    qc:\n      f1: 0.875\n"
    changes = {"A 2d U-Net": "A second 2d U-Net", "    pytorch_version: 2.5.1": with_qc}
    answer = zoo_server.upload(package_zip(shared_data / EXAMPLE, changes=changes), name=name)
    version = answer["version"]
    assert answer["status"] == "draft" and answer["name"] == name
    path = f"/api/models/{name}/{version}"
    with zoo_server.client("uploader") as uploader, zoo_server.client("reviewer") as reviewer:
        assert uploader.post(f"{path}/submit").raise_for_status().json()["status"] == "in_review"
        sent_back = reviewer.post(f"{path}/request-changes", json={"comment": "say which microscope"})
        assert sent_back.status_code == 200 and sent_back.json()["status"] == "changes_requested"
        assert uploader.post(f"{path}/comments", json={"text": "widefield, 40x"}).status_code == 201
        assert uploader.post(f"{path}/submit").json()["status"] == "in_review"
        assert uploader.post(f"{path}/publish", json={}).status_code == 403
        zoo_server.wait_tested(name, version)
        published = reviewer.post(f"{path}/publish", json={"comment": "thanks"})
        assert published.status_code == 200, published.text
        assert published.json()["status"] == "published"
        texts = [c["text"] for c in uploader.get(path).json()["comments"]]
    assert "say which microscope" in " ".join(texts) and "widefield, 40x" in texts
    with zoo_server.client() as http:
        assert http.get(f"/api/models/{name}").json()["latest"] == version
        assert f"{name}/{version}" in http.get("/id_map.json").json()
        page = http.get(f"/models/{name}").text  # the latest version's page, with its QC figures
    assert f'<code id="model-id">{name}/{version}</code>' in page
    assert 'id="qc-numbers"' in page and "0.875" in page and "say which microscope" in page


def test_stock_bioimageio_core_tests_a_published_model_from_the_zoo(
    zoo_server: ZooServer, published_example, tmp_path: Path
):
    name, version = published_example
    result = stock_bioimageio(zoo_server.url, tmp_path, "test", f"{name}/{version}")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert re.search(r"status\s+passed", output) and re.search(rf"\bid\s+{name}\b", output), output[:3000]
    assert "weights.torchscript" in output and "weights.onnx" in output


def test_drafts_are_not_served_where_bioimageio_resolves_ids(zoo_server: ZooServer, shared_data: Path, tmp_path):
    data = package_zip(shared_data / EXAMPLE, changes={"A 2d U-Net": "A draft 2d U-Net"})
    answer = zoo_server.upload(data)
    name, version = answer["name"], answer["version"]
    with zoo_server.client() as http:
        assert http.get(f"/artifacts/{name}/{version}/files/rdf.yaml").status_code == 404
        assert http.head(f"/artifacts/{name}/files/weights.pt").status_code == 404
        assert name not in http.get("/id_map.json").json()
        draft = http.get("/id_map_draft.json").json()[f"{name}/draft"]
        assert draft["source"] == f"{zoo_server.url}/drafts/{name}/{version}/files/rdf.yaml"
        assert _sha256(http.get(draft["source"]).content) == draft["sha256"]
    result = stock_bioimageio(zoo_server.url, tmp_path, "test", f"{name}/{version}")
    assert result.returncode != 0
    assert "not found" in (result.stdout + result.stderr).lower()


def test_pages_show_search_model_upload_and_review(zoo_server: ZooServer, published_example):
    name, version = published_example
    with zoo_server.client() as http:
        home = http.get("/", headers={"accept": "text/html"})
        assert home.status_code == 200 and 'id="search-box"' in home.text
        found = http.get("/search", params={"q": "nuclei"})
        assert f"/models/{name}/" in found.text and 'id="facets"' in found.text
        page = http.get(f"/models/{name}/{version}").text
        for expected in (
            "UNet 2D Nuclei Broad",
            f"microzoo predict zoo:{name}/{version}",
            f"bioimageio test {name}/{version}",
            f"{zoo_server.url}/api/models/{name}/{version}/package.zip",
            'id="compatibility"',
            'id="documentation"',
        ):
            assert expected in page, expected
        assert 'id="upload-form"' in http.get("/upload").text
        assert http.get("/review").status_code == 200
        missing = http.get("/models/no-such-model", headers={"accept": "text/html"})
        assert missing.status_code == 404 and "no-such-model" in missing.text and "<html" in missing.text
        assert "/api/models" in http.get("/openapi.json").json()["paths"]


def test_try_it_runs_one_image_in_a_worker(zoo_server: ZooServer, shared_data: Path, published_example):
    name, version = published_example
    image = sorted((shared_data / "dsb2018" / "test" / "images").glob("*.png"))[0]
    with zoo_server.client() as http:
        queued = http.post(f"/api/models/{name}/{version}/try", files={"image": (image.name, image.read_bytes())})
        assert queued.status_code == 202, queued.text
        job = zoo_server.wait_job(queued.json()["job"])
        assert job["status"] == "done", job["error"]
        pictures = {key: http.get(url) for key, url in job["pictures"].items()}
        page = http.get(f"/models/{name}/{version}/try/{job['id']}")
        form = http.post(f"/models/{name}/{version}/try", files={"image": (image.name, image.read_bytes())})
    assert {"input", "output"} <= set(pictures)
    for picture in pictures.values():
        assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")
        assert iio.imread(picture.content).shape[:2] == iio.imread(image).shape[:2]
    assert job["result"]["note"]["headline"]
    assert 'id="try-result"' in page.text and 'id="trust-note"' in page.text
    assert 'data-verdict="similar"' in page.text and "the package&#39;s 1 test input" in page.text
    assert form.status_code == 303 and form.headers["location"].startswith(f"/models/{name}/{version}/try/")


def test_the_upload_page_shows_a_refusal_and_takes_a_good_package(zoo_server: ZooServer, shared_data: Path):
    broken = package_zip(shared_data / EXAMPLE, changes={"source: weights.pt": "source: missing.pt"})
    token = {"token": zoo_server.tokens["uploader"]}
    with zoo_server.client() as http:
        refused = http.post("/upload", data=token, files={"package": ("broken.zip", broken)})
        accepted = http.post("/upload", data=token, files={"package": ("good.zip", package_zip(shared_data / EXAMPLE))})
    assert refused.status_code == 422 and 'id="upload-error"' in refused.text and "missing.pt" in refused.text
    assert accepted.status_code == 303 and accepted.headers["location"].endswith("/1?uploaded=1")
    cookies = accepted.headers.get_list("set-cookie")
    assert any(c.startswith("zoo_token=") and "HttpOnly" in c for c in cookies)
    with zoo_server.client() as browser:  # a browser follows the redirect with the cookies it was given
        for cookie in cookies:
            key, value = cookie.split(";")[0].split("=", 1)
            browser.cookies.set(key, value)
        page = browser.get(accepted.headers["location"])
    assert 'id="upload-ok"' in page.text and 'id="upload-notes"' in page.text
    assert "No &#39;# Validation&#39; (sub)section" in page.text  # the example's README lacks one: a warning


def test_serve_publishes_on_pass_and_stops_its_workers(tmp_path: Path, shared_data: Path, db: str):
    extra = ("--workers", "2", "--publish-on-pass")
    server = start_zoo(tmp_path / "root", cache=tmp_path / "cache", db=db, extra=extra)
    try:
        children = _children(server.process.pid)
        assert len(children) == 2 and all(b"zoo\x00worker" in _cmdline(pid) for pid in children)
        answer = server.upload(package_zip(shared_data / EXAMPLE))
        name, version = answer["name"], answer["version"]
        info = server.wait_tested(name, version)
        assert info["test_status"] == "passed" and info["status"] == "published"
        with server.client() as http:
            assert http.get("/api/models", params={"q": "nuclei"}).json()["total"] == 1
            rdf = http.get(http.get("/id_map.json").json()[f"{name}/{version}"]["source"])
            assert rdf.status_code == 200 and hashlib.sha256(rdf.content).hexdigest() == info["rdf_sha256"]
    finally:
        server.stop()
    assert server.process.returncode == 0
    assert not _still_running(children, b"worker")


def _children(pid: int) -> list[int]:
    return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]


def _still_running(pids: list[int], marker: bytes, *, within: float = 15.0) -> list[tuple[int, bytes]]:
    """The processes of ``pids`` (command line holding ``marker``) alive after ``within`` s, with it.

    A child may end a moment after its parent: multiprocessing's resource tracker, which uvicorn's
    several-process server starts, exits when it reads the end of its pipe from the dead parent.
    """
    end = time.monotonic() + within
    while True:
        alive = [(pid, command) for pid in pids if (command := _cmdline(pid)) and marker in command]
        if not alive or time.monotonic() > end:
            return alive
        time.sleep(0.2)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_serve_in_several_processes_answers_and_stops_them_all(tmp_path: Path):
    server = start_zoo(tmp_path / "root", cache=tmp_path / "cache", extra=("--workers", "1", "--processes", "2"))
    try:
        children = _children(server.process.pid)
        workers = [pid for pid in children if b"zoo\x00worker" in _cmdline(pid)]
        assert len(workers) == 1 and len(children) >= 3  # the test worker and two server processes
        with server.client() as http:
            answers = [http.get("/api/models", params={"q": "nuclei"}) for _ in range(20)]
            assert {a.status_code for a in answers} == {200}
            page = http.get("/", headers={"accept": "text/html"})
            assert page.status_code == 200 and "Find a model" in page.text
    finally:
        server.stop()
    assert server.process.returncode == 0
    assert not _still_running(children, b"")
