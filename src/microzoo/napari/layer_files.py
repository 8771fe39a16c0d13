"""Layers written as files for the library: the images (and their truths) a widget hands to a verb that reads folders.

napari holds images in memory; ``microzoo select`` and training read folders of files paired by
name. :func:`write_pairs` writes each image layer and its truth (labels, clean targets) as TIFF
(microzoo's writer, atomic) into ``FOLDER/images`` and ``FOLDER/ROLE``; the Check and Train widgets
put ``FOLDER`` under the settings' cache folder.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.errors import DataError


@dataclass(frozen=True)
class LayerPair:
    """An image layer's name and data (``rgb``: its last axis is colour), and its truth's data or None."""

    name: str
    image: Any
    rgb: bool
    truth: Any = None


def layer_images(data: Any, *, rgb: bool, spatial_dims: int = 2, name: str) -> list[tuple[np.ndarray, str]]:
    """A layer's data as images with their axes: a colour image ``yxc``; in 2-D a plane ``yx`` or
    each plane of a stack (any leading axes); in 3-D a stack ``zyx`` or each stack of a time series."""
    array = np.asarray(data)
    if rgb:
        if spatial_dims == 3 or array.ndim != 3:
            raise DataError(f"the layer {name} is {array.shape}: give a 2-D colour image (y, x, colour)")
        return [(array, "yxc")]
    if array.ndim < spatial_dims:
        raise DataError(
            f"the layer {name} has {array.ndim} dimensions: a 3-D model needs z stacks; untick '3-D' to use 2-D"
        )
    shape = array.shape[-spatial_dims:]
    return [(plane, "zyx"[-spatial_dims:]) for plane in array.reshape(-1, *shape)]


def write_pairs(
    pairs: Sequence[LayerPair], folder: Path, *, truth_role: str = "truth", spatial_dims: int = 2
) -> dict[str, Path]:
    """Write the images (and truths) of ``pairs`` as TIFF into ``folder/images`` (and
    ``folder/TRUTH_ROLE``: ``truth``, ``labels``, ``targets``), paired by file name; returns the
    folders by role. Stacks become one file per plane (2-D) or per stack (3-D): :func:`layer_images`."""
    from microzoo.io.write import write_image

    with_truth = [p.truth is not None for p in pairs]
    if any(with_truth) and not all(with_truth):
        missing = ", ".join(p.name for p in pairs if p.truth is None)
        raise DataError(f"give a {truth_role} layer for every image or for none: {missing} has none")
    folders = {"images": folder / "images", **({truth_role: folder / truth_role} if all(with_truth) else {})}
    taken: set[str] = set()
    for pair in pairs:
        images = layer_images(pair.image, rgb=pair.rgb, spatial_dims=spatial_dims, name=pair.name)
        truths: list[tuple[np.ndarray, str] | None] = [None] * len(images)
        if pair.truth is not None:
            colour = pair.rgb and np.ndim(pair.truth) == np.ndim(pair.image)  # a colour target of a colour image
            found = layer_images(pair.truth, rgb=colour, spatial_dims=spatial_dims, name=pair.name)
            if [a.shape for a, _ in images] != [t.shape for t, _ in found] and (
                [a.shape[:spatial_dims] for a, _ in images] != [t.shape for t, _ in found]
            ):
                raise DataError(
                    f"the {truth_role} of {pair.name} is {np.shape(pair.truth)} and the image {np.shape(pair.image)}: "
                    "pick the layer drawn on this image"
                )
            truths = list(found)
        stem = _unique(re.sub(r"[^A-Za-z0-9._-]+", "_", pair.name).strip("_.") or "image", taken)
        for k, ((image, axes), truth) in enumerate(zip(images, truths, strict=True)):
            name = stem if len(images) == 1 else f"{stem}-{k:03d}"
            write_image(folders["images"] / f"{name}.tif", image, axes)
            if truth is not None:
                write_image(folders[truth_role] / f"{name}.tif", _storable(truth[0]), truth[1])
    return folders


def _storable(truth: np.ndarray) -> np.ndarray:
    """Labels as TIFF keeps them: 64-bit integers (napari's default) as 32-bit when they fit."""
    if truth.dtype.kind in "iu" and truth.dtype.itemsize == 8 and truth.min() >= 0 and truth.max() < 2**32:
        return truth.astype(np.uint32)
    return truth


def _unique(name: str, taken: set[str]) -> str:
    unique, k = name, 2
    while unique in taken:
        unique, k = f"{name}-{k}", k + 1
    taken.add(unique)
    return unique
