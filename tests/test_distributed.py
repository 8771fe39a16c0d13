"""A streamed image on a Dask cluster (loopback only) gives the local run's bytes, and a dead worker loses no tile.

Both sides run each forward on one thread: torch's CPU results change in the last bit with the
thread count and are identical for the same count.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from _dask import WorkerKiller, loopback_cluster  # noqa: F401  (the module-scoped fixture `cluster`)
from _mosaic import dsb_mosaic
from distributed import Client

from microzoo.errors import ClusterError
from microzoo.io.ome_zarr import OmeZarrWriter
from microzoo.runtime import distributed
from microzoo.runtime.batch import predict_files
from microzoo.runtime.predict import Model
from microzoo.runtime.stream import predict_stream, prepare_stream

SIZE = 1024


@pytest.fixture(scope="module")
def model(example_model: Path) -> Model:
    return Model.open(example_model, threads=1)


@pytest.fixture(scope="module")
def source(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1024x1024 uint16 OME-Zarr (256-chunks) tiled from DSB2018 test images."""
    mosaic = dsb_mosaic(shared_data, SIZE // 256, SIZE // 256, split="test")
    writer = OmeZarrWriter.create(
        tmp_path_factory.mktemp("source") / "in.ome.zarr", shape=mosaic.shape, dtype=mosaic.dtype, axes="yx",
        chunks=(256, 256), pixel_size={"y": 0.5, "x": 0.5}, unit="micrometer",
    )  # fmt: skip
    writer.write((slice(None), slice(None)), mosaic)
    return writer.path


@pytest.fixture(scope="module")
def local(model: Model, source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image streamed in this process (the reference)."""
    target = tmp_path_factory.mktemp("local") / "out.ome.zarr"
    result = predict_stream(model, source, target, threads=1)
    assert result.n_batches > 2
    return target


def _same_bytes(a: Path, b: Path) -> None:
    """Every file of two OME-Zarr stores (chunks, metadata, pyramid) has the same bytes."""
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert any(f.parts[0] == "0" and not f.name.startswith(".") for f in files)  # chunks of level 0
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_an_image_streamed_on_two_workers_has_the_bytes_of_the_local_run(
    cluster: Client, model: Model, source: Path, local: Path, tmp_path: Path
) -> None:
    calls: list[tuple[int, int, str]] = []
    target = tmp_path / "out.ome.zarr"
    (result,) = predict_files(
        model, [source], target, scheduler=cluster.scheduler.address, progress=lambda *c: calls.append(c)
    )
    _same_bytes(local, target)
    assert not (tmp_path / ".out.ome.zarr.job").exists()  # finished: the job folder is gone
    tiles = [c for c in calls if c[2].startswith("tile ")]  # as the tasks complete
    n = result.prediction.n_tiles
    assert [c[0] for c in tiles] == list(range(n + 1)) and tiles[-1][1] == n and "MP/s" in tiles[-1][2]


def test_a_killed_worker_loses_no_tile_and_each_worker_opens_the_model_once(
    cluster: Client, model: Model, source: Path, local: Path, tmp_path: Path
) -> None:
    target = tmp_path / "out.ome.zarr"
    job = prepare_stream(model, source, target, threads=1)
    killer = WorkerKiller(cluster)
    ran = distributed.run_on_dask(job, scheduler=cluster.scheduler.address, progress=killer)
    assert ran == job.n_batches
    killer.check_replaced()  # a worker died while it ran a batch, and was replaced
    assert job.pending_batches() == []  # its batch ran again on another worker
    job.finish()
    _same_bytes(local, target)
    loads = cluster.run(distributed.model_loads)
    assert all(count == 1 for per_worker in loads.values() for count in per_worker.values())


def test_a_resumed_job_on_dask_runs_only_the_pending_batches(
    cluster: Client, model: Model, source: Path, local: Path, tmp_path: Path
) -> None:
    target = tmp_path / "out.ome.zarr"
    job = prepare_stream(model, source, target, threads=1)
    for index in (0, 2):  # as if a killed run had finished these
        job.run_batch(model, index)
    assert distributed.run_on_dask(job, scheduler=cluster.scheduler.address) == job.n_batches - 2
    assert distributed.run_on_dask(job, scheduler=cluster.scheduler.address) == 0
    job.finish()
    _same_bytes(local, target)


def test_a_task_whose_workers_keep_dying_is_a_cluster_error_naming_it() -> None:
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), distributed.dask_client(workers=1) as client:
        future = client.submit(os._exit, 1, pure=False)
        with pytest.raises(ClusterError, match=r"^batch 7 of the job in JOB: the Dask workers running it died"):
            list(distributed._as_completed(client, {future: 7}, lambda i: f"batch {i} of the job in JOB"))


def test_a_worker_that_cannot_see_the_input_says_so(
    cluster: Client, model: Model, source: Path, tmp_path: Path
) -> None:
    import shutil

    copy = shutil.copytree(source, tmp_path / "in.ome.zarr")
    job = prepare_stream(model, copy, tmp_path / "out.ome.zarr", threads=1)
    assert job.pending_batches()  # the client has read what it needs
    copy.rename(tmp_path / "elsewhere.ome.zarr")  # as if the workers mounted another filesystem
    with pytest.raises(ClusterError, match=rf"the Dask worker on .* cannot see {copy}: every worker must see"):
        distributed.run_on_dask(job, scheduler=cluster.scheduler.address)


def test_instance_labels_stitched_on_dask_have_the_bytes_of_the_local_run(
    cluster: Client, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """Each batch's objects (saved by whichever worker ran it) are painted by the client at the end."""
    from _packages import built_package, instance_test_image

    instances = Model.open(built_package(tmp_path_factory, "instances"), threads=1)
    image = instance_test_image((300, 344), n=55, seed=7)
    source = OmeZarrWriter.create(tmp_path / "in.ome.zarr", shape=image.shape, dtype=image.dtype, axes="yx",
                                  chunks=(128, 128))  # fmt: skip
    source.write((slice(None), slice(None)), image)
    small = {"tile": 96, "threads": 1, "memory_budget": 40_000_000}  # 4 tiles a batch
    predict_stream(instances, source.path, tmp_path / "local" / "out.ome.zarr", **small)
    job = prepare_stream(instances, source.path, tmp_path / "dask" / "out.ome.zarr", **small)
    assert distributed.run_on_dask(job, scheduler=cluster.scheduler.address) >= 8
    job.finish()
    _same_bytes(tmp_path / "local" / "out.ome.zarr", tmp_path / "dask" / "out.ome.zarr")
    assert (tmp_path / "dask" / "out.ome.zarr" / "labels" / "instances" / "0").is_dir()


def test_the_cli_spreads_a_folder_over_workers_and_refuses_other_threads_on_it(
    model: Model, shared_data: Path, tmp_path: Path
) -> None:
    """`microzoo predict MODEL folder/ -o out/ --workers 2` as typed (its workers start from the CLI's process)."""
    import os
    import shutil
    import subprocess
    import sys

    import tifffile

    folder = tmp_path / "images"
    folder.mkdir()
    for path in sorted((shared_data / "dsb2018" / "test" / "images").glob("*.png"))[:3]:
        shutil.copy(path, folder / path.name)
    command = [sys.executable, "-m", "microzoo.cli", "predict", str(model.package.root), str(folder),
               "-o", str(tmp_path / "out"), "--workers", "2"]  # fmt: skip
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "3 image(s), 3 output(s)" in done.stdout
    for path in sorted(folder.iterdir()):  # one thread per forward, as the local run of `model`
        data, axes = _read(path)
        expected = model.predict_image(data, axes=axes).outputs.only
        assert np.array_equal(tifffile.imread(tmp_path / "out" / f"{path.stem}.tif"), expected)
    refused = subprocess.run([*command, "--threads", "2"], capture_output=True, text=True, timeout=300, env=env)
    assert refused.returncode == 2 and "another job (model.threads: 1 -> 2)" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr


def _read(path: Path) -> tuple[np.ndarray, str]:
    from microzoo.io.read import read_image

    image = read_image(path)
    return np.asarray(image.data), image.axes
