"""The report's image panels, one pair of drawing functions per QC task.

Each :class:`~microzoo.qc.tasks.QCTask` names its ``show`` (draw a truth or a prediction) and
its ``show_errors`` (draw every method's errors against the truth, one axes each). They draw on
matplotlib axes they are given and import no plotting state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from microzoo.qc import metrics

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from microzoo.qc.tasks import TaskSettings


def plane(array: np.ndarray, *, colour: bool = False) -> np.ndarray:
    """A 2-D view for display: the middle plane of a volume, RGB kept when asked for."""
    array = np.asarray(array)
    if colour and array.ndim == 3 and array.shape[-1] in (3, 4):
        return array[..., :3]
    while array.ndim > 2:
        array = array[array.shape[0] // 2]
    return array


def stretch(array: np.ndarray) -> np.ndarray:
    """Percentiles 1 and 99.8 to 0 and 1, clipped."""
    array = array.astype(float)
    low, high = np.percentile(array, (1, 99.8))
    return np.clip((array - low) / (high - low), 0, 1) if high > low else np.zeros_like(array)


def background(inputs: Sequence[np.ndarray] | None, truth: np.ndarray, index: int) -> np.ndarray:
    """A grey RGB picture to draw errors on: the input if there is one, else black."""
    if inputs is not None:
        picture = plane(inputs[index], colour=True)
        grey = picture.mean(axis=-1) if picture.ndim == 3 else picture
        if grey.shape == plane(truth).shape:
            return np.repeat(0.6 * stretch(grey)[..., None], 3, axis=-1)
    return np.zeros((*plane(truth).shape, 3))


# ---------------------------------------------------------------- show one image


def show_intensities(ax: Axes, array: np.ndarray, *, settings: TaskSettings, background: np.ndarray) -> None:
    ax.imshow(stretch(plane(array)), cmap="gray")


def show_instances(ax: Axes, array: np.ndarray, *, settings: TaskSettings, background: np.ndarray) -> None:
    from skimage.color import label2rgb

    ax.imshow(label2rgb(plane(array), bg_label=0))


def show_classes(ax: Axes, array: np.ndarray, *, settings: TaskSettings, background: np.ndarray) -> None:
    index = np.searchsorted(settings["classes"], plane(array))  # class ids -> 0, 1, ...
    ax.imshow(index, cmap="tab10", vmin=0, vmax=9, interpolation="nearest")


def show_points(ax: Axes, array: np.ndarray, *, settings: TaskSettings, background: np.ndarray) -> None:
    ax.imshow(background)
    ax.plot(array[:, -1], array[:, -2], "o", ms=3, mfc="none", color="yellow")


# ---------------------------------------------------------------- show every method's errors


def restoration_errors(
    axes: Sequence[Axes],
    figure: Figure,
    truth: np.ndarray,
    preds: Sequence[np.ndarray],
    *,
    settings: TaskSettings,
    background: np.ndarray,
    main_metric: str,
) -> None:
    """|prediction - truth| on one colour scale for the row (after the affine fit for fitted metrics)."""
    fitted = main_metric.endswith("_fitted")
    errors = [np.abs(plane(metrics.affine_fit(p, truth) if fitted else p.astype(float)) - plane(truth)) for p in preds]
    vmax = max(float(np.percentile(e, 99.5)) for e in errors) or 1.0
    for k, (ax, error) in enumerate(zip(axes, errors, strict=True)):
        image = ax.imshow(error, cmap="magma", vmin=0, vmax=vmax)
        if k == len(errors) - 1:
            figure.colorbar(image, cax=ax.inset_axes((1.04, 0.0, 0.06, 1.0)))


def instance_errors(
    axes: Sequence[Axes],
    figure: Figure,
    truth: np.ndarray,
    preds: Sequence[np.ndarray],
    *,
    settings: TaskSettings,
    background: np.ndarray,
    main_metric: str,
) -> None:
    """Green matched, red false positive, blue missed objects at the reported IoU threshold."""
    for ax, pred in zip(axes, preds, strict=True):
        matching = metrics.match_instances(truth, pred, thresholds=(settings["reported_at"],))
        true_plane, pred_plane = plane(truth), plane(pred)
        matched_true, matched_pred = matching.pairs[0][:, 0], matching.pairs[0][:, 1]
        picture = background.copy()
        layers = (
            (np.isin(pred_plane, matched_pred) & (pred_plane > 0), (0.2, 0.8, 0.2)),
            ((pred_plane > 0) & ~np.isin(pred_plane, matched_pred), (0.95, 0.15, 0.1)),
            ((true_plane > 0) & ~np.isin(true_plane, matched_true), (0.2, 0.4, 1.0)),
        )
        for mask, colour in layers:
            picture[mask] = 0.45 * picture[mask] + 0.55 * np.asarray(colour)
        ax.imshow(picture)


def semantic_errors(
    axes: Sequence[Axes],
    figure: Figure,
    truth: np.ndarray,
    preds: Sequence[np.ndarray],
    *,
    settings: TaskSettings,
    background: np.ndarray,
    main_metric: str,
) -> None:
    """Pixels of the wrong class in red."""
    for ax, pred in zip(axes, preds, strict=True):
        picture = background.copy()
        picture[plane(pred) != plane(truth)] = (0.95, 0.15, 0.1)
        ax.imshow(picture)


def detection_errors(
    axes: Sequence[Axes],
    figure: Figure,
    truth: np.ndarray,
    preds: Sequence[np.ndarray],
    *,
    settings: TaskSettings,
    background: np.ndarray,
    main_metric: str,
) -> None:
    """Green matched, red x false detections, blue o missed points."""
    for ax, pred in zip(axes, preds, strict=True):
        matching = metrics.match_points(truth, pred, tolerance=settings["tolerance"])
        ax.imshow(background)
        hit_true, hit_pred = matching.pairs[:, 0].astype(int), matching.pairs[:, 1].astype(int)
        missed = np.setdiff1d(np.arange(len(truth)), hit_true)
        false = np.setdiff1d(np.arange(len(pred)), hit_pred)
        for points, style, colour in ((pred[hit_pred], "o", "#2ca02c"), (pred[false], "x", "#d62728"),
                                      (truth[missed], "o", "#4a7bff")):  # fmt: skip
            if len(points):
                ax.plot(points[:, -1], points[:, -2], style, ms=5, mfc="none", color=colour)
