"""Instance decoding: a network's three output maps (foreground, boundary, distance) to labels.

Instance networks (those ``microzoo train instances`` makes) output three probability-like maps
per pixel; :func:`instances_from_output` turns them into an instance label image with the
:class:`InstanceSettings` a package stores. Decoding is part of running a model, so it lives
here, below ``qc`` (which scores decoded labels) and ``train`` (which makes the targets, see
:mod:`microzoo.train.tasks.instance_targets`, and tunes the settings).

Decoding: pixels whose foreground exceeds ``foreground_threshold`` are the objects' area; the
seed map ``distance - boundary_weight * boundary`` above ``seed_threshold`` gives one connected
seed per object (seeds smaller than ``min_seed_size`` are noise and dropped); a watershed of
``-distance`` from those seeds, within the area, draws the objects; a connected part of the area
that holds no seed (an object too small or thin for its seed map to pass the threshold) becomes
an object of its own; objects smaller than ``min_size`` pixels are removed and ids are made
consecutive.

Decoding is local: the watershed runs on each connected part of the area (a clump of touching
objects) on its own, so how a clump is split depends on that clump alone. (One watershed over
the whole image breaks ties between equal seed values by the order of its heap, which depends on
every seed in the image.) A tile that holds a clump whole therefore decodes it exactly as the
whole image does, which is what stitching tiles relies on (:mod:`microzoo.runtime.stitch`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage as ndi
from skimage import segmentation

from microzoo.errors import DataError

#: Channels of the network output (and of the training targets): foreground, boundary, distance.
N_TARGET_CHANNELS = 3
FOREGROUND, BOUNDARY, DISTANCE = 0, 1, 2


class InstanceSettings(BaseModel):
    """How :func:`instances_from_output` turns the three output maps into labels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    foreground_threshold: float = Field(default=0.5, gt=0, lt=1, description="foreground above it is object area")
    seed_threshold: float = Field(
        default=0.5, gt=-1, lt=1, description="seed map (distance - boundary_weight * boundary) above it is a seed"
    )
    boundary_weight: float = Field(default=0.5, ge=0, description="how much the boundary map lowers the seed map")
    min_seed_size: int = Field(default=2, ge=1, description="seeds with fewer pixels are dropped as noise")
    min_size: int = Field(default=10, ge=0, description="objects with fewer pixels (voxels) are removed")


def instance_settings_of(descr: Any) -> InstanceSettings | None:
    """The :class:`InstanceSettings` a model description stores in
    ``config.microzoo.instance_settings`` (``None`` for a model that is not an instance model)."""
    extra = getattr(getattr(descr, "config", None), "model_extra", None) or {}
    stored = (extra.get("microzoo") or {}).get("instance_settings")
    return InstanceSettings.model_validate(stored) if stored else None


def check_instance_output(output: np.ndarray) -> np.ndarray:
    """``output`` as an array, if it is ``(3, *spatial)`` floating point; else a DataError."""
    output = np.asarray(output)
    if output.ndim not in (3, 4) or output.shape[0] != N_TARGET_CHANNELS:
        raise DataError(
            f"an instance network output must be ({N_TARGET_CHANNELS}, y, x) or "
            f"({N_TARGET_CHANNELS}, z, y, x) (foreground, boundary, distance), got shape {output.shape}"
        )
    if not np.issubdtype(output.dtype, np.floating):
        raise DataError(f"an instance network output must be floating point after the sigmoid, got {output.dtype}")
    return output


def instances_from_output(output: np.ndarray, *, settings: InstanceSettings) -> np.ndarray:
    """Label image (uint32, 0 = background, ids 1..n) from a network output after sigmoid.

    ``output`` is ``(N_TARGET_CHANNELS, *spatial)`` (foreground, boundary, distance; 2-D or
    3-D); it is not modified. The decoding is described in the module docstring.

    >>> output = np.zeros((3, 5, 9), np.float32); output[0, 1:4, 1:8] = 1
    >>> output[2, 2, 2:4] = output[2, 2, 5:7] = 1  # two seeds in one area
    >>> out = instances_from_output(output, settings=InstanceSettings(min_size=1))
    >>> out.dtype, int(out.max())
    (dtype('uint32'), 2)
    """
    output = check_instance_output(output)
    foreground = output[FOREGROUND]
    distance = output[DISTANCE].astype(np.float32)
    area = foreground > settings.foreground_threshold
    seed_map = distance - settings.boundary_weight * output[BOUNDARY]
    seeds, n_seeds = ndi.label(area & (seed_map > settings.seed_threshold))
    seed_sizes = np.bincount(seeds.ravel(), minlength=n_seeds + 1)
    seeds[seed_sizes[seeds] < settings.min_seed_size] = 0
    labels = _watershed_per_clump(-distance, seeds, area)
    # parts of the area that no seed reached (tiny or thin objects) become objects of their own
    unseeded, n_unseeded = ndi.label(area & (labels == 0))
    if n_unseeded:
        labels[unseeded > 0] = unseeded[unseeded > 0] + labels.max()
    sizes = np.bincount(labels.ravel())
    labels[sizes[labels] < settings.min_size] = 0
    labels, _ = consecutive_labels(labels)
    return labels.astype(np.uint32)


def _watershed_per_clump(image: np.ndarray, seeds: np.ndarray, area: np.ndarray) -> np.ndarray:
    """The watershed of ``image`` from ``seeds`` within ``area``, run on each connected part of
    ``area`` apart (module docstring); labels are the seeds' ids.

    A part with one seed is that seed's object whole (what the watershed gives), a part with
    none stays 0: only parts with several seeds need the watershed.
    """
    clumps, n_clumps = ndi.label(area)
    seeded = seeds > 0
    pairs = np.unique(np.stack([clumps[seeded], seeds[seeded]]), axis=1)  # (clump, seed), a seed lies in one clump
    n_seeds = np.bincount(pairs[0], minlength=n_clumps + 1)
    lookup = np.zeros(n_clumps + 1, dtype=seeds.dtype)
    single = n_seeds[pairs[0]] == 1
    lookup[pairs[0][single]] = pairs[1][single]
    labels = lookup[clumps]
    boxes = ndi.find_objects(clumps)
    for number in np.flatnonzero(n_seeds > 1):
        box = boxes[number - 1]
        inside = clumps[box] == number
        part = segmentation.watershed(image[box], np.where(inside, seeds[box], 0), mask=inside)
        labels[box][inside] = part[inside]
    return labels


def consecutive_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels renumbered 1..n in order of id (0 stays 0), and n.

    >>> consecutive_labels(np.array([[0, 7, 3]]))[0].tolist()
    [[0, 2, 1]]
    """
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids[0] != 0:
        ids, inverse = np.concatenate([[0], ids]), inverse + 1
    return inverse.reshape(labels.shape).astype(np.int32), len(ids) - 1
