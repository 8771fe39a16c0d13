"""Quality metrics: arrays in, numbers out.

Restoration (denoising, deconvolution, ...): :func:`psnr`, :func:`ssim`, :func:`nrmse`,
:func:`mae`, the per-image affine fit :func:`affine_fit` and :func:`restoration_metrics`,
which gives every figure raw and after the fit (``*_fitted``).

Semantic segmentation (integer class maps): :func:`semantic_metrics`.

Instance segmentation (label images): :func:`match_instances` and
:func:`instance_metrics_dataset` (from :mod:`microzoo.qc.metrics_instances`).

Detection (point lists): :func:`match_points`.

Every function checks shapes first, never changes its inputs and takes its options by
keyword. The argument order is ``(truth, pred)`` as in scikit-image, except
``affine_fit(pred, truth)``, which maps its first argument onto the second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from skimage.metrics import structural_similarity

from microzoo.errors import DataError
from microzoo.qc.metrics_instances import (
    DEFAULT_THRESHOLDS,
    InstanceMatching,
    divide,
    instance_metrics_dataset,
    instance_ratios,
    match_instances,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "InstanceMatching",
    "PointMatching",
    "affine_fit",
    "divide",
    "instance_metrics_dataset",
    "mean_class_iou",
    "instance_ratios",
    "iou_and_dice",
    "mae",
    "match_instances",
    "match_points",
    "nrmse",
    "point_ratios",
    "psnr",
    "restoration_metrics",
    "semantic_metrics",
    "ssim",
]


def _pair(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    if truth.shape != pred.shape:
        raise DataError(
            f"truth and prediction differ in shape: {truth.shape} vs {pred.shape}; "
            "compare images of the same size (crop or resample one of them)"
        )
    if truth.size == 0:
        raise DataError("the images are empty; give images with at least one pixel")
    return truth.astype(np.float64), pred.astype(np.float64)


def _check_range(data_range: float) -> float:
    if data_range is None or not np.isfinite(data_range) or data_range <= 0:
        raise DataError(
            f"data_range must be a positive number (the span of possible values, e.g. 255 "
            f"for 8-bit images), got {data_range}"
        )
    return float(data_range)


def psnr(truth: np.ndarray, pred: np.ndarray, *, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range² / MSE)``; inf when equal.

    >>> psnr(np.zeros(4), np.full(4, 0.1), data_range=1.0)
    20.0
    """
    truth, pred = _pair(truth, pred)
    data_range = _check_range(data_range)
    mse = float(np.mean((truth - pred) ** 2))
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(data_range**2 / mse))


def ssim(truth: np.ndarray, pred: np.ndarray, *, data_range: float) -> float:
    """Mean structural similarity (scikit-image, 7-pixel window, 2-D or 3-D); 1 when equal."""
    truth, pred = _pair(truth, pred)
    data_range = _check_range(data_range)
    if min(truth.shape) < 7:
        raise DataError(
            f"SSIM needs at least 7 pixels along every axis, the images are {truth.shape}; "
            "use larger images or leave SSIM out"
        )
    return float(structural_similarity(truth, pred, data_range=data_range))


def nrmse(truth: np.ndarray, pred: np.ndarray) -> float:
    """Root-mean-square error over the root-mean-square of the truth: ``||truth-pred|| / ||truth||``.

    0 is perfect; 1 is as far off as predicting zeros. Undefined (inf) when the truth is all
    zero and the prediction is not.
    """
    truth, pred = _pair(truth, pred)
    error = float(np.sqrt(np.mean((truth - pred) ** 2)))
    scale = float(np.sqrt(np.mean(truth**2)))
    if scale == 0:
        return 0.0 if error == 0 else float("inf")
    return error / scale


def mae(truth: np.ndarray, pred: np.ndarray) -> float:
    """Mean absolute error, in the images' units."""
    truth, pred = _pair(truth, pred)
    return float(np.mean(np.abs(truth - pred)))


def affine_fit(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Map ``pred`` onto ``truth`` by least squares: return ``a * pred + b`` (float64).

    The normalisation used in the CARE paper's evaluation (Weigert et al. 2018): it removes
    a difference in scale and offset between prediction and truth (images stretched each on
    its own, a network that outputs normalised values) so that only structure is compared.
    A constant prediction maps onto the mean of the truth.
    """
    truth, pred = _pair(truth, pred)
    pred_centred = pred - pred.mean()
    variance = float(np.sum(pred_centred**2))
    scale = float(np.sum(pred_centred * (truth - truth.mean())) / variance) if variance > 0 else 0.0
    return scale * pred_centred + truth.mean()


def restoration_metrics(truth: np.ndarray, pred: np.ndarray, *, data_range: float) -> dict[str, float]:
    """PSNR, SSIM, NRMSE and MAE, raw and after :func:`affine_fit` (keys with ``_fitted``).

    Keys: ``psnr``, ``ssim``, ``nrmse``, ``mae``, ``psnr_fitted``, ``ssim_fitted``,
    ``nrmse_fitted``, ``mae_fitted``.
    """
    truth, pred = _pair(truth, pred)
    fitted = affine_fit(pred, truth)
    figures: dict[str, float] = {}
    for suffix, candidate in (("", pred), ("_fitted", fitted)):
        figures[f"psnr{suffix}"] = psnr(truth, candidate, data_range=data_range)
        figures[f"ssim{suffix}"] = ssim(truth, candidate, data_range=data_range)
        figures[f"nrmse{suffix}"] = nrmse(truth, candidate)
        figures[f"mae{suffix}"] = mae(truth, candidate)
    return {key: figures[key] for key in sorted(figures, key=lambda k: (k.endswith("_fitted"), k))}


def iou_and_dice(intersection: ArrayLike, n_truth: ArrayLike, n_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """IoU ``i / (t + p - i)`` and Dice ``2i / (t + p)`` from pixel counts (arrays or numbers); NaN if both empty.

    >>> [float(v) for v in iou_and_dice(1, 2, 1)]
    [0.5, 0.6666666666666666]
    """
    intersection, n_truth, n_pred = (np.asarray(v, dtype=float) for v in (intersection, n_truth, n_pred))
    return divide(intersection, n_truth + n_pred - intersection), divide(2 * intersection, n_truth + n_pred)


def point_ratios(tp: ArrayLike, n_true: ArrayLike, n_pred: ArrayLike, sum_distance: ArrayLike) -> dict[str, np.ndarray]:
    """Detection figures from counts: F1 ``2TP/(n_true+n_pred)``, precision, recall, mean matched distance."""
    tp, n_true, n_pred, distance = (np.asarray(v, dtype=float) for v in (tp, n_true, n_pred, sum_distance))
    return {
        "f1": divide(2 * tp, n_true + n_pred),
        "precision": divide(tp, n_pred),
        "recall": divide(tp, n_true),
        "mean_distance": divide(distance, tp),
    }


def mean_class_iou(truth: np.ndarray, pred: np.ndarray, *, n_classes: int) -> float:
    """The one figure that picks a segmentation: mean IoU over the classes present in either map.

    With two classes only the foreground's (class 1) counts; 1.0 when no scored class is in
    either map (nothing to find, nothing found). Training's validation figure and the choice of
    the Otsu baseline's polarity both use it.

    >>> mean_class_iou(np.array([0, 1, 1]), np.array([0, 1, 0]), n_classes=2)
    0.5
    """
    classes = [1] if n_classes == 2 else list(range(n_classes))
    value = semantic_metrics(truth, pred, classes=classes)["mean_iou"]
    return 1.0 if np.isnan(value) else float(value)


def semantic_metrics(truth: np.ndarray, pred: np.ndarray, *, classes: Sequence[int] | None = None) -> dict:
    """Per-class IoU and Dice, and pixel accuracy, of two integer class maps.

    Parameters
    ----------
    truth, pred : ndarray of int
        Class maps of the same shape (any number of dimensions).
    classes : sequence of int, keyword-only
        The classes to score; by default every value found in either map.

    Returns
    -------
    dict
        ``pixel_accuracy`` (float: fraction of pixels whose class is right), ``iou`` and
        ``dice`` (dicts ``{class: float}``; NaN for a class in neither map), ``mean_iou`` and
        ``mean_dice`` (means over the classes where defined), and ``counts``
        (``{class: {"intersection", "truth", "pred"}}`` in pixels, for pooling over images).

    >>> semantic_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]))["iou"]
    {0: 0.5, 1: 0.5}
    """
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    if truth.shape != pred.shape:
        raise DataError(
            f"truth and prediction class maps differ in shape: {truth.shape} vs {pred.shape}; "
            "give maps of the same size"
        )
    for name, values in (("truth", truth), ("prediction", pred)):
        if not (np.issubdtype(values.dtype, np.integer) or values.dtype == bool):
            raise DataError(
                f"the {name} class map has dtype {values.dtype}; class maps must hold integer "
                "class ids: threshold or round it first"
            )
    if classes is None:
        classes = np.union1d(np.unique(truth), np.unique(pred)).tolist()
    counts, iou, dice = {}, {}, {}
    for value in classes:
        in_truth, in_pred = truth == value, pred == value
        intersection = int(np.count_nonzero(in_truth & in_pred))
        n_truth, n_pred = int(np.count_nonzero(in_truth)), int(np.count_nonzero(in_pred))
        key = int(value)
        counts[key] = {"intersection": intersection, "truth": n_truth, "pred": n_pred}
        iou[key], dice[key] = (float(v) for v in iou_and_dice(intersection, n_truth, n_pred))
    defined_iou = [v for v in iou.values() if not np.isnan(v)]
    defined_dice = [v for v in dice.values() if not np.isnan(v)]
    return {
        "pixel_accuracy": float(np.count_nonzero(truth == pred) / truth.size) if truth.size else float("nan"),
        "iou": iou,
        "dice": dice,
        "mean_iou": float(np.mean(defined_iou)) if defined_iou else float("nan"),
        "mean_dice": float(np.mean(defined_dice)) if defined_dice else float("nan"),
        "counts": counts,
    }


@dataclass(frozen=True)
class PointMatching:
    """One-to-one matching of detected points with true points within a distance.

    ``pairs`` is an ``(m, 3)`` array of ``(truth index, pred index, distance)`` rows.
    Ratios are NaN where their denominator is 0 (no points at all).
    """

    tolerance: float
    n_true: int
    n_pred: int
    tp: int
    pairs: np.ndarray

    @property
    def fp(self) -> int:
        return self.n_pred - self.tp

    @property
    def fn(self) -> int:
        return self.n_true - self.tp

    def ratios(self) -> dict[str, float]:
        """:func:`point_ratios` of this matching."""
        figures = point_ratios(self.tp, self.n_true, self.n_pred, self.pairs[:, 2].sum())
        return {name: float(value) for name, value in figures.items()}

    @property
    def precision(self) -> float:
        return self.ratios()["precision"]

    @property
    def recall(self) -> float:
        return self.ratios()["recall"]

    @property
    def f1(self) -> float:
        return self.ratios()["f1"]

    @property
    def mean_distance(self) -> float:
        return self.ratios()["mean_distance"]


def _points(points: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(points, dtype=float)
    if points.size == 0:
        return points.reshape(0, points.shape[-1] if points.ndim == 2 else 2)
    if points.ndim != 2:
        raise DataError(f"{name} points must be an (n, ndim) array of coordinates, got shape {points.shape}")
    return points


def match_points(truth_points: np.ndarray, pred_points: np.ndarray, *, tolerance: float) -> PointMatching:
    """Pair detected points with true points one-to-one (Hungarian) within ``tolerance``.

    The assignment first maximises the number of pairs closer than ``tolerance`` (inclusive),
    then minimises their total distance. Points are ``(n, ndim)`` arrays of coordinates in
    pixels, in the same axis order for both.

    >>> m = match_points(np.array([[0, 0], [10, 10]]), np.array([[1, 0]]), tolerance=2)
    >>> (m.tp, m.fp, m.fn)
    (1, 0, 1)
    """
    truth_points = _points(truth_points, "truth")
    pred_points = _points(pred_points, "predicted")
    if len(truth_points) and len(pred_points) and truth_points.shape[1] != pred_points.shape[1]:
        raise DataError(
            f"truth points have {truth_points.shape[1]} coordinates, predicted points "
            f"{pred_points.shape[1]}; give both in the same axes"
        )
    if not np.isfinite(tolerance) or tolerance <= 0:
        raise DataError(f"tolerance must be a positive distance in pixels, got {tolerance}")
    n_true, n_pred = len(truth_points), len(pred_points)
    if n_true == 0 or n_pred == 0:
        return PointMatching(float(tolerance), n_true, n_pred, 0, np.zeros((0, 3)))
    distance = cdist(truth_points, pred_points)
    close = distance <= tolerance
    costs = -close.astype(float) + np.minimum(distance / tolerance, 1) / (2 * min(n_true, n_pred))
    rows, cols = linear_sum_assignment(costs)
    ok = close[rows, cols]
    rows, cols = rows[ok], cols[ok]
    pairs = np.stack([rows, cols, distance[rows, cols]], axis=1).astype(float)
    return PointMatching(float(tolerance), n_true, n_pred, int(ok.sum()), pairs)
