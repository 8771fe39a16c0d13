"""Streaming prediction: images larger than memory, tile by tile into OME-Zarr, resumable.

The second path beside :meth:`microzoo.runtime.predict.Model.predict_image`, over the same
tile plan, ops and engines::

    input (read lazily: Zarr, OME-Zarr, TIFF by tile) --ModelView--> model axes
      --statistics pass (whole image, runtime/stats.py) --> bound preprocessing
      --tile plan (last_keeps_inner=False: one tile per output chunk) --> fixed batches
      --per batch: read tiles with halo -> fill non-finite -> preprocess -> forward
        -> postprocess -> crop -> write chunks -> marker (runtime/stream_job.py)
      --pyramid --> target.ome.zarr (or a TIFF when the result fits in memory)

:func:`prepare_stream` creates the job (or resumes the one a killed run left);
:func:`predict_stream` runs it here with reading, the forward and writing overlapped (a reader
thread prefetching the next batch, a writer thread; queues of 2). Memory is a few batches
and chunks: it does not grow with the image. The Dask path (runtime/distributed.py) runs the
same batches elsewhere.

What is exact: every output pixel is computed from the same tile input as an uninterrupted
run; a resumed or repeated run writes identical bytes for the same ``threads`` (torch CPU
results differ by about 1e-6 between thread counts, so the job records them). Compared with
the in-memory path the tiles' last positions differ (within the spec's tolerance).
Postprocessing that needs statistics of the whole raw output is refused (predict in memory).
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import queue
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.errors import OutputError, ProcessingError
from microzoo.progress import ProgressCallback
from microzoo.runtime import resources
from microzoo.runtime.stream_job import JOB_FORMAT, StreamJob, job_folder, write_json
from microzoo.runtime.stream_view import ModelView

__all__ = ["StreamResult", "open_view", "predict_stream", "prepare_stream", "rate_text"]


@dataclasses.dataclass(frozen=True)
class StreamResult:
    """What :func:`predict_stream` did."""

    outputs: dict[str, Path]
    n_tiles: int
    n_batches: int
    resumed: int  # batches found done when it started
    seconds: float
    notices: tuple[str, ...] = ()


# --- the input ----------------------------------------------------------------------------


def open_image(path: Path, *, axes: str | None, level: int) -> Any:
    """The image at ``path`` read lazily (only the regions asked for are read)."""
    from microzoo.io.read import read_image

    return read_image(path, axes=axes, level=level, lazy=True)


def open_view(descr: Any, path: Path, *, axes: str | None, level: int, channel: Sequence[int] | None) -> ModelView:
    """The image at ``path`` as the model's (only) input tensor, read lazily."""
    image = open_image(path, axes=axes, level=level)
    return _view_of(descr, image, channel)


def _view_of(descr: Any, image: Any, channel: Sequence[int] | None) -> ModelView:
    tensor = descr.inputs[0]
    channels = next((len(a.channel_names) for a in tensor.axes if str(a.type) == "channel"), None)
    return ModelView(image.data, image.axes, tuple(str(a.id) for a in tensor.axes), channels=channels, channel=channel)


def plan_stream(
    geometry: Any,
    input_id: str,
    shape: Sequence[int],
    axes: Sequence[str],
    *,
    tile: Mapping[str, int] | None,
    memory_budget: int | None,
    batch_size: int | None,
) -> Any:
    """The streaming tile plan: kept regions on the chunk grid, batches fixed by the plan."""
    from microzoo.runtime.tiling import plan_tiles

    return plan_tiles(
        geometry,
        {input_id: dict(zip(axes, (int(n) for n in shape), strict=True))},
        tile=tile,
        memory_budget=memory_budget,
        batch_size=batch_size,
        last_keeps_inner=False,
    )


# --- statistics and pipelines ---------------------------------------------------------------

_PIPELINES = "pipelines.pkl"  # TODO(H2): statistics.npz from runtime/stats.py replaces this


def compute_statistics(
    descr: Any, view: ModelView, plan: Any, folder: Path, *, progress: ProgressCallback | None = None
) -> None:
    """Bind the ops from the whole input and save what a batch needs in the job folder."""
    from microzoo.runtime.ops import bind_ops

    _refuse_output_statistics(descr)
    axes = view.model_axes
    tid = str(descr.inputs[0].id)
    if progress:
        progress(0, 1, "statistics of the whole image")
    whole = view[(slice(None),) * view.ndim]
    pre = bind_ops(descr.inputs[0].preprocessing, whole, axes, sample={tid: (whole, axes)})
    median = None
    if whole.dtype.kind in "fc" and not np.isfinite(whole).all():
        median = _channel_median(whole, axes)
    post = {}
    for t in descr.outputs:
        oid = str(t.id)
        out_axes = tuple(str(a.id) for a in t.axes)
        shape = tuple(plan.output_shapes[oid][a] for a in out_axes)
        post[oid] = bind_ops(t.postprocessing, np.broadcast_to(np.zeros((), np.float32), shape), out_axes)
    with open(folder / _PIPELINES, "wb") as f:
        pickle.dump((pre, median, post), f)
    if progress:
        progress(1, 1, "statistics of the whole image")


def _channel_median(whole: np.ndarray, axes: Sequence[str]) -> np.ndarray:
    others = tuple(i for i, a in enumerate(axes) if a != "channel")
    values = np.where(np.isfinite(whole), whole, np.nan)
    return np.nan_to_num(np.nanmedian(values, axis=others, keepdims=True), nan=0.0).astype(whole.dtype)


def bind_pipelines(
    descr: Any, view: ModelView, plan: Any, folder: Path
) -> tuple[Any, np.ndarray | None, dict[str, Any]]:
    """The bound preprocessing, the channel median for non-finite pixels, and the bound
    postprocessing per output, from what :func:`compute_statistics` saved."""
    with open(folder / _PIPELINES, "rb") as f:
        return pickle.load(f)  # noqa: S301 - written by this job, in the user's own output folder


_WHOLE_OUTPUT_OPS = ("zero_mean_unit_variance", "scale_range", "scale_mean_variance", "clip")


def _refuse_output_statistics(descr: Any) -> None:
    """Postprocessing that needs statistics of the whole raw output cannot stream."""
    for t in descr.outputs:
        for op in t.postprocessing:
            kwargs = getattr(op, "kwargs", None)
            needs = str(op.id) in _WHOLE_OUTPUT_OPS and (
                str(op.id) != "clip"
                or getattr(kwargs, "min_percentile", None) is not None
                or getattr(kwargs, "max_percentile", None) is not None
            )
            if needs:
                raise ProcessingError(
                    f"output {t.id!r}: postprocessing {op.id!r} needs statistics of the whole model output, "
                    "which streaming does not hold; predict in memory (e.g. -o out.tif) instead"
                )


# --- outputs --------------------------------------------------------------------------------


def open_writer(path: Path) -> Any:
    """The OME-Zarr being written at ``path``."""
    from microzoo.io.ome_zarr import OmeZarrWriter

    return OmeZarrWriter.open(path)


def create_writers(job: StreamJob, dtypes: Mapping[str, np.dtype], pixel_size: Any, unit: str | None) -> None:
    from microzoo.io.files import image_stem
    from microzoo.io.ome_zarr import OmeZarrWriter

    for oid, layout in job.layouts.items():
        job.output_path(oid).parent.mkdir(parents=True, exist_ok=True)
        OmeZarrWriter.create(
            job.output_path(oid),
            shape=layout.shape,
            dtype=dtypes[oid],
            axes=layout.axes,
            chunks=layout.chunks,
            pixel_size={a: v for a, v in ((pixel_size or {}).get(oid) or {}).items() if a in layout.axes} or None,
            unit=unit,
            name=image_stem(job.targets[oid]),
        )


def deliver(job: StreamJob, output_id: str) -> Path:
    """Move a finished output to its target (OME-Zarr), or write it there as an image file."""
    from microzoo.io.read import image_format

    source, target = job.output_path(output_id), job.targets[output_id]
    if image_format(target) == "zarr":
        if target.exists():
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
        os.replace(source, target)
        return target
    from microzoo.io.write import write_image

    writer = open_writer(source)
    layout = job.layouts[output_id]
    data = writer.read(tuple(slice(0, n) for n in layout.shape))
    meta = job.record.get("pixel_size", {}).get(output_id) or None
    write_image(target, data, layout.axes, pixel_size=meta, unit=job.record.get("unit"))
    shutil.rmtree(source)
    return target


# --- the job --------------------------------------------------------------------------------


def model_identity(model: Any) -> dict[str, Any]:
    """What a job checks on restart about the model (:func:`microzoo.runtime.file_job.model_identity`;
    the threads are a setting here: left out, a restart takes the recorded count)."""
    from microzoo.runtime.file_job import model_identity as identity

    found = identity(model)
    found.pop("threads", None)
    found["name"] = model.package.name
    return found


def input_identity(path: Path, level: int) -> dict[str, Any]:
    """What a job checks on restart about the input (``io.image_identity``)."""
    from microzoo.io.read import image_identity

    return dict(image_identity(path, level=level))


def _settings(
    model: Any,
    axes: str | None,
    level: int,
    channel: Sequence[int] | None,
    tile: int | Mapping[str, int] | None,
    memory_budget: int | None,
    threads: int | None,
) -> dict[str, Any]:
    return {
        "axes": axes,
        "level": int(level),
        "channel": None if channel is None else [int(c) for c in channel],
        "tile_requested": tile if tile is None or isinstance(tile, int) else dict(tile),
        "memory_budget": memory_budget,
        "threads": threads,
        "weight_format": model.weight_format,
    }


def _differences(record: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """What differs between a job on disk and the one asked for (None asks for nothing)."""
    found = []
    if record["model"] != wanted["model"]:
        found.append(f"model {record['model']['name']} ({record['model']['description']})")
    if record["input"] != wanted["input"]:
        found.append(f"input {record['input'].get('path')}")
    for key, value in wanted["settings"].items():
        if value is not None and record["settings"].get(key) != value:
            found.append(f"{key} {record['settings'].get(key)!r} (now {value!r})")
    if record["targets"] != wanted["targets"]:
        found.append("outputs")
    return found


def prepare_stream(
    model: Any,
    source: str | os.PathLike[str],
    target: str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]],
    *,
    axes: str | None = None,
    level: int = 0,
    channel: int | Sequence[int] | None = None,
    tile: int | Mapping[str, int] | None = None,
    memory_budget: int | None = None,
    threads: int | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> StreamJob:
    """Create the job that streams ``model`` over ``source`` into ``target``, or resume it.

    ``target``: one path (a one-output model) or output id -> path; ``.ome.zarr``/``.zarr``
    (or ``.tif`` when the result fits in memory). An existing job for the same model, input
    and settings is resumed (settings left None take the recorded value, so rerunning the same
    command continues it); another job there is refused unless ``overwrite``.
    """
    source = Path(source)
    targets = _targets(model, target)
    channel = [channel] if isinstance(channel, int) else channel
    folder = job_folder(next(iter(targets.values())))
    wanted = {
        "model": model_identity(model),
        "input": input_identity(source, level),
        "settings": _settings(model, axes, level, channel, tile, memory_budget, threads),
        "targets": {oid: str(p.resolve()) for oid, p in targets.items()},
    }
    if folder.exists() and overwrite:
        shutil.rmtree(folder)
    if folder.exists():
        job = StreamJob.load(folder)
        differ = _differences(job.record, wanted)
        if differ:
            raise OutputError(
                f"{next(iter(targets.values()))} holds an unfinished job for another model/input/settings "
                f"({'; '.join(differ)}): run the same command to continue it, or pass --overwrite to start again"
            )
        return job
    existing = [p for p in targets.values() if p.exists()]
    if existing and not overwrite:
        raise OutputError(
            f"the output {existing[0]} exists already: pass --overwrite to replace it, or choose another output with -o"
        )
    return _create_job(model, source, targets, folder, wanted, tile=tile, progress=progress)


def _targets(model: Any, target: Any) -> dict[str, Path]:
    from microzoo.io.read import image_format

    outputs = [str(t.id) for t in model.descr.outputs]
    if len(model.descr.inputs) != 1:
        raise OutputError(
            f"streaming runs models with one input; this one has {len(model.descr.inputs)}: predict in memory instead"
        )
    if isinstance(target, Mapping):
        targets = {str(k): Path(v) for k, v in target.items()}
    elif len(outputs) == 1:
        targets = {outputs[0]: Path(target)}
    else:
        raise OutputError(f"the model has {len(outputs)} outputs ({', '.join(outputs)}): give a target per output")
    if sorted(targets) != sorted(outputs):
        raise OutputError(f"give one target per output ({', '.join(outputs)}), not for {', '.join(targets)}")
    for p in targets.values():
        if image_format(p) not in ("zarr", "tiff"):
            raise OutputError(
                f"a streamed output is written as .ome.zarr (or .tif when it fits in memory), not {p.name}"
            )
    return targets


def _create_job(
    model: Any,
    source: Path,
    targets: dict[str, Path],
    folder: Path,
    wanted: dict[str, Any],
    *,
    tile: int | Mapping[str, int] | None,
    progress: ProgressCallback | None,
) -> StreamJob:
    from microzoo.io.atomic import atomic_output
    from microzoo.runtime.batch import output_pixel_size
    from microzoo.runtime.predict import _tile_request

    s = wanted["settings"]
    image = open_image(source, axes=s["axes"], level=s["level"])
    view = _view_of(model.descr, image, s["channel"])
    tid = str(model.descr.inputs[0].id)
    shapes = {tid: dict(zip(view.model_axes, view.shape, strict=True))}
    first = plan_stream(
        model.geometry, tid, view.shape, view.model_axes,
        tile=_tile_request(tile, shapes), memory_budget=s["memory_budget"], batch_size=None,
    )  # fmt: skip
    tiled = {a: n for a, n in first.input_tile_shapes[tid].items() if a not in ("batch", "channel")}
    record = {
        "format": JOB_FORMAT,
        "microzoo": _version(),
        **wanted,
        "settings": {
            **s,
            "axes": image.axes,
            "tile": tiled,
            "batch_size": first.batch_size,
            "threads": resources.thread_count(s["threads"]),
        },
        "plan": {"n_tiles": first.n_tiles, "input_shape": list(view.shape)},
        "pixel_size": {oid: output_pixel_size(model, oid, image.pixel_size) for oid in targets},
        "unit": image.unit,
    }
    with atomic_output(folder) as tmp:
        tmp.mkdir()
        (tmp / "done").mkdir()
        (tmp / "objects").mkdir()
        write_json(tmp / "job.json", record)
        job = StreamJob(tmp, record, package=model.package)
        job._view = view
        if job.plan.n_tiles != first.n_tiles:  # the recorded settings must give the same plan
            raise AssertionError("the streaming plan is not reproducible from its settings")
        compute_statistics(model.descr, view, job.plan, tmp, progress=progress)
        create_writers(job, _output_dtypes(job), record["pixel_size"], image.unit)
    return StreamJob.load(folder)


def _output_dtypes(job: StreamJob) -> dict[str, np.dtype]:
    """Each output's dtype: its postprocessing applied to a float32 block of one tile."""
    _, post = job._pipelines()
    tile = job.plan.tiles[0]
    dtypes = {}
    for oid in job.output_ids:
        where = tile.outputs[oid][1]
        axes = job.output_axes[oid]
        shape = job.plan.output_shapes[oid]
        bounds = tuple(
            slice(s.start or 0, shape[a] if s.stop is None else s.stop) for s, a in zip(where, axes, strict=True)
        )
        block = np.zeros(tuple(b.stop - b.start for b in bounds), np.float32)
        dtypes[oid] = post[oid](block, where=bounds).dtype
    return dtypes


def _version() -> str:
    from microzoo import __version__

    return __version__


# --- running it here -----------------------------------------------------------------------


def predict_stream(
    model: Any,
    source: str | os.PathLike[str],
    target: str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]],
    *,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> StreamResult:
    """Stream ``model`` over ``source`` into ``target`` on this machine (options: those of
    :func:`prepare_stream`); reading, the forward and writing overlap. A job a killed run left
    is continued."""
    start = time.perf_counter()
    job = prepare_stream(model, source, target, progress=progress, **options)
    model = model.with_threads(job.threads)
    pending = job.pending_batches()
    resumed = job.n_batches - len(pending)
    run_batches(job, model, pending, progress=progress)
    notices = job.notices()
    outputs = job.finish(progress=progress)
    return StreamResult(
        outputs=outputs,
        n_tiles=job.plan.n_tiles,
        n_batches=job.n_batches,
        resumed=resumed,
        seconds=time.perf_counter() - start,
        notices=notices,
    )


def run_batches(job: StreamJob, model: Any, batches: Sequence[int], *, progress: ProgressCallback | None) -> None:
    """Run ``batches`` of ``job`` with a reader thread and a writer thread around the forward."""
    reads: queue.Queue[Any] = queue.Queue(maxsize=2)
    writes: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()
    failures: list[BaseException] = []
    meter = _Meter(job, progress)

    def reader() -> None:
        try:
            for index in batches:
                if stop.is_set():
                    return
                _put(reads, job.read_batch(index), stop)
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            failures.append(error)
            stop.set()
        finally:
            _put(reads, None, stop)

    def writer() -> None:
        try:
            while (item := writes.get()) is not None:
                batch, results = item
                job.write_batch(batch, results)
                meter.done(batch)
        except BaseException as error:  # noqa: BLE001
            failures.append(error)
            stop.set()
            while writes.get() is not None:  # drain so the main thread never blocks
                pass

    threads = [threading.Thread(target=reader, daemon=True), threading.Thread(target=writer, daemon=True)]
    for t in threads:
        t.start()
    try:
        meter.start(len(batches))
        while not stop.is_set() and (batch := reads.get()) is not None:
            writes.put((batch, job.forward(model, batch)))
    except BaseException:
        stop.set()
        raise
    finally:
        writes.put(None)
        stop.set()
        while True:  # unblock the reader
            try:
                reads.get_nowait()
            except queue.Empty:
                break
        for t in threads:
            t.join()
    if failures:
        raise failures[0]


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> None:
    while True:
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            if stop.is_set() and item is not None:
                return


class _Meter:
    """Progress: tiles done, megapixels per second and the time left."""

    def __init__(self, job: StreamJob, progress: ProgressCallback | None) -> None:
        self.job, self.progress = job, progress
        self.total = job.plan.n_tiles
        self.pixels_per_tile = math.prod(
            n for a, n in zip(job.view.model_axes, job.view.shape, strict=True) if a != "channel"
        ) / max(self.total, 1)
        self.lock = threading.Lock()

    def start(self, n_batches: int) -> None:
        self.tiles_done = self.total - sum(len(self.job.batch_tiles(i)) for i in self.job.pending_batches())
        self.t0, self.ran = time.perf_counter(), 0
        self._report()

    def done(self, batch: Any) -> None:
        with self.lock:
            self.tiles_done += len(batch.tiles)
            self.ran += len(batch.tiles)
            self._report()

    def _report(self) -> None:
        if self.progress is None:
            return
        seconds = time.perf_counter() - self.t0
        rate = self.ran * self.pixels_per_tile / seconds / 1e6 if seconds > 0 and self.ran else 0.0
        left = (self.total - self.tiles_done) * self.pixels_per_tile / 1e6 / rate if rate else None
        self.progress(self.tiles_done, self.total, rate_text(self.tiles_done, self.total, rate, left))


def rate_text(done: int, total: int, mp_per_s: float, seconds_left: float | None) -> str:
    """``"tile 120/1225, 3.1 MP/s, ETA 5 min"``."""
    eta = "ETA ?" if seconds_left is None else f"ETA {_duration(seconds_left)}"
    return f"tile {done}/{total}, {mp_per_s:.1f} MP/s, {eta}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
