"""The zoo's worker: the sandbox's limits really hit, test runs and "try it" in the sandbox, and
jobs claimed from the index, run and recorded (SQLite and PostgreSQL), requeued when a worker dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _package_edits import with_altered_test_output
from _zoo_db import staged_example

from microzoo.zoo.sandbox import Limits, run_limited
from microzoo.zoo.service import Zoo
from microzoo.zoo.worker import run_worker

PY = sys.executable
FORMATS = ["torchscript", "onnx"]


# --- the sandbox --------------------------------------------------------------------------


def test_memory_limit_is_hit_and_reported() -> None:
    ran = run_limited([PY, "-c", "x = bytearray(3 << 30); print('allocated')"], seconds=30, memory_bytes=1 << 30)
    assert ran.limit == "memory" and ran.returncode != 0 and not ran.ok
    assert "MemoryError" in ran.log and "allocated" not in ran.log


def test_wall_time_limit_kills_the_process_group() -> None:
    # the child starts a grandchild that would outlive it; both must be gone after the limit
    code = (
        "import subprocess, sys, time; g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "print('grandchild', g.pid, flush=True); time.sleep(60)"
    )
    start = time.monotonic()
    ran = run_limited([PY, "-c", code], seconds=2)
    assert ran.limit == "time" and ran.returncode == -signal.SIGKILL
    assert 2 <= time.monotonic() - start < 15
    assert "stopped at the sandbox's time limit" in ran.describe()
    grandchild = Path("/proc") / ran.log.split("grandchild ")[1].split()[0]
    deadline = time.monotonic() + 5
    while grandchild.exists() and "State:\tZ" not in _status(grandchild):
        assert time.monotonic() < deadline, "the grandchild outlived the time limit"
        time.sleep(0.05)


def _status(proc: Path) -> str:
    try:
        return (proc / "status").read_text()
    except OSError:
        return "State:\tZ (gone)"


def test_cpu_time_limit() -> None:
    ran = run_limited([PY, "-c", "while True: pass"], limits=Limits(seconds=30, cpu_seconds=1))
    assert ran.limit == "cpu time" and ran.seconds < 20


def test_file_size_limit_is_hit_and_reported(tmp_path: Path) -> None:
    ran = run_limited([PY, "-c", "open('big', 'wb').write(b'x' * (2 << 20))"], cwd=tmp_path, file_bytes=1 << 20)
    assert ran.limit == "file size" and "File too large" in ran.log
    assert (tmp_path / "big").stat().st_size <= 1 << 20


def test_minimal_environment_and_temporary_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICROZOO_ZOO_TOKEN", "secret-token")
    monkeypatch.setenv("MICROZOO_DB", "postgresql://user:password@db/zoo")
    code = "import json, os; print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd()}))"
    ran = run_limited([PY, "-c", code], seconds=30, env={"EXTRA": "given"})
    seen = json.loads(ran.log)
    assert "MICROZOO_ZOO_TOKEN" not in seen["env"] and "MICROZOO_DB" not in seen["env"]
    assert "secret-token" not in ran.log and seen["env"]["EXTRA"] == "given"
    assert seen["env"]["HOME"] == seen["cwd"] and "microzoo-sandbox-" in seen["cwd"]
    assert not Path(seen["cwd"]).exists()  # the temporary folder is removed afterwards


def test_log_is_bounded() -> None:
    ran = run_limited([PY, "-c", "print('a' * 10_000_000)"], seconds=30)
    assert ran.ok and len(ran.log) < 50_000 and "bytes of output left out" in ran.log


# --- testrun in the sandbox ----------------------------------------------------------------


def _testrun(package: Path, tmp_path: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    ran = run_limited([PY, "-m", "microzoo.zoo.testrun", str(package), "report.json", *extra], cwd=tmp_path)
    assert ran.ok, ran.log
    return json.loads((tmp_path / "report.json").read_text())  # type: ignore[no-any-return]


def test_testrun_example_passes_both_formats(example_model: Path, tmp_path: Path) -> None:
    report = _testrun(example_model, tmp_path)
    assert report["status"] == "passed" and sorted(report["formats"]) == sorted(FORMATS)
    for fmt in FORMATS:
        entry = report["formats"][fmt]
        assert entry["status"] == "passed" and 0 <= entry["max_abs_diff"] < 1e-4
        assert entry["mismatched_per_million"] == 0
    assert "torchscript probability: passed, max |diff|" in report["log"] and report["seconds"] > 0


def test_testrun_altered_test_output_fails_with_the_difference(example_model: Path, tmp_path: Path) -> None:
    package = with_altered_test_output(example_model, tmp_path / "altered", by=0.25)
    report = _testrun(package, tmp_path, "--weights", "onnx")
    assert report["status"] == "failed" and list(report["formats"]) == ["onnx"]
    entry = report["formats"]["onnx"]
    assert entry["status"] == "failed" and entry["max_abs_diff"] == pytest.approx(0.25, abs=1e-3)
    assert "mismatched elements per million" in entry["message"]


def test_try_writes_pictures_and_the_trust_note(example_model: Path, tmp_path: Path) -> None:
    import imageio.v3 as iio

    report = _testrun(example_model, tmp_path, "--try", str(example_model / "test_input.png"), "--out", "shown")
    assert report["status"] == "done" and report["note"]["checked"] is True
    assert "training fingerprint" in report["note"]["headline"]  # weaker evidence: only the test input
    assert report["note"]["images"]["test_input.png"]["verdict"] == "similar"
    assert report["outputs"]["probability"]["shape"] == [512, 512]
    shown = tmp_path / "shown"
    assert json.loads((shown / "note.json").read_text()) == report
    picture, output, overlay = (iio.imread(shown / f"{n}.png") for n in ("input", "output", "overlay"))
    assert picture.shape == output.shape == (512, 512) and overlay.shape == (512, 512, 3)
    assert output.max() == 255 and (output > 128).mean() > 0.05  # nuclei are found
    assert (overlay[..., 0].astype(int) - overlay[..., 1]).max() > 100  # the output shows in magenta


# --- the worker over the index -------------------------------------------------------------


@pytest.fixture
def zoo(zoo_root: Path, db: str):
    zoo = Zoo(zoo_root, db)
    yield zoo
    zoo.close()


@pytest.fixture
def sqlite_zoo(zoo_root: Path):
    """For what does not depend on the database (limits, try): SQLite only."""
    zoo = Zoo(zoo_root)
    yield zoo
    zoo.close()


def _upload(zoo: Zoo, package: Path, name: str) -> int:
    token = zoo.authorise(zoo.create_token("uploader", label=f"up-{name}"), "uploader")
    version = zoo.publish_upload(staged_example(zoo, package, weight_formats=FORMATS), token=token, name=name)
    return version.id


def test_worker_runs_a_queued_test_job(zoo: Zoo, example_model: Path) -> None:
    _upload(zoo, example_model, "nuclei")
    assert zoo.version("nuclei", "1", published_only=False).test_status == "pending"
    assert run_worker(zoo, worker_id="w1", once=True) == 1
    version = zoo.version("nuclei", "1", published_only=False)
    assert version.test_status == "passed"
    report = version.test_report
    assert report is not None and report["sandbox"]["limit"] is None and report["sandbox"]["returncode"] == 0
    assert {fmt: report["formats"][fmt]["status"] for fmt in FORMATS} == {"torchscript": "passed", "onnx": "passed"}
    assert run_worker(zoo, worker_id="w1", once=True) == 0  # nothing left


def test_worker_records_failures_and_limits_and_goes_on(sqlite_zoo: Zoo, example_model: Path, tmp_path: Path) -> None:
    zoo = sqlite_zoo
    altered_id = _upload(zoo, with_altered_test_output(example_model, tmp_path / "altered"), "altered")
    example_id = _upload(zoo, example_model, "example")
    assert run_worker(zoo, worker_id="w", once=True) == 2
    altered = zoo.version("altered", "1", published_only=False)
    assert altered.test_status == "failed" and altered.test_report is not None
    assert altered.test_report["formats"]["onnx"]["max_abs_diff"] == pytest.approx(0.5, abs=1e-3)
    assert zoo.version("example", "1", published_only=False).test_status == "passed"
    # re-tests in too little memory: each is recorded as stopped by the limit, and the worker goes on
    retests = [zoo.enqueue("retest", version_id=v, payload={}) for v in (example_id, altered_id)]
    assert run_worker(zoo, worker_id="w", once=True, limits=Limits(memory_bytes=200 << 20)) == 2
    for job in map(zoo.job, retests):
        assert job.status == "failed" and job.result is not None and job.result["sandbox"]["limit"] == "memory"
        assert "memory" in job.error and "ask the zoo's admins" in job.error
    assert zoo.version("example", "1", published_only=False).retest_status == "error"
    assert zoo.version("example", "1", published_only=False).test_status == "passed"  # the first test stays


def test_worker_runs_a_try_job(sqlite_zoo: Zoo, example_model: Path) -> None:
    zoo = sqlite_zoo
    import shutil

    version_id = _upload(zoo, example_model, "nuclei")
    (zoo.root / "try" / "upload-1").mkdir(parents=True)
    shutil.copy(example_model / "test_input.png", zoo.root / "try" / "upload-1" / "cells.png")
    job_id = zoo.enqueue("try", version_id=version_id, payload={"image": "upload-1/cells.png"})
    outside = zoo.enqueue("try", version_id=version_id, payload={"image": "../zoo.sqlite"})
    assert run_worker(zoo, worker_id="w", once=True, kinds=("try",)) == 2
    job = zoo.job(job_id)
    assert job.status == "done" and job.result is not None
    assert job.result["files"]["overlay"] == f"try/job-{job_id}/overlay.png"
    assert (zoo.root / job.result["files"]["overlay"]).is_file()
    assert "training fingerprint" in job.result["note"]["headline"]
    refused = zoo.job(outside)
    assert refused.status == "failed" and "outside" in refused.error


def test_worker_converts_into_a_new_version(sqlite_zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> None:
    from _packages import built_package

    zoo = sqlite_zoo
    package = built_package(tmp_path_factory, "state_dict").parent
    version_id = _upload(zoo, package, "tiny")
    job_id = zoo.enqueue("convert", version_id=version_id, payload={"formats": ["onnx", "torchscript"]})
    assert run_worker(zoo, worker_id="w", once=True, kinds=("convert",)) == 1
    job = zoo.job(job_id)
    assert job.status == "done" and job.result is not None, job.error
    assert (job.result["name"], job.result["version"]) == ("tiny", "2")
    converted = zoo.version("tiny", "2", published_only=False)
    assert sorted(converted.summary["weight_formats"]) == ["onnx", "pytorch_state_dict", "torchscript"]
    assert converted.uploaded_by == zoo.version("tiny", "1", published_only=False).uploaded_by
    assert run_worker(zoo, worker_id="w", once=True) == 2  # both versions' tests were queued
    report = zoo.version("tiny", "2", published_only=False).test_report
    assert report is not None and {f: e["status"] for f, e in report["formats"].items()} == {
        "onnx": "passed", "torchscript": "passed", "pytorch_state_dict": "passed",
    }  # fmt: skip
    again = zoo.enqueue("convert", version_id=converted.id, payload={"formats": ["onnx"]})
    assert run_worker(zoo, worker_id="w", once=True, kinds=("convert",)) == 1
    refused = zoo.job(again)
    assert refused.status == "failed" and "has onnx weights already" in refused.error


def _sandbox_children(marker: str, *, started: bool = False) -> list[int]:
    """Processes whose command line names ``marker`` (the sandboxed test runs of one test); with
    ``started``, only those past the sandbox's launcher (which names the limits it sets)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and not (started and "RLIMIT_AS" in cmdline):
                found.append(int(entry.name))
    return found


def test_a_killed_workers_job_is_requeued_and_run_again(zoo: Zoo, example_model: Path, db: str) -> None:
    version_id = _upload(zoo, example_model, "nuclei")
    code = (
        "import sys; from pathlib import Path; from microzoo.zoo.service import Zoo; "
        "from microzoo.zoo.worker import run_worker; "
        "run_worker(Zoo(Path(sys.argv[1]), sys.argv[2]), worker_id='doomed', once=True)"
    )
    folder = str(zoo.version_folder("nuclei", "1"))
    worker = subprocess.Popen([PY, "-c", code, str(zoo.root), db], env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while not _sandbox_children(folder, started=True):  # the test run has started in the sandbox
            assert time.monotonic() < deadline and worker.poll() is None, "the worker never started the test run"
            time.sleep(0.05)
        assert zoo.version("nuclei", "1", published_only=False).test_status == "running"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    deadline = time.monotonic() + 1  # far less than the test run takes: it is killed, it does not finish
    while _sandbox_children(folder):  # the sandboxed run dies with its worker
        assert time.monotonic() < deadline, "the sandboxed test run outlived its worker"
        time.sleep(0.05)
    job = zoo.job(1)  # the only job of a new database
    assert job.version_id == version_id and job.status == "running" and job.claimed_by == "doomed"
    assert zoo.requeue_stale_jobs(3600) == 0  # a live worker's job is left alone
    assert zoo.requeue_stale_jobs(0) == 1
    assert zoo.version("nuclei", "1", published_only=False).test_status == "pending"
    assert run_worker(zoo, worker_id="alive", once=True) == 1
    assert zoo.job(job.id).claimed_by == "alive" and zoo.job(job.id).status == "done"
    assert zoo.version("nuclei", "1", published_only=False).test_status == "passed"
