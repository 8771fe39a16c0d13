"""Setting up a streamed job: the input read lazily, the tile plan, the statistics pass, the
output writers, and the job folder created, resumed or refused (:func:`prepare_stream`).

:mod:`microzoo.runtime.stream` runs the job; :mod:`microzoo.runtime.stream_job` is the job folder.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from microzoo.errors import OutputError, ProcessingError
from microzoo.io.axes import ids_to_letters, is_colour_model
from microzoo.io.files import image_stem
from microzoo.progress import ProgressCallback
from microzoo.runtime import resources
from microzoo.runtime.stream_job import JOB_FORMAT, STATISTICS, StreamJob, job_folder, load_record, write_json
from microzoo.runtime.stream_view import ModelView

__all__ = ["open_view", "plan_stream", "prepare_stream", "statistics_pass"]


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
    names = next((list(a.channel_names) for a in tensor.axes if str(a.type) == "channel"), None)
    return ModelView(image.data, image.axes, tuple(str(a.id) for a in tensor.axes), channels=None if names is None
                     else len(names), channel=channel, colour=is_colour_model(names))  # fmt: skip


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


def statistics_pass(
    descr: Any, view: ModelView, folder: Path, *, progress: ProgressCallback | None = None
) -> dict[str, np.ndarray]:
    """Stream the statistics the ops need (runtime/stats.py) over the whole input; save them.

    Also the channel median for non-finite pixels and their counts (float inputs). Statistics of
    the raw model output (postprocessing such as ``scale_range`` on the output) are refused:
    streaming never holds the whole output.
    """
    from microzoo.runtime.non_finite import fill_request
    from microzoo.runtime.ops import statistics_needed
    from microzoo.runtime.stats import StatRequest, save_statistics, stream_sample_statistics

    tid, axes = str(descr.inputs[0].id), view.model_axes
    requests = statistics_needed(descr.inputs[0].preprocessing, axes, tensor_id=tid)
    for t in descr.outputs:
        needed = statistics_needed(t.postprocessing, tuple(str(a.id) for a in t.axes), tensor_id=str(t.id))
        outside = [r for r in needed if r.tensor_id != tid]
        if outside:
            raise ProcessingError(
                f"output {t.id!r}: its postprocessing needs statistics of the whole model output "
                f"({outside[0].kind} of {outside[0].tensor_id!r}), which streaming does not hold; predict "
                "this image in memory (e.g. -o out.tif) instead"
            )
        requests += needed
    if view.dtype.kind in "fc":
        requests += [fill_request(axes, tid), StatRequest(tid, "nan_count"), StatRequest(tid, "inf_count")]
    statistics = stream_sample_statistics(
        {tid: (view, axes)}, list(dict.fromkeys(requests)), blocks={tid: statistics_block(view)}, progress=progress
    )
    save_statistics(folder / STATISTICS, statistics)
    return statistics


def statistics_block(view: ModelView) -> tuple[int, ...]:
    """The block the statistics pass reads: one sample, every channel, about 1024 pixels along
    y and x (a multiple of the storage chunks), whole along other axes up to 64."""
    from microzoo.io.read import _storage_chunks

    chunks = dict(zip(view.axes, _storage_chunks(view.data) or view.data.shape, strict=True))

    def multiple(letter: str, n: int, about: int) -> int:
        chunk = max(1, int(chunks.get(letter, n)))
        return min(n, max(chunk, about // chunk * chunk))

    block = []
    for axis_id, n in zip(view.model_axes, view.shape, strict=True):
        letter = ids_to_letters([axis_id])
        block.append(
            1 if letter == "b" else multiple(letter, n, 1024 if letter in "yx" else 64) if letter != "c" else n
        )
    return tuple(block)


def bind_pipelines(
    descr: Any, view: ModelView, plan: Any, folder: Path
) -> tuple[Any, np.ndarray | None, dict[str, Any]]:
    """The bound preprocessing, the fill for non-finite pixels (or None) and the bound
    postprocessing per output, from the job's saved statistics (nothing is computed here)."""
    from microzoo.runtime.non_finite import fill_request
    from microzoo.runtime.ops import bind_ops
    from microzoo.runtime.stats import load_statistics

    statistics = load_statistics(folder / STATISTICS)
    tid, axes = str(descr.inputs[0].id), view.model_axes
    lazy: Any = view  # bind_ops uses only the shape when given statistics
    sample = {tid: (lazy, axes)}
    pre = bind_ops(descr.inputs[0].preprocessing, lazy, axes, sample=sample, statistics=statistics, tensor_id=tid)
    post = {}
    for t in descr.outputs:
        oid, out_axes = str(t.id), tuple(str(a.id) for a in t.axes)
        shape = tuple(plan.output_shapes[oid][a] for a in out_axes)
        post[oid] = bind_ops(
            t.postprocessing, cast(Any, shape), out_axes, sample=sample, statistics=statistics, tensor_id=oid
        )
    fill = statistics.get(fill_request(axes, tid).key)
    return pre, fill, post


# --- outputs --------------------------------------------------------------------------------


def open_writer(path: Path) -> Any:
    """The OME-Zarr being written at ``path``."""
    from microzoo.io.ome_zarr import OmeZarrWriter

    return OmeZarrWriter.open(path)


def create_writers(job: StreamJob, dtypes: Mapping[str, np.dtype], pixel_size: Any, unit: str | None) -> None:
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


#: the option a user gives for each recorded setting, as a refusal names it
_OPTION = {
    "axes": "--axes", "level": "--level", "channel": "--channel", "tile_requested": "--tile",
    "memory_budget": "--memory-budget", "threads": "--threads", "weight_format": "--weights",
}  # fmt: skip


def _differences(record: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """What differs between a job on disk and the one asked for (None asks for nothing)."""
    from microzoo.runtime.file_job import differences

    found = differences(record["model"], wanted["model"], "model.") + differences(
        record["input"], wanted["input"], "input."
    )
    for key, value in wanted["settings"].items():
        if value is not None and record["settings"].get(key) != value:
            before = record["settings"].get(key)
            found.append(f"{_OPTION.get(key, key)}: {'not given' if before is None else before} -> {value}")
    found += differences(record["targets"], wanted["targets"], "output.")
    return found


def prepare_stream(
    model: Any,
    source: str | os.PathLike[str] | Any,
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

    ``source``: an image file, or an array read region by region (a Dask array, a
    ``zarr.Array``, a lazy TIFF: :mod:`microzoo.runtime.stream_source`; ``axes`` required,
    ``level`` ignored). ``target``: one path (a one-output model) or output id -> path;
    ``.ome.zarr``/``.zarr`` (or ``.tif`` when the result fits in memory). An existing job for
    the same model, input and settings is resumed (settings left None take the recorded value,
    so rerunning the same command continues it); another job there is refused unless ``overwrite``.
    """
    from microzoo.runtime.stream_source import array_identity, array_image, is_array_source

    image = array_image(source, axes) if is_array_source(source) else None
    targets = _targets(model, target)
    channel = [channel] if isinstance(channel, int) else channel
    folder = job_folder(next(iter(targets.values())))
    wanted = {
        "model": model_identity(model),
        "input": input_identity(Path(source), level) if image is None else array_identity(source),
        "settings": _settings(model, axes, level, channel, tile, memory_budget, threads),
        "targets": {oid: str(p.resolve()) for oid, p in targets.items()},
    }
    if folder.exists() and overwrite:
        shutil.rmtree(folder)
    if folder.exists():
        record = load_record(folder)
        differ = _differences(record, wanted)
        if differ:
            raise OutputError(
                f"{next(iter(targets.values()))} holds an unfinished job for another model/input/settings "
                f"({'; '.join(differ[:4])}{'; ...' if len(differ) > 4 else ''}): run the same command to "
                "continue it, or pass --overwrite to start again"
            )
        return _with_input(StreamJob(folder, record, package=model.package), image)
    existing = [p for p in targets.values() if p.exists()]
    if existing and not overwrite:
        raise OutputError(
            f"the output {existing[0]} exists already: pass --overwrite to replace it, or choose another output with -o"
        )
    job = _create_job(model, Path(source) if image is None else image, targets, folder, wanted, tile=tile,
                      progress=progress)  # fmt: skip
    return _with_input(job, image)


def _with_input(job: StreamJob, image: Any) -> StreamJob:
    """``job`` reading ``image`` (an array source: the job folder cannot reopen it), or as it is."""
    if image is not None:
        job._view = _view_of(job.descr, image, job.record["settings"]["channel"])
    return job


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
    source: Any,
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
    image = open_image(source, axes=s["axes"], level=s["level"]) if isinstance(source, Path) else source
    view = _view_of(model.descr, image, s["channel"])
    tid = str(model.descr.inputs[0].id)
    shapes = {tid: dict(zip(view.model_axes, view.shape, strict=True))}
    first = plan_stream(
        model.geometry, tid, view.shape, view.model_axes,
        tile=_tile_request(tile, shapes), memory_budget=s["memory_budget"], batch_size=None,
    )  # fmt: skip
    _check_in_memory_targets(targets, first)
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
            "threads": resources.forward_split(s["threads"], device=model.device)[0],
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
        statistics_pass(model.descr, view, tmp, progress=progress)
        create_writers(job, _output_dtypes(job), record["pixel_size"], image.unit)
    return StreamJob(folder, load_record(folder), package=model.package)


def _check_in_memory_targets(targets: Mapping[str, Path], plan: Any) -> None:
    """A TIFF target is written from memory at the end: refuse it, before any work, when the
    result (float32) would take more than half the available memory."""
    from microzoo.io.read import image_format

    for oid, target in targets.items():
        size = 4 * math.prod(max(1, n) for n in plan.output_shapes[oid].values())
        if image_format(target) != "zarr" and size > resources.available_memory() // 2:
            raise OutputError(
                f"the output {oid!r} ({size / 2**30:.1f} GiB) does not fit in memory to be written as "
                f"{target.name}: write it as OME-Zarr instead (-o {image_stem(target)}.ome.zarr)"
            )


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
