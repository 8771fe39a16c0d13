"""Instance labels of a streamed job: each tile's objects saved as it finishes, labels painted at the end.

The glue between :mod:`microzoo.runtime.stitch` (the rules) and the streaming job
(:mod:`microzoo.runtime.stream_job`), in three calls the job makes:

- :func:`instance_output`: which output of the model is an instance output (a package with
  ``config.microzoo.instance_settings`` and an output of three channels), or ``None``;
- :func:`save_tile_objects`: in ``write_batch``, for each tile, before the batch's marker:
  postprocess the tile's whole output (halo included; the part inside the image), decode it,
  and save the objects it keeps in the job folder's ``objects/`` (atomically; a rerun writes
  the same file);
- :func:`write_labels`: in ``finish``, once every batch is done: ``labels/instances`` of the
  output's OME-Zarr, painted tile region by tile region (the output chunks) from the saved
  objects, then its pyramid (nearest). Painting again after an interruption writes the same
  bytes.

Memory: one tile's output while decoding; one chunk and the objects of the tiles overlapping
it while painting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.progress import ProgressCallback
from microzoo.runtime.geometry import FixedSize, ModelGeometry, TensorGeometry
from microzoo.runtime.instances import N_TARGET_CHANNELS, InstanceSettings, instance_settings_of
from microzoo.runtime.ops import Pipeline
from microzoo.runtime.stitch import LabelPainter, instance_maps, save_objects, tile_objects, tile_window
from microzoo.runtime.tiling import Tile, TilePlan

__all__ = ["LABELS_NAME", "InstanceOutput", "instance_output", "labels_wanted", "save_tile_objects", "write_labels"]

#: The name of the label image in the output OME-Zarr (``labels/instances``).
LABELS_NAME = "instances"


@dataclasses.dataclass(frozen=True)
class InstanceOutput:
    """The output tensor that gets labels, and the settings that decode it."""

    tensor: TensorGeometry
    settings: InstanceSettings


def instance_output(descr: Any, geometry: ModelGeometry) -> InstanceOutput | None:
    """The instance output of a model (``None`` when it stores no instance settings)."""
    settings = instance_settings_of(descr)
    if settings is None:
        return None
    for tensor in geometry.outputs:
        channels = [a.size for a in tensor.axes if a.kind == "channel"]
        if channels == [FixedSize(N_TARGET_CHANNELS)]:
            return InstanceOutput(tensor, settings)
    return None


def edge_band(tensor: TensorGeometry) -> int:
    """How near a tile's cut edge an object's clump counts as reaching it: half the output's
    smallest halo (at least 1 pixel). Near its edge a tile's output can differ from the whole
    image's (the network's receptive field reaches past the tile there); the halo is the
    model's bound on that band. Half of it is a choice: wide enough for networks whose
    receptive field is well inside the halo, narrow enough to leave objects room."""
    halos = [a.halo for a in tensor.axes if a.kind not in ("batch", "channel") and a.halo > 0]
    return max(1, min(halos, default=0) // 2)


def save_tile_objects(
    folder: Path,
    plan: TilePlan,
    tile: Tile,
    instance: InstanceOutput,
    piece: np.ndarray,
    postprocess: Pipeline,
    mark_non_finite: Callable[..., object] | None = None,
) -> int:
    """Decode ``tile``'s whole raw output ``piece`` (the tensor's axes, one item) after the
    output's bound ``postprocess`` pipeline and save the objects it keeps in ``folder``; return
    how many of them may be cut (:func:`microzoo.runtime.stitch.cut_objects_notice`).

    ``mark_non_finite(block, where=...)`` sets NaN in a postprocessed block where the input was not
    finite, as the kept outputs get it: those pixels are background, as when the whole image's
    output is decoded.
    """
    tensor = instance.tensor
    window = tile_window(plan, tile, tensor)
    crop, where, j = [], [], 0
    for axis in tensor.axes:
        if axis.kind == "channel":
            crop.append(slice(None))
            where.append(slice(0, N_TARGET_CHANNELS))
            continue
        crop.append(slice(0, 1) if axis.kind == "batch" else window.crop[j])
        where.append(window.inside[j])
        j += 1
    block = postprocess(piece[tuple(crop)], where=tuple(where))
    if mark_non_finite is not None:
        mark_non_finite(block, where=tuple(where))
    maps = instance_maps(block, tensor)
    objects = tile_objects(maps, window, settings=instance.settings, edge_band=edge_band(tensor))
    save_objects(folder, objects)
    return int(objects.may_be_cut.sum())


def labels_wanted(output: Path, target: Path) -> bool:
    """Whether the instance output being written at ``output`` still needs labels: it is there
    (not delivered yet) and goes to an OME-Zarr ``target`` (a TIFF target gets the maps only)."""
    from microzoo.io.read import image_format

    return output.exists() and image_format(target) == "zarr"


def write_labels(
    folder: Path,
    plan: TilePlan,
    instance: InstanceOutput,
    image: Any,
    layout: Any,
    sample_index: Callable[[int], Mapping[str, int]],
    *,
    progress: ProgressCallback | None = None,
) -> Any:
    """Paint ``labels/instances`` of the OME-Zarr ``image`` (an ``OmeZarrWriter``) from the
    objects in ``folder``, chunk by chunk, and build its pyramid; return its writer.

    ``layout`` is the output's ``OutputLayout`` (model axes to the image's), ``sample_index``
    the image indices of a model batch index (``ModelView.sample_index``).
    """
    from microzoo.io.ome_zarr import OmeZarrWriter

    tensor = instance.tensor
    channel = next(i for i, a in enumerate(tensor.axes) if a.kind == "channel")
    one_channel = {
        "shape": tuple(1 if a == "c" else n for a, n in zip(layout.axes, layout.shape, strict=True)),
        "chunks": tuple(1 if a == "c" else n for a, n in zip(layout.axes, layout.chunks, strict=True)),
    }
    label_layout = dataclasses.replace(layout, **one_channel)
    path = Path(image.path) / "labels" / LABELS_NAME
    labels = (
        OmeZarrWriter.open(path)
        if path.exists()
        else image.create_labels(LABELS_NAME, dtype=np.uint32, chunks=label_layout.chunks)
    )
    windows = [tile_window(plan, t, tensor) for t in plan.tiles]
    painter = LabelPainter(folder, windows)
    for n, (tile, window) in enumerate(zip(plan.tiles, windows, strict=True)):
        if progress:
            progress(n, plan.n_tiles, "painting instance labels")
        block = np.expand_dims(painter.paint(window.kept), channel)
        where = list(tile.outputs[tensor.id][1])
        where[channel] = slice(0, 1)
        region, data = label_layout.place(block, dict(sample_index(tile.sample)), tuple(where))
        labels.write(region, data)
    if progress:
        progress(plan.n_tiles, plan.n_tiles, "painting instance labels")
    labels.build_pyramid(method="nearest", progress=progress)
    return labels
