"""Predict on many image files: read, predict, write each output next to its name, never over an input."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.errors import OutputError
from microzoo.progress import ProgressCallback
from microzoo.runtime.predict import Model, Prediction

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".npy", ".zarr")


@dataclasses.dataclass(frozen=True)
class FileResult:
    """One input file and what was written for it."""

    input: Path
    outputs: dict[str, Path]
    prediction: Prediction
    seconds: float


def output_paths(model: Model, inputs: Sequence[Path], out: Path, *, suffix: str = ".tif") -> list[dict[str, Path]]:
    """Where each input's outputs go.

    ``out`` is a file (one input, a one-output model, ``out`` with an image suffix) or a folder:
    ``OUT/<stem><suffix>`` for a one-output model, ``OUT/<stem>_<output id><suffix>`` otherwise.
    Raises OutputError when an output would overwrite an input or two outputs collide.
    """
    single_file = out.suffix.lower() in IMAGE_SUFFIXES or out.name.lower().endswith(".ome.zarr")
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
        stem = path.name[: -len(".ome.tif")] if path.name.lower().endswith(".ome.tif") else path.stem
        if len(model.output_ids) == 1:
            plans.append({model.output_ids[0]: out / f"{stem}{suffix}"})
        else:
            plans.append({oid: out / f"{stem}_{oid}{suffix}" for oid in model.output_ids})
    resolved_inputs = {p.resolve() for p in inputs}
    seen: dict[Path, Path] = {}
    for path, plan in zip(inputs, plans):
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


def predict_files(model: Model, inputs: Sequence[Path], out: Path, *, axes: str | None = None,
                  tile: int | Mapping[str, int] | None = None, memory_budget: int | None = None,
                  suffix: str = ".tif", progress: ProgressCallback | None = None,
                  on_image: Callable[[Path, np.ndarray], None] | None = None) -> list[FileResult]:
    """Predict every input file and write its outputs (see :func:`output_paths` for the names).

    Progress is reported per file. Every output is written to a temporary name first, so an
    interrupted batch leaves only complete files. ``on_image(path, image)`` is called with each
    image as read (its own axes), so a caller can look at it without reading it again
    (:func:`microzoo.trust.note.predict_files_with_note` computes the trust note this way).
    """
    import time

    from microzoo.io.read import read_image
    from microzoo.io.write import write_image

    plans = output_paths(model, inputs, out, suffix=suffix)
    results = []
    for done, (path, plan) in enumerate(zip(inputs, plans)):
        if progress:
            progress(done, len(inputs), path.name)
        start = time.perf_counter()
        image = read_image(path, axes=axes)
        data = np.asarray(image.data.compute() if hasattr(image.data, "compute") else image.data[...])
        prediction = model.predict_image(data, axes=image.axes, tile=tile, memory_budget=memory_budget)
        if on_image is not None:
            on_image(path, data)
        for oid, target in plan.items():
            write_image(target, prediction.outputs[oid], prediction.axes[oid],
                        pixel_size=_output_pixel_size(model, oid, image.pixel_size), unit=image.unit)
        results.append(FileResult(path, plan, prediction, time.perf_counter() - start))
    if progress:
        progress(len(inputs), len(inputs), "done")
    return results


def _output_pixel_size(model: Model, output_id: str, pixel_size: Mapping[str, float] | None) -> dict[str, float] | None:
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
