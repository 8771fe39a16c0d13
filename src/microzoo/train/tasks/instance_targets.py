"""Instance segmentation as three-channel pixel classification: training targets, settings search, loss.

A network cannot output label ids directly; it is trained instead on three maps computed from
the instance label image (:func:`targets_from_labels`), and its output is turned back into
labels afterwards (:func:`microzoo.runtime.instances.instances_from_output`):

====  ============  ===============================================================
 ch   name          target
====  ============  ===============================================================
 0    foreground    1 inside any object, 0 on background
 1    boundary      1 on each object's own outermost pixels (``find_boundaries``,
                    ``mode="inner"``): against the background and against a
                    touching object, so two touching objects are parted by a
                    two-pixel line
 2    distance      Euclidean distance to the nearest pixel outside the object
                    (background or another object), divided by the object's
                    largest distance: 1 at each object's centre, near 0 at its
                    edge; the image border is not an edge (objects cut by it keep
                    rising towards it, as they would in the whole image)
====  ============  ===============================================================

All three are trained with a sigmoid output (:func:`instance_loss`), so the decoded output is
three probability-like maps in [0, 1].

Decoding the output back into labels (:func:`~microzoo.runtime.instances.instances_from_output`,
with its :class:`~microzoo.runtime.instances.InstanceSettings`) is part of running a model and
lives in :mod:`microzoo.runtime.instances`; here the thresholds are chosen on validation data
with :func:`optimize_instance_settings` and stored with the model.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from scipy import ndimage as ndi
from skimage import segmentation

from microzoo.errors import ConfigError, DataError
from microzoo.qc.metrics_instances import instance_metrics_dataset, match_instances
from microzoo.runtime.instances import (
    BOUNDARY,
    DISTANCE,
    FOREGROUND,
    N_TARGET_CHANNELS,
    InstanceSettings,
    check_instance_output,
    consecutive_labels,
    instances_from_output,
)

#: Weights of the foreground, boundary and distance terms in :func:`instance_loss`.
LOSS_WEIGHTS = (1.0, 1.0, 1.0)


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise DataError(
            f"an instance label image must be 2-D or 3-D, got shape {labels.shape}; remove channel or time axes first"
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise DataError(
            f"an instance label image must hold integer ids (0 = background), got dtype {labels.dtype}; "
            "convert it, e.g. with .astype(np.uint32)"
        )
    if labels.size and labels.min() < 0:
        raise DataError("the instance label image has negative ids; use 0 for background")
    return labels


def targets_from_labels(labels: np.ndarray) -> np.ndarray:
    """Training targets ``(N_TARGET_CHANNELS, *spatial)`` float32 from an instance label image.

    ``labels`` is 2-D or 3-D, 0 is background and ids need not be consecutive; it is not
    modified. See the module docstring for the three channels.

    >>> labels = np.zeros((7, 12), np.uint16); labels[1:6, 1:6] = 7; labels[1:6, 6:11] = 3
    >>> targets = targets_from_labels(labels)
    >>> targets.shape, targets[1, 3].tolist()
    ((3, 7, 12), [0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    >>> (3 * targets[2, 3]).tolist()
    [0.0, 1.0, 2.0, 3.0, 2.0, 1.0, 1.0, 2.0, 3.0, 2.0, 1.0, 0.0]
    """
    labels = _check_labels(labels)
    targets = np.zeros((N_TARGET_CHANNELS, *labels.shape), dtype=np.float32)
    if not labels.any():
        return targets
    targets[FOREGROUND] = labels > 0
    targets[BOUNDARY] = segmentation.find_boundaries(labels, mode="inner")
    compact, _ = consecutive_labels(labels)
    for number, box in enumerate(ndi.find_objects(compact), start=1):
        if box is None:
            continue
        # one pixel of context around the box: the nearest pixel outside the object is in it
        box = tuple(
            slice(max(s.start - 1, 0), min(s.stop + 1, size)) for s, size in zip(box, labels.shape, strict=True)
        )
        inside = compact[box] == number
        if inside.all():  # the object fills its box up to the image border: no edge in sight
            distance = np.ones(inside.shape)
        else:
            distance = ndi.distance_transform_edt(inside)
        view = targets[DISTANCE][box]
        view[inside] = distance[inside] / distance[inside].max()
    return targets


#: Candidates tried by :func:`optimize_instance_settings` when no grid is given.
DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "foreground_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
    "seed_threshold": (0.2, 0.3, 0.4, 0.5, 0.6, 0.7),
}


def optimize_instance_settings(
    outputs: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    iou_threshold: float = 0.5,
    grid: Mapping[str, Sequence[Any]] | None = None,
    base: InstanceSettings | None = None,
) -> tuple[InstanceSettings, dict[str, Any]]:
    """Choose the decoding settings that score best on validation images.

    Every combination of the ``grid`` values (field name -> candidate values; the other
    fields keep their ``base`` value, the defaults unless given) decodes every output; TP, FP
    and FN at ``iou_threshold`` are pooled over the images (StarDist's ``matching_dataset``)
    and the data-set F1 ranks the combinations. ``base`` itself is always a candidate, so the
    result is never worse than it on these images; ties go to ``base``, then to the earlier
    combination in grid order. The search is deterministic.

    Returns
    -------
    settings : InstanceSettings
        The best combination.
    table : dict
        ``{"metric": "f1", "iou_threshold": ..., "rows": [...], "best": int}``: one row per
        candidate (its settings, ``tp``, ``fp``, ``fn``, ``f1``, ``accuracy``), plain types for
        YAML or JSON; ``best`` indexes ``rows``.
    """
    outputs, labels = list(outputs), list(labels)
    if not outputs or len(outputs) != len(labels):
        raise DataError(
            f"give one label image per output and at least one pair, got {len(outputs)} outputs "
            f"and {len(labels)} label images"
        )
    if not 0 < iou_threshold <= 1:
        raise ConfigError(f"the IoU threshold must lie in (0, 1], got {iou_threshold}")
    truths = [_check_labels(truth) for truth in labels]
    for output, truth in zip(outputs, truths, strict=True):
        if check_instance_output(output).shape[1:] != truth.shape:
            raise DataError(
                f"an output of spatial shape {np.shape(output)[1:]} was given with labels of shape "
                f"{truth.shape}; give each output with its own label image"
            )
    base = base or InstanceSettings()
    grid = dict(DEFAULT_GRID if grid is None else grid)
    unknown = sorted(set(grid) - set(InstanceSettings.model_fields))
    if unknown or any(len(values) == 0 for values in grid.values()):
        raise ConfigError(
            f"the grid must map settings to non-empty lists of values; unknown settings {unknown}, "
            f"choose from {sorted(InstanceSettings.model_fields)}"
        )
    candidates = [base]
    names = list(grid)
    for values in itertools.product(*(grid[name] for name in names)):
        try:
            candidate = InstanceSettings.model_validate({**base.model_dump(), **dict(zip(names, values, strict=True))})
        except ValidationError as error:
            raise ConfigError(f"invalid grid values {dict(zip(names, values, strict=True))}: {error}") from error
        if candidate not in candidates:
            candidates.append(candidate)

    rows = []
    for candidate in candidates:
        pooled = instance_metrics_dataset(
            [
                match_instances(truth, instances_from_output(output, settings=candidate), thresholds=(iou_threshold,))
                for output, truth in zip(outputs, truths, strict=True)
            ]
        ).at(iou_threshold)
        rows.append(
            {
                **candidate.model_dump(),
                **{key: pooled[key] for key in ("tp", "fp", "fn")},
                "f1": _nan_to_zero(pooled["f1"]),
                "accuracy": _nan_to_zero(pooled["accuracy"]),
            }
        )
    best = max(range(len(rows)), key=lambda k: (rows[k]["f1"], -k))
    table = {"metric": "f1", "iou_threshold": float(iou_threshold), "rows": rows, "best": best}
    return candidates[best], table


def _nan_to_zero(value: float) -> float:
    return 0.0 if np.isnan(value) else float(value)


def instance_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Training loss for the three-channel instance targets.

    ``prediction`` holds the network's raw outputs (logits) and ``target`` the maps of
    :func:`targets_from_labels`, both ``(B, N_TARGET_CHANNELS, *spatial)``. Each channel is
    scored by binary cross-entropy with logits (on the distance channel with its soft targets
    in [0, 1], so a sigmoid decodes all three alike) and the three means are summed with
    :data:`LOSS_WEIGHTS`. The boundary term is averaged over all pixels like the others.
    """
    if prediction.shape != target.shape:
        raise DataError(
            f"prediction and target must have the same shape, got {tuple(prediction.shape)} and {tuple(target.shape)}"
        )
    if prediction.ndim < 3 or prediction.shape[1] != N_TARGET_CHANNELS:
        raise DataError(
            f"an instance prediction must be (B, {N_TARGET_CHANNELS}, ...) (foreground, boundary, "
            f"distance), got {tuple(prediction.shape)}"
        )
    target = target.to(dtype=prediction.dtype)
    losses = torch.nn.functional.binary_cross_entropy_with_logits(prediction, target, reduction="none")
    per_channel = losses.transpose(0, 1).reshape(N_TARGET_CHANNELS, -1).mean(dim=1)
    weights = torch.tensor(LOSS_WEIGHTS, dtype=prediction.dtype, device=prediction.device)
    return (per_channel * weights).sum()
