"""Instance segmentation metrics: one-to-one matching of objects by IoU.

The semantics are those of StarDist's ``stardist.matching.matching`` and
``matching_dataset`` (Schmidt et al. 2018; Weigert et al. 2020):

- the IoU of every truth object with every predicted object is computed from the label
  images (0 is background, ids need not be consecutive, 2-D or 3-D);
- for each IoU threshold, objects are paired one-to-one by the Hungarian assignment, which
  first maximises the number of pairs whose IoU reaches the threshold and, among those,
  the sum of IoU;
- a pair whose IoU reaches the threshold is a true positive (TP); unpaired predictions are
  false positives (FP), unpaired truth objects false negatives (FN);
- precision TP/(TP+FP), recall TP/(TP+FN), F1 2TP/(2TP+FP+FN), accuracy TP/(TP+FP+FN)
  (what the StarDist paper calls AP), panoptic quality sum(IoU of TP)/(TP+FP/2+FN/2) and the
  mean IoU of the matched pairs.

Among assignments with the most pairs at or above the threshold, StarDist prefers the one
with the largest IoU summed over all its pairs, those below the threshold included; microzoo
sums only the pairs that count. For thresholds of 0.5 and above, where an object can reach
the threshold with one partner at most, the two agree exactly.

Where StarDist writes 0 for a ratio whose denominator is 0 (precision with no prediction,
every ratio on an image with no object in either image), microzoo writes NaN: the figure is
undefined, not bad. Every defined figure equals StarDist's. A data set is scored by summing
TP, FP, FN and matched IoU over its images first (:func:`instance_metrics_dataset`), as
``matching_dataset(..., by_image=False)`` does, so such images do not weigh on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment

from microzoo.errors import DataError

#: IoU thresholds 0.5, 0.55, ..., 0.95 (the DSB2018 / COCO range).
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * step, 2) for step in range(10))


def divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` elementwise, NaN where the denominator is 0 (undefined, not bad).

    >>> divide([1, 1], [2, 0]).tolist()
    [0.5, nan]
    """
    numerator = np.asarray(numerator, dtype=float)
    denominator = np.asarray(denominator, dtype=float)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def instance_ratios(tp: ArrayLike, fp: ArrayLike, fn: ArrayLike, sum_matched_iou: ArrayLike) -> dict[str, np.ndarray]:
    """Every instance figure from the counts (arrays of any shape, e.g. per threshold or pooled).

    precision TP/(TP+FP), recall TP/(TP+FN), F1 2TP/(2TP+FP+FN), accuracy TP/(TP+FP+FN),
    panoptic quality sum(IoU of TP)/(TP+FP/2+FN/2), mean matched IoU sum(IoU of TP)/TP.
    """
    tp, fp, fn, iou = (np.asarray(v, dtype=float) for v in (tp, fp, fn, sum_matched_iou))
    return {
        "precision": divide(tp, tp + fp),
        "recall": divide(tp, tp + fn),
        "f1": divide(2 * tp, 2 * tp + fp + fn),
        "accuracy": divide(tp, tp + fp + fn),
        "panoptic_quality": divide(iou, tp + fp / 2 + fn / 2),
        "mean_matched_iou": divide(iou, tp),
    }


@dataclass(frozen=True)
class InstanceMatching:
    """Counts of one image's (or a pooled data set's) matching, one entry per threshold.

    ``tp``, ``fp``, ``fn`` and ``sum_matched_iou`` are arrays aligned with ``thresholds``.
    ``pairs[k]`` holds the matched ``(truth_id, pred_id, iou)`` rows at ``thresholds[k]`` as an
    ``(m, 3)`` float array, for one image; it is empty for a pooled data set. The ratios are
    properties; :meth:`at` gives every figure at one threshold as a dict.
    """

    thresholds: tuple[float, ...]
    n_true: int
    n_pred: int
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    sum_matched_iou: np.ndarray
    pairs: tuple[np.ndarray, ...] = ()

    def ratios(self) -> dict[str, np.ndarray]:
        """:func:`instance_ratios` of these counts, one value per threshold."""
        return instance_ratios(self.tp, self.fp, self.fn, self.sum_matched_iou)

    @property
    def precision(self) -> np.ndarray:
        return self.ratios()["precision"]

    @property
    def recall(self) -> np.ndarray:
        return self.ratios()["recall"]

    @property
    def f1(self) -> np.ndarray:
        return self.ratios()["f1"]

    @property
    def accuracy(self) -> np.ndarray:
        return self.ratios()["accuracy"]

    @property
    def panoptic_quality(self) -> np.ndarray:
        return self.ratios()["panoptic_quality"]

    @property
    def mean_matched_iou(self) -> np.ndarray:
        return self.ratios()["mean_matched_iou"]

    def at(self, threshold: float) -> dict[str, float]:
        """Every figure at one of ``thresholds``: counts and ratios, as plain numbers."""
        matches = [k for k, value in enumerate(self.thresholds) if abs(value - threshold) < 1e-9]
        if not matches:
            raise DataError(
                f"threshold {threshold} was not computed; choose one of {list(self.thresholds)} "
                "or match again with it in thresholds="
            )
        k = matches[0]
        return {
            "threshold": float(self.thresholds[k]),
            "n_true": int(self.n_true),
            "n_pred": int(self.n_pred),
            "tp": int(self.tp[k]),
            "fp": int(self.fp[k]),
            "fn": int(self.fn[k]),
            **{name: float(values[k]) for name, values in self.ratios().items()},
        }


def _check_labels(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    if truth.shape != pred.shape:
        raise DataError(
            f"truth and prediction label images differ in shape: {truth.shape} vs {pred.shape}; "
            "give label images of the same size"
        )
    if truth.ndim not in (2, 3):
        raise DataError(
            f"label images must be 2-D or 3-D, got {truth.ndim} dimensions {truth.shape}; "
            "remove channel or time axes first"
        )
    for name, labels in (("truth", truth), ("prediction", pred)):
        if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
            raise DataError(
                f"the {name} label image has dtype {labels.dtype}; instance labels must be "
                "integers (0 = background): convert it, e.g. with .astype(np.uint32)"
            )
        if labels.size and labels.min() < 0:
            raise DataError(f"the {name} label image has negative ids; use 0 for background")
    return truth, pred


def _iou_matrix(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every truth object (rows) with every predicted object (columns), and the ids."""
    true_ids, true_index = np.unique(truth, return_inverse=True)
    pred_ids, pred_index = np.unique(pred, return_inverse=True)
    # make index 0 the background whether or not 0 occurs
    if true_ids.size == 0 or true_ids[0] != 0:
        true_ids, true_index = np.concatenate([[0], true_ids]), true_index + 1
    if pred_ids.size == 0 or pred_ids[0] != 0:
        pred_ids, pred_index = np.concatenate([[0], pred_ids]), pred_index + 1
    n_t, n_p = true_ids.size, pred_ids.size
    overlap = np.bincount(true_index.ravel() * n_p + pred_index.ravel(), minlength=n_t * n_p).reshape(n_t, n_p)
    true_sizes = overlap.sum(axis=1, keepdims=True)
    pred_sizes = overlap.sum(axis=0, keepdims=True)
    union = true_sizes + pred_sizes - overlap
    iou = divide(overlap, union)[1:, 1:]
    return np.nan_to_num(iou), true_ids[1:], pred_ids[1:]


def match_instances(
    truth: np.ndarray,
    pred: np.ndarray,
    *,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> InstanceMatching:
    """Match the objects of two label images one-to-one by IoU, at each threshold.

    Parameters
    ----------
    truth, pred : ndarray of int
        2-D or 3-D label images of the same shape; 0 is background, ids need not be
        consecutive.
    thresholds : sequence of float, keyword-only
        IoU thresholds in (0, 1]; a pair counts as a true positive when its IoU reaches one.

    Returns
    -------
    InstanceMatching
        TP, FP, FN and summed matched IoU per threshold, and the matched pairs.

    >>> truth = np.zeros((4, 4), int); truth[:2, :2] = 1
    >>> match_instances(truth, truth, thresholds=(0.5,)).at(0.5)["f1"]
    1.0
    """
    truth, pred = _check_labels(truth, pred)
    thresholds = tuple(float(t) for t in thresholds)
    if not thresholds or any(not 0 < t <= 1 for t in thresholds):
        raise DataError(f"IoU thresholds must lie in (0, 1], got {list(thresholds)}")
    iou, true_ids, pred_ids = _iou_matrix(truth, pred)
    n_true, n_pred = len(true_ids), len(pred_ids)
    n_pairs_max = min(n_true, n_pred)
    tp, sums, pairs = [], [], []
    for threshold in thresholds:
        if n_pairs_max == 0:
            tp.append(0)
            sums.append(0.0)
            pairs.append(np.zeros((0, 3)))
            continue
        # StarDist's cost: -1 for each pair at or above the threshold dominates; the IoU term
        # (summing to at most 1/2) breaks ties towards the larger total IoU. Unlike StarDist,
        # only pairs that reach the threshold enter the tie-break, so a pair below it cannot
        # cost a better one its match (possible only for thresholds below 0.5).
        reaches = iou >= threshold
        costs = -np.where(reaches, 1 + iou / (2 * n_pairs_max), 0.0)
        rows, cols = linear_sum_assignment(costs)
        ok = reaches[rows, cols]
        rows, cols = rows[ok], cols[ok]
        tp.append(int(ok.sum()))
        sums.append(float(iou[rows, cols].sum()))
        pairs.append(np.stack([true_ids[rows], pred_ids[cols], iou[rows, cols]], axis=1).astype(float))
    tp_array = np.asarray(tp, dtype=np.int64)
    return InstanceMatching(
        thresholds=thresholds,
        n_true=n_true,
        n_pred=n_pred,
        tp=tp_array,
        fp=n_pred - tp_array,
        fn=n_true - tp_array,
        sum_matched_iou=np.asarray(sums, dtype=float),
        pairs=tuple(pairs),
    )


def instance_metrics_dataset(matchings: Sequence[InstanceMatching]) -> InstanceMatching:
    """Pool the matchings of a data set's images: sum TP, FP, FN and matched IoU, then divide.

    This is StarDist's ``matching_dataset(..., by_image=False)``: large images with many
    objects weigh more than small ones, and images with no objects count for nothing.
    """
    matchings = list(matchings)
    if not matchings:
        raise DataError("no matchings to pool: evaluate at least one image")
    thresholds = matchings[0].thresholds
    if any(m.thresholds != thresholds for m in matchings):
        raise DataError("the matchings were made at different IoU thresholds; use the same ones")
    return InstanceMatching(
        thresholds=thresholds,
        n_true=sum(m.n_true for m in matchings),
        n_pred=sum(m.n_pred for m in matchings),
        tp=np.sum([m.tp for m in matchings], axis=0),
        fp=np.sum([m.fp for m in matchings], axis=0),
        fn=np.sum([m.fn for m in matchings], axis=0),
        sum_matched_iou=np.sum([m.sum_matched_iou for m in matchings], axis=0),
    )
