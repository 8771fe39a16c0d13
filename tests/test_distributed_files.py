"""Prediction on a Dask cluster (loopback only) gives the local run's results, resumes, and survives a dead worker.

Both sides run each forward on one thread: torch's CPU results change in the last bit with the
thread count and are identical for the same count.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from _dask import WorkerKiller, loopback_cluster  # noqa: F401  (the module-scoped fixture `cluster`)
from distributed import Client

import microzoo
from microzoo.errors import ClusterError, ImageError, OutputError
from microzoo.runtime import distributed
from microzoo.runtime.batch import predict_files

N_FILES = 6


@pytest.fixture(scope="module")
def model(example_model: Path) -> microzoo.runtime.Model:
    return microzoo.load_model(example_model, weights="torchscript", threads=1)


@pytest.fixture(scope="module")
def images(shared_data: Path) -> list[Path]:
    return sorted((shared_data / "dsb2018" / "test" / "images").glob("*.png"))[:N_FILES]


@pytest.fixture(scope="module")
def local_outputs(model: microzoo.runtime.Model, images: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files predicted in this process, one by one (the reference)."""
    out = tmp_path_factory.mktemp("local")
    predict_files(model, images, out)
    return out


def _same_outputs(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.glob("*.tif"))
    assert names == sorted(p.name for p in b.glob("*.tif")) and len(names) > 0
    for name in names:
        expected, got = tifffile.imread(a / name), tifffile.imread(b / name)
        assert got.dtype == expected.dtype and np.array_equal(got, expected), name


def _address(client: Client) -> str:
    return client.scheduler.address


def test_files_over_two_workers_equal_the_local_run_and_each_worker_opens_the_model_once(
    cluster: Client, model: microzoo.runtime.Model, images: list[Path], local_outputs: Path, tmp_path: Path
) -> None:
    seen: list[tuple[int, int, str]] = []
    results = predict_files(model, images, tmp_path, scheduler=_address(cluster), progress=lambda *a: seen.append(a))
    _same_outputs(local_outputs, tmp_path)
    assert [r.input for r in results] == images  # in input order, whatever order they completed in
    assert all(r.prediction.notices and not r.prediction.outputs for r in results)  # no arrays sent back
    assert seen[0][:2] == (0, N_FILES) and [s[0] for s in seen[1:]] == list(range(1, N_FILES + 1))
    loads = cluster.run(distributed.model_loads)
    opened = [count for per_worker in loads.values() for count in per_worker.values()]
    assert len(loads) == 2 and all(count == 1 for count in opened) and 1 <= len(opened) <= 2
    assert (tmp_path / ".microzoo-job.json").is_file()


def test_workers_n_runs_on_its_own_local_cluster_with_one_thread_per_forward_and_closes_it(
    example_model: Path, images: list[Path], local_outputs: Path, tmp_path: Path
) -> None:
    import psutil

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    default_threads = microzoo.load_model(example_model, weights="torchscript")
    predict_files(default_threads, images[:2], tmp_path, workers=2)
    record = json.loads((tmp_path / ".microzoo-job.json").read_text())
    assert record["model"]["threads"] == 1  # N workers use N cores
    for name in [p.name for p in tmp_path.glob("*.tif")]:
        assert np.array_equal(tifffile.imread(tmp_path / name), tifffile.imread(local_outputs / name))
    assert len(list(tmp_path.glob("*.tif"))) == 2
    left = {p.pid for p in psutil.Process().children(recursive=True) if p.is_running()} - before
    assert not left  # the cluster's processes are gone


def test_a_rerun_predicts_only_the_missing_outputs(
    cluster: Client, model: microzoo.runtime.Model, images: list[Path], local_outputs: Path, tmp_path: Path
) -> None:
    predict_files(model, images, tmp_path, scheduler=_address(cluster))
    outputs = sorted(tmp_path.glob("*.tif"))
    removed = [outputs[1], outputs[4]]
    for path in removed:
        path.unlink()
    kept = {p: p.stat().st_mtime_ns for p in outputs if p not in removed}
    scheduler_file = tmp_path.parent / f"{tmp_path.name}-scheduler.json"  # as `dask scheduler --scheduler-file` writes
    scheduler_file.write_text(json.dumps({"type": "Scheduler", "address": _address(cluster)}))
    results = predict_files(model, images, tmp_path, scheduler=str(scheduler_file))
    assert sorted(p for r in results for p in r.outputs.values()) == removed
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # the others were not written again
    _same_outputs(local_outputs, tmp_path)
    assert predict_files(model, images, tmp_path, scheduler=_address(cluster)) == []  # all done
    again = predict_files(model, images, tmp_path, overwrite=True, scheduler=_address(cluster))
    assert len(again) == len(images)  # --overwrite starts again


def test_another_setting_on_the_outputs_is_refused_unless_overwrite(
    cluster: Client, example_model: Path, model: microzoo.runtime.Model, images: list[Path], tmp_path: Path
) -> None:
    predict_files(model, images[:2], tmp_path, scheduler=_address(cluster))
    default_threads = microzoo.load_model(example_model, weights="torchscript")
    assert predict_files(default_threads, images[:2], tmp_path, scheduler=_address(cluster)) == []  # its own count
    two_threads = microzoo.load_model(example_model, weights="torchscript", threads=2)
    with pytest.raises(OutputError, match=r"another job \(model\.threads: 1 -> 2\).*--overwrite"):
        predict_files(two_threads, images[:2], tmp_path, scheduler=_address(cluster))
    with pytest.raises(OutputError, match=r"settings\.memory_budget: None -> 1000000000"):
        predict_files(model, images[:2], tmp_path, memory_budget=10**9, scheduler=_address(cluster))
    results = predict_files(
        model, images[:2], tmp_path, memory_budget=10**9, overwrite=True, scheduler=_address(cluster)
    )
    assert len(results) == 2
    assert '"memory_budget": 1000000000' in (tmp_path / ".microzoo-job.json").read_text()
    # outputs there without a record are refused, as a local run refuses them
    (tmp_path / ".microzoo-job.json").unlink()
    with pytest.raises(OutputError, match="exists already"):
        predict_files(model, images[:2], tmp_path, scheduler=_address(cluster))


def test_a_file_the_model_cannot_read_fails_naming_it(
    cluster: Client, model: microzoo.runtime.Model, images: list[Path], tmp_path: Path
) -> None:
    broken = tmp_path / "in" / "broken.png"
    broken.parent.mkdir()
    broken.write_bytes(b"not a png")
    with pytest.raises(ImageError, match="broken.png"):
        predict_files(model, [images[0], broken], tmp_path / "out", scheduler=_address(cluster))


def test_an_unreachable_scheduler_is_a_cluster_error(
    model: microzoo.runtime.Model, images: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    monkeypatch.setattr(distributed, "CONNECT_TIMEOUT", "1s")
    with pytest.raises(ClusterError, match=rf"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"):
        predict_files(model, images[:1], tmp_path, scheduler=f"tcp://127.0.0.1:{port}")


def test_the_trust_note_is_computed_on_the_workers(
    cluster: Client, example_model: Path, shared_data: Path, tmp_path: Path
) -> None:
    from _trust import fingerprinted_copy

    from microzoo.trust.note import predict_files_with_note

    package = fingerprinted_copy(example_model, shared_data, tmp_path / "model", n_images=10)
    fingerprinted = microzoo.load_model(package, weights="torchscript", threads=1)
    inputs = [shared_data / "w2s" / "test" / "noisy" / "081.tif", shared_data / "dsb2018" / "test" / "images"]
    inputs = [inputs[0], *sorted(inputs[1].glob("*.png"))[:2]]
    local = predict_files_with_note(fingerprinted, inputs, tmp_path / "local")
    remote = predict_files_with_note(fingerprinted, inputs, tmp_path / "dask", scheduler=_address(cluster))
    assert remote.trust == local.trust and local.trust.checked and local.trust.unlike


def test_a_killed_worker_loses_no_file(
    cluster: Client, model: microzoo.runtime.Model, images: list[Path], local_outputs: Path, tmp_path: Path
) -> None:
    killer = WorkerKiller(cluster)
    predict_files(model, images, tmp_path, scheduler=_address(cluster), progress=killer)
    killer.check_replaced()  # a worker died while it was predicting a file, and was replaced
    _same_outputs(local_outputs, tmp_path)  # that file was predicted again elsewhere: nothing lost


def test_neither_or_both_of_workers_and_scheduler_is_refused() -> None:
    from microzoo.errors import ConfigError

    with pytest.raises(ConfigError, match="either a number of workers"), distributed.dask_client():
        pass
    with pytest.raises(ConfigError, match="positive whole number"), distributed.dask_client(workers=0):
        pass
