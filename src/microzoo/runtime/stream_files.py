"""Which image files stream, and streaming one as :func:`microzoo.runtime.batch.predict_files` does.

An image streams (:mod:`microzoo.runtime.stream`) when its output is OME-Zarr, when it is the
one image of a Dask run (``workers`` / ``scheduler``), or when it would not fit in memory
(its float32 input and outputs above half the available memory); otherwise it is predicted
in memory. A streamed image's trust note looks at an overview (every k-th pixel, at most
about 2048 x 2048 per plane, at most 16 planes), read lazily.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from microzoo.progress import ProgressCallback
from microzoo.runtime import resources

if TYPE_CHECKING:
    from microzoo.runtime.batch import FileResult
    from microzoo.runtime.predict import Model

__all__ = ["OVERVIEW_SIZE", "overview", "should_stream", "stream_file"]

OVERVIEW_SIZE = 2048
OVERVIEW_PLANES = 16


def should_stream(model: Model, path: Path, plan: Mapping[str, Path], *, level: int = 0, dask: bool = False) -> bool:
    """Whether ``path`` is predicted by streaming (see the module docstring)."""
    from microzoo.io.read import image_format

    if dask or any(image_format(target) == "zarr" for target in plan.values()):
        return True
    return estimated_bytes(model, path, level=level) > resources.available_memory() // 2


def estimated_bytes(model: Model, path: Path, *, level: int = 0) -> int:
    """Memory an in-memory prediction of ``path`` takes at least: float32 input and outputs."""
    from microzoo.io.read import read_image

    shape = read_image(path, level=level, lazy=True).data.shape if level else _shape(path)
    pixels = math.prod(shape)
    channels_out = sum(
        next((len(getattr(a, "channel_names", ())) for a in t.axes if str(a.type) == "channel"), 1)
        for t in model.descr.outputs
    )
    return 4 * pixels * (1 + channels_out)


def _shape(path: Path) -> tuple[int, ...]:
    from microzoo.errors import ImageError
    from microzoo.io.read import image_shape

    try:
        return image_shape(path)
    except ImageError:  # unreadable: reported with its reason when it is read
        return (0,)


def overview(data: Any, axes: str, *, size: int | None = None, planes: int = OVERVIEW_PLANES) -> tuple[np.ndarray, int]:
    """Every k-th pixel of y and x (k so both are at most ``size``, default :data:`OVERVIEW_SIZE`)
    of at most ``planes`` planes per other axis (channels whole), read lazily in bands of rows
    (so a Dask array never computes more than a band); the array and k."""
    shape = dict(zip(axes, data.shape, strict=True))
    k = max(1, math.ceil(max(shape.get("y", 1), shape.get("x", 1)) / (size or OVERVIEW_SIZE)))
    index = []
    for a in axes:
        if a in "yx":
            index.append(slice(None, None, k))
        elif a == "c":
            index.append(slice(None))
        else:
            index.append(slice(None, None, max(1, math.ceil(shape[a] / planes))))
    if "y" not in axes:
        return _strided(data, axes, tuple(index)), k
    from microzoo.io.read import _storage_chunks

    y = axes.index("y")
    chunk = (_storage_chunks(data) or data.shape)[y]
    band = k * math.ceil(max(int(chunk), 256) / k)  # a multiple of k: every band starts on a kept row
    bands = [
        _strided(data, axes, index[:y] + [slice(start, min(start + band, shape["y"]), k)] + index[y + 1 :])
        for start in range(0, shape["y"], band)
    ]
    return np.concatenate(bands, axis=y), k


def _strided(data: Any, axes: str, index: Sequence[slice]) -> np.ndarray:
    """``data[index]`` as a NumPy array (``index``: slices with steps), read lazily."""
    try:
        return np.asarray(data[tuple(index)])
    except (IndexError, ValueError, TypeError):  # a lazy array without steps: read plane rows
        whole = tuple(
            slice(s.start, s.stop) if s.step is None or a in "yx" else s for a, s in zip(axes, index, strict=True)
        )
        steps = tuple(slice(None, None, s.step) if a in "yx" else slice(None) for a, s in zip(axes, index, strict=True))
        return np.asarray(data[whole])[steps]


def stream_file(
    model: Model,
    path: Path,
    plan: Mapping[str, Path],
    *,
    axes: str | None = None,
    level: int = 0,
    tile: int | Mapping[str, int] | None = None,
    memory_budget: int | None = None,
    channel: int | Sequence[int] | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: ProgressCallback | None = None,
    on_image: Callable[[Path, np.ndarray, str], Any] | None = None,
) -> FileResult:
    """Stream one image file into its targets (resuming a job a killed run left), here or on
    Dask; a :class:`~microzoo.runtime.batch.FileResult` whose outputs are read lazily."""
    from microzoo.io.read import read_image
    from microzoo.runtime.batch import FileResult
    from microzoo.runtime.outputs import Outputs
    from microzoo.runtime.predict import Prediction
    from microzoo.runtime.stream import predict_stream, prepare_stream, resumed_notice

    start = time.perf_counter()
    options: dict[str, Any] = {
        "axes": axes, "level": level, "channel": channel, "tile": tile, "memory_budget": memory_budget,
        "threads": model.threads, "overwrite": overwrite,
    }  # fmt: skip
    if workers is not None or scheduler is not None:
        from microzoo.runtime.distributed import run_on_dask
        from microzoo.runtime.stream_job import job_folder

        if model.threads is None and not job_folder(next(iter(plan.values()))).exists():
            options["threads"] = 1  # a new Dask job: one thread per forward, N workers use N cores
        job = prepare_stream(model, path, dict(plan), progress=progress, **options)
        n_tiles, n_batches = job.plan.n_tiles, job.n_batches
        resumed = n_batches - len(job.pending_batches())
        run_on_dask(job, workers=workers, scheduler=scheduler, progress=progress)
        notices = job.notices()
        job.finish(progress=progress)
    else:
        result = predict_stream(model, path, dict(plan), progress=progress, **options)
        n_tiles, notices, resumed, n_batches = result.n_tiles, result.notices, result.resumed, result.n_batches
    notices = resumed_notice(resumed, n_batches) + tuple(notices)
    inspected, k = None, 1
    written = {oid: read_image(target, lazy=True) for oid, target in plan.items()}
    if on_image is not None:
        image = read_image(path, axes=axes, level=level, lazy=True)
        small, k = overview(image.data, image.axes)
        inspected = on_image(path, small, image.axes)
    prediction = Prediction(
        outputs=Outputs({oid: cast(Any, w.data) for oid, w in written.items()}),  # read lazily
        axes={oid: w.axes for oid, w in written.items()},
        notices=tuple(notices),
        n_tiles=n_tiles,
    )
    return FileResult(path, dict(plan), prediction, time.perf_counter() - start, inspected, overview=k)
