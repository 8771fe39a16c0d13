"""Predicting an array that is not in memory (a Dask or Zarr napari layer) with its trust note.

The streaming branch of :func:`microzoo.trust.note.predict_array_with_note`: the array streams
through :mod:`microzoo.runtime.stream` (never loaded whole) and the note judges an overview,
as :func:`~microzoo.trust.note.predict_files_with_note` judges a streamed file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from microzoo.progress import ProgressCallback
from microzoo.runtime.predict import Model
from microzoo.trust.note import ArrayPrediction, _judge_one, _note, _overview_note
from microzoo.trust.reference import Reference

__all__ = ["stream_array"]


def stream_array(
    model: Model,
    reference: Reference,
    transforms: Sequence[str],
    image: Any,
    *,
    axes: str,
    tile: int | Mapping[str, int] | None,
    channel: int | Sequence[int] | None,
    uncertainty: Any,
    stream_to: str | Path | None,
    name: str,
    memory_budget: int | None,
    overwrite: bool,
    progress: ProgressCallback | None,
) -> ArrayPrediction:
    """Stream ``image`` into ``stream_to/<output id>.ome.zarr`` (an unfinished job of the same
    array continues; other outputs there are replaced only with ``overwrite``) and judge an
    overview of it; the arguments are those of :func:`~microzoo.trust.note.predict_array_with_note`."""
    from microzoo.errors import ImageError, OutputError
    from microzoo.io.read import read_image
    from microzoo.runtime.stream import prepare_stream, resumed_notice, run_stream
    from microzoo.runtime.stream_files import overview

    what = f"this {type(image).__name__} of shape {tuple(image.shape)}"
    if uncertainty is not None:
        raise ImageError(
            f"uncertainty needs the whole image in memory, but {what} is predicted tile by tile: "
            "predict it without uncertainty, or give it as a NumPy array"
        )
    if stream_to is None:
        raise OutputError(
            f"{what} is predicted tile by tile into OME-Zarr files, never loaded whole: "
            "give stream_to, the folder to write them in"
        )
    folder = Path(stream_to)
    folder.mkdir(parents=True, exist_ok=True)
    targets = {oid: folder / f"{oid}.ome.zarr" for oid in model.output_ids}
    options: dict[str, Any] = {"axes": axes, "tile": tile, "channel": channel, "memory_budget": memory_budget,
                               "threads": model.threads, "progress": progress}  # fmt: skip
    try:
        job = prepare_stream(model, image, targets, **options)  # created, or continued
    except OutputError:
        if not overwrite:
            raise
        job = prepare_stream(model, image, targets, overwrite=True, **options)
    result = run_stream(job, model, progress=progress)
    written = {oid: read_image(path, lazy=True) for oid, path in result.outputs.items()}
    small, k = overview(image, job.record["settings"]["axes"])
    judged = _judge_one(reference, transforms, tile, channel, name, small, job.record["settings"]["axes"])
    return ArrayPrediction(
        outputs={oid: w.data for oid, w in written.items()},
        axes={oid: w.axes for oid, w in written.items()},
        notices=resumed_notice(result.resumed, result.n_batches) + result.notices,
        note=_note(reference, [judged], [_overview_note(name, k)] if k > 1 else []),
        paths=dict(result.outputs),
    )
