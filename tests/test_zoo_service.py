"""The zoo's service on SQLite and on PostgreSQL: tokens, publishing, review, files, ids, jobs."""

from __future__ import annotations

import hashlib
import threading
import zipfile
from pathlib import Path

import pytest
import yaml
from _zoo_db import staged_example

from microzoo.errors import UploadError, ZooAuthError, ZooConflict, ZooError, ZooNotFound
from microzoo.zoo.service import Zoo


@pytest.fixture
def zoo(zoo_root: Path, db: str):
    zoo = Zoo(zoo_root, db)
    yield zoo
    zoo.close()


def _tokens(zoo: Zoo):
    return {role: zoo.authorise(zoo.create_token(role, label=role), role) for role in ("uploader", "reviewer", "admin")}


def test_tokens_roles_and_revocation(zoo: Zoo) -> None:
    uploader = zoo.create_token("uploader", label="alice")
    reviewer = zoo.create_token("reviewer", label="bob")
    assert zoo.authorise(uploader, "uploader").label == "alice"
    assert zoo.authorise(reviewer, "uploader").role == "reviewer"  # roles are ordered
    with pytest.raises(ZooAuthError) as too_low:
        zoo.authorise(uploader, "reviewer")
    assert too_low.value.status == 403
    with pytest.raises(ZooAuthError) as missing:
        zoo.authorise(None, "uploader")
    assert missing.value.status == 401
    with pytest.raises(ZooAuthError, match="unknown token"):
        zoo.authorise(uploader + "x", "uploader")
    zoo.revoke_token("alice")
    with pytest.raises(ZooAuthError, match="revoked"):
        zoo.authorise(uploader, "uploader")
    zoo.revoke_token(reviewer)  # by the token itself
    with pytest.raises(ZooAuthError, match="revoked"):
        zoo.authorise(reviewer, "reviewer")
    with pytest.raises(ZooNotFound):
        zoo.revoke_token("nobody")
    with pytest.raises(ZooError, match="unknown role"):
        zoo.create_token("superuser")
    # only hashes are stored
    assert all(uploader not in str(info) for info in zoo.tokens())


def test_publish_assigns_names_and_versions(zoo: Zoo, example_model: Path) -> None:
    tokens = _tokens(zoo)
    first = zoo.publish_upload(staged_example(zoo, example_model), token=tokens["uploader"])
    assert first.version == "1" and first.status == "draft" and first.test_status == "pending"
    adjective, animal = first.name.split("-")
    assert adjective and animal
    second = zoo.publish_upload(
        staged_example(zoo, example_model, small=True), token=tokens["uploader"], name=first.name
    )
    assert (second.name, second.version) == (first.name, "2")
    given = zoo.publish_upload(
        staged_example(zoo, example_model, package_id="nuclei-unet", package_version="0.3.0", small=True),
        token=tokens["uploader"],
    )
    assert given.url_path == "nuclei-unet/0.3.0"
    # the stored description carries the id and version, and rdf_sha256 is its hash
    stored = zoo.file_path(first.name, "1", "rdf.yaml")
    description = yaml.safe_load(stored.read_text())
    assert (description["id"], description["version"]) == (first.name, "1")
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == first.rdf_sha256
    # the zip holds the same files, and its hash and size are recorded
    zipped = zoo.zip_path(first.name, "1")
    assert (
        hashlib.sha256(zipped.read_bytes()).hexdigest() == first.zip_sha256 and zipped.stat().st_size == first.zip_size
    )
    with zipfile.ZipFile(zipped) as archive:
        assert sorted(archive.namelist()) == sorted(p.name for p in stored.parent.iterdir())
        assert archive.read("rdf.yaml") == stored.read_bytes()
    # every upload queued its test
    assert [job.kind for job in iter(lambda: zoo.claim_job("w"), None)] == ["test"] * 3
    assert not list((zoo.root / "staging").iterdir())


def test_package_id_and_version_are_checked(zoo: Zoo, example_model: Path) -> None:
    uploader = _tokens(zoo)["uploader"]
    upload = staged_example(zoo, example_model, package_id="nuclei-unet", small=True)
    with pytest.raises(UploadError, match="the package's id is 'nuclei-unet' but it was uploaded as 'other'"):
        zoo.publish_upload(upload, token=uploader, name="other")
    with pytest.raises(UploadError, match="cannot be used"):
        zoo.publish_upload(staged_example(zoo, example_model, small=True), token=uploader, name="../etc")
    zoo.publish_upload(staged_example(zoo, example_model, package_version="1.0", small=True), token=uploader, name="m")
    again = staged_example(zoo, example_model, package_version="1.0", small=True)
    with pytest.raises(ZooConflict, match="m/1.0 exists"):
        zoo.publish_upload(again, token=uploader, name="m")
    assert [v.version for v in zoo.versions("m")] == ["1.0"]
    assert zoo.check_consistency() == []


def test_only_the_uploader_or_a_reviewer_adds_versions(zoo: Zoo, example_model: Path) -> None:
    tokens = _tokens(zoo)
    other = zoo.authorise(zoo.create_token("uploader", label="mallory"), "uploader")
    zoo.publish_upload(staged_example(zoo, example_model, small=True), token=tokens["uploader"], name="m")
    with pytest.raises(ZooAuthError, match="m belongs to another uploader"):
        zoo.publish_upload(staged_example(zoo, example_model, small=True), token=other, name="m")
    assert (
        zoo.publish_upload(staged_example(zoo, example_model, small=True), token=tokens["reviewer"], name="m").version
        == "2"
    )


def _pass_tests(zoo: Zoo, name: str, version: str) -> None:
    job = zoo.claim_job("w", ("test",))
    assert job is not None and (job.name, job.version) == (name, version)
    assert zoo.version(name, version, published_only=False).test_status == "running"
    zoo.finish_job(job.id, ok=True, result={"formats": {"onnx": {"status": "passed"}}})


def test_review_transitions(zoo: Zoo, example_model: Path) -> None:
    tokens = _tokens(zoo)
    uploader, reviewer = tokens["uploader"], tokens["reviewer"]
    draft = zoo.publish_upload(staged_example(zoo, example_model, small=True), token=uploader, name="m")
    with pytest.raises(ZooAuthError):
        zoo.publish("m", "1", token=uploader)  # uploader cannot publish
    with pytest.raises(ZooConflict, match="is draft"):
        zoo.publish("m", "1", token=reviewer)  # not in review yet
    assert zoo.submit_for_review("m", "1", token=uploader).status == "in_review"
    with pytest.raises(ZooConflict, match="tests have not passed"):
        zoo.publish("m", "1", token=reviewer)
    with pytest.raises(ZooError, match="comment is empty"):
        zoo.request_changes("m", "1", token=reviewer, comment=" ")
    assert zoo.request_changes("m", "1", token=reviewer, comment="add a cover").status == "changes_requested"
    with pytest.raises(ZooConflict):
        zoo.request_changes("m", "1", token=reviewer, comment="again")
    zoo.submit_for_review("m", "1", token=uploader)
    _pass_tests(zoo, "m", "1")
    with pytest.raises(ZooNotFound):
        zoo.latest_published("m")
    published = zoo.publish("m", "1", token=reviewer, comment="looks good")
    assert published.status == "published" and published.is_latest and published.published_at is not None
    with pytest.raises(ZooConflict):
        zoo.submit_for_review("m", "1", token=uploader)
    zoo.comment("m", "1", token=uploader, text="thanks")
    texts = [(c.kind, c.text) for c in zoo.comments("m", "1")]
    assert texts[0] == ("status", "uploaded as a draft; test run queued")
    assert (
        ("comment", "add a cover") in texts
        and ("comment", "looks good") in texts
        and texts[-1] == ("comment", "thanks")
    )
    assert [t for k, t in texts if k == "status"][-1] == "published"
    assert draft.id == published.id
    converting = zoo.enqueue("convert", version_id=published.id, payload={"formats": ["onnx"]})
    page = zoo.version_page("m", "1")  # what the model page shows, read in one transaction
    assert page.info == zoo.version("m", "1") and [v.version for v in page.versions] == ["1"]
    assert [(c.kind, c.text) for c in page.comments] == texts
    assert [j.id for j in page.convert_jobs] == [converting]  # its test jobs are not conversions
    with pytest.raises(ZooNotFound, match="m/9"):
        zoo.version_page("m", "9")


def test_latest_is_the_newest_published_and_id_map(zoo: Zoo, example_model: Path) -> None:
    tokens = _tokens(zoo)
    for _ in range(3):
        zoo.publish_upload(staged_example(zoo, example_model, small=True), token=tokens["uploader"], name="m")
    for version in ("1", "2"):
        zoo.submit_for_review("m", version, token=tokens["uploader"])
        _pass_tests(zoo, "m", version)
    zoo.publish("m", "2", token=tokens["reviewer"])
    assert zoo.latest_published("m").version == "2"
    zoo.publish("m", "1", token=tokens["reviewer"])  # an older version published later is not the latest
    assert zoo.latest_published("m").version == "2"
    assert [v.is_latest for v in zoo.versions("m")] == [False, True, False]
    assert zoo.version("m", published_only=False).version == "3"
    with pytest.raises(ZooNotFound):
        zoo.version("m", "3")  # a draft is not served as published
    id_map = zoo.id_map("http://zoo.test/")
    assert set(id_map) == {"m", "m/1", "m/2"}
    assert id_map["m"]["source"] == "http://zoo.test/artifacts/m/files/rdf.yaml"
    assert id_map["m/1"]["source"] == "http://zoo.test/artifacts/m/1/files/rdf.yaml"
    for key, version in (("m", "2"), ("m/1", "1"), ("m/2", "2")):
        stored = zoo.file_path("m", version, "rdf.yaml").read_bytes()
        assert id_map[key]["sha256"] == hashlib.sha256(stored).hexdigest()
    drafts = zoo.id_map("http://zoo.test", drafts=True)
    assert drafts == {
        "m/draft": {"source": "http://zoo.test/drafts/m/3/files/rdf.yaml", "sha256": zoo.versions("m")[2].rdf_sha256}
    }


def test_publish_on_pass(zoo_root: Path, db: str, example_model: Path) -> None:
    zoo = Zoo(zoo_root, db, publish_on_pass=True)
    uploader = _tokens(zoo)["uploader"]
    zoo.publish_upload(staged_example(zoo, example_model, small=True), token=uploader, name="good")
    zoo.publish_upload(staged_example(zoo, example_model, small=True), token=uploader, name="bad")
    good, bad = zoo.claim_job("w"), zoo.claim_job("w")
    assert good is not None and bad is not None
    zoo.finish_job(good.id, ok=True, result={"formats": {"onnx": {"status": "passed"}}})
    zoo.finish_job(bad.id, ok=False, result={"formats": {"onnx": {"status": "failed"}}})
    assert zoo.latest_published("good").test_status == "passed"
    failed = zoo.version("bad", "1", published_only=False)
    assert (failed.status, failed.test_status) == ("draft", "failed")
    assert failed.compat is not None and failed.compat["formats"]["onnx"] == "failed"
    assert failed.compat["formats"]["pytorch_state_dict"] == "not tested"
    with pytest.raises(ZooError, match="finished already"):
        zoo.finish_job(bad.id, ok=True, result={})
    zoo.close()


def test_files_and_downloads(zoo: Zoo, example_model: Path) -> None:
    uploader = _tokens(zoo)["uploader"]
    zoo.publish_upload(staged_example(zoo, example_model), token=uploader, name="m")
    assert zoo.file_path("m", "1", "weights.onnx").read_bytes() == (example_model / "weights.onnx").read_bytes()
    for outside in ("../../zoo.sqlite", "/etc/passwd", "missing.txt", "."):
        with pytest.raises(ZooNotFound):
            zoo.file_path("m", "1", outside)
    with pytest.raises(ZooNotFound):
        zoo.file_path("m", "9", "rdf.yaml")
    zoo.count_download("m", "1")
    zoo.count_download("m", "1")
    assert zoo.version("m", "1", published_only=False).downloads == 2
    with pytest.raises(ZooNotFound):
        zoo.count_download("m", "9")


def test_jobs_requeue_and_retest(zoo: Zoo, example_model: Path) -> None:
    tokens = _tokens(zoo)
    zoo.publish_upload(staged_example(zoo, example_model, small=True), token=tokens["uploader"], name="m")
    job = zoo.claim_job("dead-worker")
    assert job is not None and job.status == "running" and job.claimed_by == "dead-worker"
    assert zoo.claim_job("other") is None
    assert zoo.requeue_stale_jobs(3600) == 0
    assert zoo.requeue_stale_jobs(0) == 1
    assert zoo.version("m", "1", published_only=False).test_status == "pending"
    again = zoo.claim_job("live-worker")
    assert again is not None and again.id == job.id
    zoo.submit_for_review("m", "1", token=tokens["uploader"])
    zoo.finish_job(again.id, ok=True, result={"formats": {}})
    zoo.publish("m", "1", token=tokens["reviewer"])
    (retest,) = zoo.retest_all()
    assert zoo.job(retest).kind == "retest"
    claimed = zoo.claim_job("w", ("retest",))
    assert claimed is not None and claimed.id == retest
    zoo.finish_job(retest, ok=False, result={"formats": {"onnx": {"status": "failed"}}})
    version = zoo.latest_published("m")
    assert version.retest_status == "failed" and version.retested_at is not None and version.test_status == "passed"
    try_job = zoo.enqueue("try", version_id=version.id, payload={"image": "x.png"})
    assert zoo.job(try_job).payload == {"image": "x.png"}
    with pytest.raises(ZooError, match="unknown job kind"):
        zoo.enqueue("mine-bitcoin", version_id=None, payload={})
    with pytest.raises(ZooNotFound):
        zoo.job(10_000)


def test_concurrent_claims_never_share_a_job(zoo: Zoo) -> None:
    ids = {zoo.enqueue("try", version_id=None, payload={"n": n}) for n in range(60)}
    claimed: list[list[int]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def work(slot: int) -> None:
        start.wait()
        while (job := zoo.claim_job(f"worker-{slot}")) is not None:
            claimed[slot].append(job.id)

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [job_id for jobs in claimed for job_id in jobs]
    assert sorted(every) == sorted(ids)  # each job once, none lost
    assert sum(1 for jobs in claimed if jobs) >= 2  # the threads did run side by side


def test_concurrent_downloads_and_searches(zoo: Zoo, example_model: Path) -> None:
    """Many threads counting downloads while others search: no lost count, no 'database is locked'."""
    from microzoo.zoo.records import SearchQuery

    tokens = _tokens(zoo)
    zoo.publish_upload(staged_example(zoo, example_model, small=True), token=tokens["uploader"], name="m")
    zoo.submit_for_review("m", "1", token=tokens["uploader"])
    _pass_tests(zoo, "m", "1")
    zoo.publish("m", "1", token=tokens["reviewer"])
    errors: list[BaseException] = []
    start = threading.Barrier(12)

    def download() -> None:
        start.wait()
        try:
            for _ in range(25):
                zoo.count_download("m", "1")
        except BaseException as error:  # reported below
            errors.append(error)

    def search() -> None:
        start.wait()
        try:
            for _ in range(25):
                assert zoo.search(SearchQuery(text="nuclei")).total == 1
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=download) for _ in range(8)] + [
        threading.Thread(target=search) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert zoo.latest_published("m").downloads == 200
