"""Layers written as files for the library: the images (and their truths) a widget hands to a verb that reads folders.

napari holds images in memory; ``microzoo select`` (and training) read folders of files paired by
name. :func:`write_pairs` writes each image layer and its truth as TIFF (microzoo's writer, atomic)
into ``FOLDER/images`` and ``FOLDER/truth``; the widgets put ``FOLDER`` under the settings' cache folder.
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


def write_pairs(pairs: Sequence[LayerPair], folder: Path) -> tuple[Path, Path | None]:
    """Write the images (and truths) of ``pairs`` as TIFF into ``folder/images`` (and ``folder/truth``),
    paired by file name; a 3-D grey layer is a stack of 2-D images (one file per plane)."""
    from microzoo.io.write import write_image

    with_truth = [p.truth is not None for p in pairs]
    if any(with_truth) and not all(with_truth):
        missing = ", ".join(p.name for p in pairs if p.truth is None)
        raise DataError(f"give a truth layer for every image or for none: {missing} has none")
    taken: set[str] = set()
    for pair in pairs:
        image = np.asarray(pair.image)
        spatial = image.ndim - pair.rgb  # a stack's planes and y, x
        if spatial not in (2, 3) or (pair.rgb and spatial != 2):
            raise DataError(f"the layer {pair.name} is {image.shape}: give 2-D images (or a stack of 2-D grey images)")
        planes = [image] if spatial == 2 else list(image)
        truths: list[Any] = [None] * len(planes)
        if pair.truth is not None:
            truth = np.asarray(pair.truth)
            if truth.shape[:spatial] != image.shape[:spatial]:
                raise DataError(
                    f"the truth of {pair.name} is {truth.shape[:spatial]} pixels and the image "
                    f"{image.shape[:spatial]}: pick the truth layer drawn on this image"
                )
            truths = [truth] if spatial == 2 else list(truth)
        stem = _unique(re.sub(r"[^A-Za-z0-9._-]+", "_", pair.name).strip("_.") or "image", taken)
        for k, (plane, truth) in enumerate(zip(planes, truths, strict=True)):
            name = stem if len(planes) == 1 else f"{stem}-{k:03d}"
            write_image(folder / "images" / f"{name}.tif", plane, "yxc" if pair.rgb else "yx")
            if truth is not None:
                write_image(folder / "truth" / f"{name}.tif", _storable(truth), "yx" if truth.ndim == 2 else "yxc")
    return folder / "images", (folder / "truth" if all(with_truth) else None)


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
