"""A streamed job killed at any moment continues where it stopped and gives the same bytes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from microzoo.errors import OutputError
from microzoo.io.ome_zarr import OmeZarrWriter
from microzoo.runtime.predict import Model
from microzoo.runtime.stream import predict_stream, prepare_stream
from microzoo.runtime.stream_job import StreamJob, job_folder

SIZE = 1344  # 3 x 3 tiles of the example model (stride 448)


def chunk_files(store: Path) -> dict[str, bytes]:
    """Every file of an OME-Zarr (chunks and metadata) by relative path."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(7)
    blobs = np.zeros((SIZE, SIZE), np.float32)
    for y, x in rng.integers(0, SIZE, (400, 2)):
        blobs[max(0, y - 6) : y + 6, max(0, x - 6) : x + 6] += rng.uniform(500, 3000)
    image = (blobs + rng.normal(300, 40, blobs.shape)).clip(0, 65535).astype(np.uint16)
    path = tmp_path_factory.mktemp("resume") / "in.ome.zarr"
    OmeZarrWriter.create(path, shape=image.shape, dtype=image.dtype, axes="yx", chunks=(256, 256)).write(
        (slice(None), slice(None)), image
    )
    return path


@pytest.fixture(scope="module")
def uninterrupted(example_model: Path, source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("whole") / "out.ome.zarr"
    predict_stream(Model.open(example_model, threads=1), source, out, threads=1)
    return chunk_files(out)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "microzoo.cli", "predict", *args]


def test_killed_mid_run_and_restarted_gives_identical_bytes(
    example_model: Path, source: Path, uninterrupted: dict[str, bytes], tmp_path: Path
) -> None:
    out = tmp_path / "out.ome.zarr"
    command = cli(str(example_model), str(source), "-o", str(out), "--threads", "1")
    done = job_folder(out) / "done"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (done.is_dir() and len(list(done.glob("batch-*.json"))) >= 2):
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "no batch finished within two minutes"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(list(done.glob("batch-*.json")))
    assert 2 <= finished < 9 and not out.exists()

    # another setting on the unfinished job is refused, and says what to do
    refused = subprocess.run(cli(str(example_model), str(source), "-o", str(out), "--threads", "2"),
                             capture_output=True, text=True)  # fmt: skip
    assert refused.returncode == 2
    assert "holds an unfinished job" in refused.stderr and "--threads: 1 -> 2" in refused.stderr
    assert "--overwrite" in refused.stderr

    # the same command continues the job: only the batches left run
    job = StreamJob.load(job_folder(out))
    assert len(job.pending_batches()) == 9 - finished
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    said = " ".join((rerun.stdout + rerun.stderr).split())  # the console wraps long lines
    assert f"continued an unfinished job: {finished} of 9 batches of tiles were done already" in said
    assert not job_folder(out).exists()
    assert chunk_files(out) == uninterrupted


def test_overwrite_starts_a_job_again(example_model: Path, source: Path, tmp_path: Path) -> None:
    model = Model.open(example_model, threads=1)
    out = tmp_path / "out.ome.zarr"
    job = prepare_stream(model, source, out, threads=1)
    job.run_batch(model, 4)
    job.run_batch(model, 4)  # a batch that runs twice is fine
    assert job.pending_batches() == [0, 1, 2, 3, 5, 6, 7, 8]
    with pytest.raises(OutputError, match="unfinished job for another model/input/settings"):
        prepare_stream(model, source, out, tile=512, memory_budget=10**9)
    again = prepare_stream(model, source, out, memory_budget=10**9, overwrite=True)
    assert again.pending_batches() == list(range(9))
    assert again.record["settings"]["memory_budget"] == 10**9


def test_a_finished_output_is_not_overwritten_without_asking(example_model: Path, source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.ome.zarr"
    out.mkdir()
    with pytest.raises(OutputError, match="exists already"):
        prepare_stream(Model.open(example_model), source, out)


def test_killed_after_the_output_was_moved_a_rerun_cleans_up(
    example_model: Path, source: Path, uninterrupted: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between moving the output into place and removing the job folder."""
    import shutil

    from microzoo.runtime.batch import predict_files

    model = Model.open(example_model, threads=1)
    out = tmp_path / "out.ome.zarr"
    job = prepare_stream(model, source, out, threads=1)
    for index in job.pending_batches():
        job.run_batch(model, index)
    remove = shutil.rmtree

    def killed(path: object, *args: object, **kwargs: object) -> None:
        if Path(str(path)) == job.folder:
            raise KeyboardInterrupt
        remove(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        job.finish()
    monkeypatch.setattr(shutil, "rmtree", remove)
    assert out.exists() and job.folder.exists()
    (result,) = predict_files(model, [source], out)  # the same command again: no error, nothing run
    assert result.prediction.n_tiles == 9 and not job.folder.exists()
    assert chunk_files(out) == uninterrupted


@pytest.mark.parametrize("forwards", [1, 2])
@pytest.mark.parametrize(
    ("step", "error"), [("read_batch", OSError), ("forward", KeyboardInterrupt), ("write_batch", OSError)]
)
def test_an_error_in_one_batch_stops_the_run_and_the_rerun_finishes_it(
    step: str, error: type[BaseException], forwards: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading, the forwards and writing run in their own threads: an error in any of them ends
    the run without hanging; the batches written before it count on the rerun."""
    from _packages import build_parameterized

    model = Model.open(build_parameterized(tmp_path / "two_d"), threads=1)
    np.save(tmp_path / "image.npy", np.random.default_rng(11).normal(0, 1, (150, 140)).astype(np.float32))
    options = {"tile": 48, "memory_budget": 2_000_000, "threads": 1}  # one 48x48 tile per batch
    whole, out = tmp_path / "whole" / "out.ome.zarr", tmp_path / "interrupted" / "out.ome.zarr"
    predict_stream(model, tmp_path / "image.npy", whole, **options)
    original, calls = getattr(StreamJob, step), []

    def failing(self: StreamJob, *args: object) -> object:
        calls.append(1)
        if len(calls) == 4:
            raise error("the fourth batch fails")
        return original(self, *args)

    monkeypatch.setattr(StreamJob, step, failing)
    with pytest.raises(error, match="the fourth batch fails"):
        predict_stream(model, tmp_path / "image.npy", out, forwards=forwards, **options)
    monkeypatch.setattr(StreamJob, step, original)
    job = StreamJob.load(job_folder(out))
    pending = job.pending_batches()
    if forwards == 1 or step == "read_batch":  # one reader: batches are read in order
        assert job.n_batches == 25 and pending == list(range(3, 25))
    else:  # two forwards finish in either order; the one running beside the failure is still written
        assert job.n_batches == 25 and 20 <= len(pending) <= 22
    result = predict_stream(model, tmp_path / "image.npy", out, forwards=forwards, **options)
    assert result.resumed == 25 - len(pending)
    assert chunk_files(out) == chunk_files(whole)


def test_two_forwards_at_once_write_the_bytes_of_one(tmp_path: Path) -> None:
    """Which forward thread runs a batch changes nothing: batches are fixed by the plan and each
    forward has the job's threads, so the number of forwards is not part of the job."""
    from _packages import build_parameterized

    model = Model.open(build_parameterized(tmp_path / "two_d"), threads=1)
    np.save(tmp_path / "image.npy", np.random.default_rng(12).normal(0, 1, (150, 140)).astype(np.float32))
    options = {"tile": 48, "memory_budget": 2_000_000, "threads": 1}
    one, two = tmp_path / "one" / "out.ome.zarr", tmp_path / "two" / "out.ome.zarr"
    predict_stream(model, tmp_path / "image.npy", one, forwards=1, **options)
    predict_stream(model, tmp_path / "image.npy", two, forwards=2, **options)
    assert chunk_files(two) == chunk_files(one)
