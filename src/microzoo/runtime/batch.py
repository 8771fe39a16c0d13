"""Predict on many image files: read, predict, write each output next to its name, never over an input."""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from microzoo.errors import ImageError, MicrozooError, OutputError
from microzoo.io.files import image_stem
from microzoo.io.read import image_format, image_shape
from microzoo.progress import ProgressCallback
from microzoo.runtime.predict import Model, Prediction

if TYPE_CHECKING:
    from microzoo.runtime.uncertainty import UncertainPrediction, UncertaintySettings


@dataclasses.dataclass(frozen=True)
class FileResult:
    """One input file and what was written for it; ``inspected`` is what ``on_image`` returned
    for it (see :func:`predict_files`)."""

    input: Path
    outputs: dict[str, Path]
    prediction: Prediction
    seconds: float
    inspected: Any = None
    overview: int = 1  # on_image saw every k-th pixel of y and x (a streamed image), else 1
    uncertainty: UncertainPrediction | None = None  # with ``uncertainty=``: the members' spread
    uncertainty_maps: dict[str, Path] = dataclasses.field(default_factory=dict)  # output id -> spread file


def output_paths(model: Model, inputs: Sequence[Path], out: Path, *, suffix: str = ".tif") -> list[dict[str, Path]]:
    """Where each input's outputs go.

    ``out`` is a file (one input, a one-output model, ``out`` with an image suffix) or a folder:
    ``OUT/<stem><suffix>`` for a one-output model, ``OUT/<stem>_<output id><suffix>`` otherwise.
    Raises OutputError when an output would overwrite an input or two outputs collide.
    """
    single_file = image_format(out) is not None
    if single_file and (len(inputs) != 1 or len(model.output_ids) != 1):
        raise OutputError(
            f"-o {out} names one file but there are {len(inputs)} inputs and {len(model.output_ids)} "
            "outputs per input: give a folder instead"
        )
    plans: list[dict[str, Path]] = []
    for path in inputs:
        if single_file:
            plans.append({model.output_ids[0]: out})
            continue
        stem = image_stem(path)
        if len(model.output_ids) == 1:
            plans.append({model.output_ids[0]: out / f"{stem}{suffix}"})
        else:
            plans.append({oid: out / f"{stem}_{oid}{suffix}" for oid in model.output_ids})
    resolved_inputs = {p.resolve() for p in inputs}
    seen: dict[Path, Path] = {}
    for path, plan in zip(inputs, plans, strict=True):
        for target in plan.values():
            if target.resolve() in resolved_inputs:
                raise OutputError(
                    f"writing the output to {target} would overwrite an input image: choose another "
                    "output folder with -o"
                )
            if target.resolve() in seen:
                raise OutputError(
                    f"{seen[target.resolve()].name} and {path.name} would both be written to {target}: "
                    "rename one of them or predict them into different folders"
                )
            seen[target.resolve()] = path
    return plans


def check_outputs(
    model: Model, inputs: Sequence[Path], plans: Sequence[Mapping[str, Path]], *, overwrite: bool = False
) -> None:
    """Refuse, before any computing, outputs that cannot be written.

    Raises OutputError when an output exists (unless ``overwrite``, or a streamed job for it is
    there to continue or clean up: :mod:`microzoo.runtime.stream_job`), when a file stands where
    an output folder should be, when an output folder cannot be created or written to (read
    only, under ``/proc``), or when its disk has less free space than the outputs will take
    (estimated from the images' sizes). Creates the output folders.
    """
    from microzoo.runtime.stream_job import job_folder

    targets = [target for plan in plans for target in plan.values()]
    for target in targets:
        if target.is_dir() and not target.is_symlink() and target.suffix.lower() != ".zarr":
            raise OutputError(f"the output {target} is an existing folder: give another -o, or remove the folder")
        if target.exists() and not overwrite and not job_folder(target).exists():  # a job there decides
            raise OutputError(
                f"the output {target} exists already: pass --overwrite (overwrite=True) to replace "
                "it, or choose another output with -o"
            )
    folders = list(dict.fromkeys(target.parent for target in targets))
    for folder in folders:
        _check_folder(folder)
    needed = _estimated_output_bytes(model, inputs)
    for folder in folders:
        free = shutil.disk_usage(folder).free
        share = needed * sum(t.parent == folder for t in targets) // max(len(targets), 1)
        if free < share:
            raise OutputError(
                f"the outputs need about {share / 1e6:.1f} MB but the disk of {folder} has only "
                f"{free / 1e6:.1f} MB free: free some space or choose another output folder with -o"
            )


def _check_folder(folder: Path) -> None:
    """Create ``folder`` if needed and check that files can be written into it."""
    existing = next((p for p in (folder, *folder.parents) if p.exists() or p.is_symlink()), None)
    if existing is not None and not existing.is_dir():
        raise OutputError(
            f"cannot write outputs into {folder}: {existing} is a file, not a folder; give a "
            "folder with -o (or an image file name such as out.tif for one input)"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".microzoo-write-check-"):
            pass
    except OSError as error:
        raise OutputError(
            f"cannot write into the output folder {folder} ({error.strerror or error}): choose a "
            "folder you can write to with -o"
        ) from error


def _estimated_output_bytes(model: Model, inputs: Sequence[Path]) -> int:
    """About how many bytes the outputs of ``inputs`` take: float32, every output channel per
    input pixel (the input's own channels counted too, an overestimate for RGB images)."""

    def pixels(path: Path) -> int:
        try:
            return math.prod(image_shape(path))
        except ImageError:  # unreadable: reported with its reason when it is read
            return 0

    from bioimageio.spec.model.v0_5 import ChannelAxis

    per_pixel = 0.0
    for tensor in model.descr.outputs:
        scale = 1.0
        channels = 1
        for axis in tensor.axes:
            if isinstance(axis, ChannelAxis):
                channels = len(axis.channel_names)
            elif str(axis.type) in ("space", "time"):
                scale *= 1.0 / float(getattr(axis, "scale", 1.0) or 1.0)
        per_pixel += 4 * channels * scale
    return int(sum(pixels(path) for path in inputs) * per_pixel)


def predict_files(
    model: Model,
    inputs: Sequence[Path],
    out: Path,
    *,
    axes: str | None = None,
    tile: int | Mapping[str, int] | None = None,
    memory_budget: int | None = None,
    channel: int | Sequence[int] | None = None,
    suffix: str = ".tif",
    overwrite: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    level: int = 0,
    progress: ProgressCallback | None = None,
    on_image: Callable[..., Any] | None = None,
    uncertainty: str | UncertaintySettings | None = None,
) -> list[FileResult]:
    """Predict every input file and write its outputs (see :func:`output_paths` for the names).

    Before anything is computed the outputs are checked (:func:`check_outputs`): an existing
    output is refused unless ``overwrite``. Progress is reported per file. Every output is
    written to a temporary name first, so an interrupted batch leaves only complete files.
    ``channel`` chooses image channels (:func:`microzoo.io.axes.select_channels`).
    ``on_image(path, image, axes, *, prediction, model, pixel_size, unit, uncertainty)`` is
    called with each image as read (its own axes) and its prediction (and ``UncertainPrediction``
    or None), so a caller can look at them without reading it again (a streamed image: an
    overview, ``on_image(path, image, axes)`` only); what it returns is kept in
    :attr:`FileResult.inspected` (:func:`microzoo.trust.note.predict_files_with_note` computes
    the trust note this way).

    ``workers=N`` (a local Dask cluster) or ``scheduler=ADDRESS`` (an existing one) spreads the
    files over Dask workers, resumably: see :func:`microzoo.runtime.distributed.predict_files_on_dask`.

    An image streams tile by tile into its output, resumably (:mod:`microzoo.runtime.stream_files`:
    an OME-Zarr output, the one image of a Dask run, or an image too large for memory);
    ``level`` picks the resolution level of a multiscale input.

    ``uncertainty`` (``"tta"``, ``"dropout"``, ``"ensemble"`` or
    :class:`~microzoo.runtime.uncertainty.UncertaintySettings`) predicts each image several times
    (:func:`~microzoo.runtime.uncertainty.predict_with_uncertainty`): the outputs are the mean,
    and the spread is written beside each (:func:`uncertainty_paths`). Streamed images are
    refused with it: it needs the whole image in memory.
    """
    from microzoo.runtime.stream_files import should_stream, stream_file

    plans = output_paths(model, inputs, out, suffix=suffix)
    dask = workers is not None or scheduler is not None
    common: dict[str, Any] = {
        "axes": axes,
        "tile": tile,
        "memory_budget": memory_budget,
        "channel": channel,
        "on_image": on_image,
    }
    if uncertainty is not None:
        return _predict_files_uncertain(
            model, inputs, plans, uncertainty, dask=dask, level=level, overwrite=overwrite, progress=progress, **common
        )
    if dask and len(inputs) == 1:
        check_outputs(model, inputs, plans, overwrite=overwrite)
        return [stream_file(model, inputs[0], plans[0], level=level, overwrite=overwrite, workers=workers,
                            scheduler=scheduler, progress=progress, **common)]  # fmt: skip
    if dask:
        from microzoo.runtime.distributed import predict_files_on_dask

        return predict_files_on_dask(
            model, inputs, out, workers=workers, scheduler=scheduler, level=level, suffix=suffix,
            overwrite=overwrite, progress=progress, **common,
        )  # fmt: skip
    check_outputs(model, inputs, plans, overwrite=overwrite)
    streamed = [should_stream(model, p, plan, level=level) for p, plan in zip(inputs, plans, strict=True)]
    results = []
    for done, (path, plan, stream) in enumerate(zip(inputs, plans, streamed, strict=True)):
        if progress:
            progress(done, len(inputs), path.name)
        if stream:
            results.append(
                stream_file(model, path, plan, level=level, overwrite=overwrite, progress=progress, **common)
            )
        else:
            results.append(predict_file(model, path, plan, level=level, **common))
    if progress:
        progress(len(inputs), len(inputs), "done")
    return results


def uncertainty_paths(plan: Mapping[str, Path]) -> dict[str, Path]:
    """Where the spread of each output goes: ``<output stem>_uncertainty.tif`` beside the output."""
    return {oid: target.with_name(f"{image_stem(target)}_uncertainty.tif") for oid, target in plan.items()}


def _predict_files_uncertain(
    model: Model,
    inputs: Sequence[Path],
    plans: Sequence[Mapping[str, Path]],
    uncertainty: str | UncertaintySettings,
    *,
    dask: bool,
    level: int,
    overwrite: bool,
    progress: ProgressCallback | None,
    **options: Any,
) -> list[FileResult]:
    """:func:`predict_files` with ``uncertainty``: every image in memory, one after the other."""
    from microzoo.runtime.stream_files import should_stream
    from microzoo.runtime.uncertainty import uncertainty_settings

    settings = uncertainty_settings(uncertainty)
    for path, plan in zip(inputs, plans, strict=True):
        if dask or should_stream(model, path, plan, level=level):
            why = "on a Dask cluster" if dask else "tile by tile (too large for memory, or an OME-Zarr output)"
            raise ImageError(
                f"{path.name} would be predicted {why}, but uncertainty needs each whole image in memory: "
                "predict it without --uncertainty, or in memory (a .tif output, no --workers/--scheduler)"
            )
    resolved_inputs = {p.resolve() for p in inputs}
    full_plans = []
    for plan in plans:
        maps = uncertainty_paths(plan)
        if any(p.resolve() in resolved_inputs for p in maps.values()):
            raise OutputError(
                f"an uncertainty map ({', '.join(p.name for p in maps.values())}) would overwrite an input "
                "image: choose another output folder with -o"
            )
        full_plans.append({**plan, **{f"{oid} uncertainty": p for oid, p in maps.items()}})
    check_outputs(model, inputs, full_plans, overwrite=overwrite)
    results = []
    for done, (path, plan) in enumerate(zip(inputs, plans, strict=True)):
        if progress:
            progress(done, len(inputs), path.name)
        results.append(predict_file(model, path, plan, level=level, uncertainty=settings, **options))
    if progress:
        progress(len(inputs), len(inputs), "done")
    return results


def predict_file(
    model: Model,
    path: Path,
    plan: Mapping[str, Path],
    *,
    axes: str | None = None,
    tile: int | Mapping[str, int] | None = None,
    memory_budget: int | None = None,
    channel: int | Sequence[int] | None = None,
    level: int = 0,
    on_image: Callable[..., Any] | None = None,
    uncertainty: UncertaintySettings | None = None,
) -> FileResult:
    """Read one image file, predict it in memory and write each output to ``plan[output id]``
    (atomically); errors name the file. The one step :func:`predict_files` repeats, locally or
    on Dask workers. With ``uncertainty`` the output is the members' mean and each output's
    spread goes to :func:`uncertainty_paths`."""
    import time

    from microzoo.io.read import read_image
    from microzoo.io.write import write_image

    start = time.perf_counter()
    try:
        image = read_image(path, axes=axes, level=level)
        data = np.asarray(image.data.compute() if hasattr(image.data, "compute") else image.data[...])
        options: dict[str, Any] = {"axes": image.axes, "tile": tile, "memory_budget": memory_budget, "channel": channel}
        uncertain = None
        if uncertainty is None:
            prediction = model.predict_image(data, **options)
        else:
            from microzoo.runtime.uncertainty import predict_with_uncertainty

            uncertain = predict_with_uncertainty(model, data, **uncertainty.options(), **options)
            prediction = uncertain.prediction
    except MicrozooError as error:  # say which file, unless the message does
        if str(path) in str(error) or type(error).__init__ is not Exception.__init__:
            raise
        raise type(error)(f"{path}: {error}") from error
    inspected = None
    if on_image is not None:
        seen = {"prediction": prediction, "model": model, "pixel_size": image.pixel_size, "unit": image.unit}
        inspected = on_image(path, data, image.axes, uncertainty=uncertain, **seen)
    maps = uncertainty_paths(plan) if uncertain is not None else {}
    written = [(plan, prediction.outputs)] + ([(maps, uncertain.spread)] if uncertain is not None else [])
    for targets, arrays in written:
        for oid, target in targets.items():
            pixel_size = output_pixel_size(model, oid, image.pixel_size)
            write_image(target, arrays[oid], prediction.axes[oid], pixel_size=pixel_size, unit=image.unit)
    seconds = time.perf_counter() - start
    return FileResult(path, dict(plan), prediction, seconds, inspected, uncertainty=uncertain, uncertainty_maps=maps)


def output_pixel_size(model: Model, output_id: str, pixel_size: Mapping[str, float] | None) -> dict[str, float] | None:
    """The input's pixel size carried to an output.

    Axes the model runs over (a z or t folded into its batch) keep their size; axes the model's
    output has are scaled by that axis's scale relative to the input's (a 2x upsampling output
    has half the pixel size).
    """
    if not pixel_size:
        return None
    tensor: Any = model.descr.outputs[model.output_ids.index(output_id)]
    input_scale = {str(a.id): float(getattr(a, "scale", 1.0) or 1.0) for a in model.descr.inputs[0].axes}
    output_scale = {str(a.id): float(getattr(a, "scale", 1.0) or 1.0) for a in tensor.axes}
    return {axis: size * output_scale.get(axis, 1.0) / input_scale.get(axis, 1.0) for axis, size in pixel_size.items()}
