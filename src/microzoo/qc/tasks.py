"""One definition per QC task: what is scored, the figures, which one ranks, how to read them.

Each task is a :class:`QCTask` in :data:`TASKS`; :func:`~microzoo.qc.evaluate.evaluate`, the
report (:mod:`microzoo.qc.report`, :mod:`microzoo.qc.panels`) and
:func:`~microzoo.qc.compare.compare` read it instead of asking for the task by name. To add a
task, write its scorer (image pair -> additive vector, sums -> figures) and its panels, and
register a :class:`QCTask` here.

A scorer reduces each image pair to a vector of additive numbers (TP/FP/FN counts for objects,
pixel counts per class, metric values and their "defined" flags for restoration), so the
data-set figure is computed from sums over images, as StarDist's ``matching_dataset`` does, and
a bootstrap resample is one weighted sum.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from microzoo.errors import DataError
from microzoo.io.axes import to_grayscale
from microzoo.qc import metrics, panels
from microzoo.qc.metrics import divide, instance_ratios, iou_and_dice, point_ratios

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from microzoo.runtime.instances import InstanceSettings

__all__ = [
    "QCTask",
    "Scorer",
    "ScorerFactory",
    "ShowErrors",
    "ShowImage",
    "TASKS",
    "TaskSettings",
    "as_intensities",
    "as_labels",
    "check_finite",
    "get_task",
]

#: What a task's scorer chose (data range, classes, IoU thresholds, tolerance): recorded in
#: ``metrics.json`` and read by the panels. Its values are JSON values, typed as ``json.load``
#: types them.
TaskSettings = dict[str, Any]


@dataclass(frozen=True)
class Scorer:
    """How one task turns an image pair into additive numbers and sums back into figures."""

    vectorize: Callable[[np.ndarray, np.ndarray], np.ndarray]
    aggregate: Callable[[np.ndarray], dict[str, np.ndarray]]  # sums (..., k) -> figures (...)
    headline: tuple[str, ...]


class ScorerFactory(Protocol):
    """A task's ``scorer``: its :class:`Scorer` for these images, and the settings it chose.

    Every task receives every option; each reads the ones it needs (``data_range`` for
    restoration, ``thresholds`` for instances, ``tolerance`` for detection).
    """

    def __call__(
        self,
        truths: Sequence[np.ndarray],
        predictions: Mapping[str, Sequence[np.ndarray]],
        *,
        data_range: float | None = ...,
        thresholds: Sequence[float] = ...,
        tolerance: float | None = ...,
    ) -> tuple[Scorer, TaskSettings]: ...


class ShowImage(Protocol):
    """A task's ``show``: draw one truth or prediction on ``ax``."""

    def __call__(self, ax: Axes, array: np.ndarray, *, settings: TaskSettings, background: np.ndarray) -> None: ...


class ShowErrors(Protocol):
    """A task's ``show_errors``: draw each prediction's errors against ``truth``, one axes each."""

    def __call__(
        self,
        axes: Sequence[Axes],
        figure: Figure,
        truth: np.ndarray,
        preds: Sequence[np.ndarray],
        *,
        settings: TaskSettings,
        background: np.ndarray,
        main_metric: str,
    ) -> None: ...


def _nanmean(stack: list[np.ndarray]) -> np.ndarray:
    values = np.stack(stack, axis=-1)
    defined = ~np.isnan(values)
    return divide(np.where(defined, values, 0).sum(axis=-1), defined.sum(axis=-1))


# ---------------------------------------------------------------- scorers


def _restoration_scorer(
    truths: Sequence[np.ndarray],
    predictions: Mapping[str, Sequence[np.ndarray]],
    *,
    data_range: float | None = None,
    **_: object,
) -> tuple[Scorer, TaskSettings]:
    if data_range is None:
        low = min(float(np.min(t)) for t in truths)
        data_range = max(float(np.max(t)) for t in truths) - low
        if not np.isfinite(data_range) or data_range <= 0:
            raise DataError("the truth images are constant or not finite; give data_range= (e.g. 255 for 8-bit)")
    names = ("psnr", "ssim", "nrmse", "mae", "psnr_fitted", "ssim_fitted", "nrmse_fitted", "mae_fitted")

    span = float(data_range)

    def vectorize(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
        figures = metrics.restoration_metrics(truth, pred, data_range=span)
        values = np.array([figures[name] for name in names])
        defined = ~np.isnan(values)
        return np.concatenate([np.where(defined, values, 0.0), defined.astype(float)])

    def aggregate(sums: np.ndarray) -> dict[str, np.ndarray]:
        k = len(names)
        return {name: divide(sums[..., i], sums[..., k + i]) for i, name in enumerate(names)}

    return Scorer(vectorize, aggregate, names), {"data_range": span}


def _semantic_scorer(
    truths: Sequence[np.ndarray], predictions: Mapping[str, Sequence[np.ndarray]], **_: object
) -> tuple[Scorer, TaskSettings]:
    found: set[int] = set()
    for array in itertools.chain(truths, *predictions.values()):
        found.update(np.unique(array).tolist())
    classes = sorted(int(c) for c in found)

    def vectorize(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
        figures = metrics.semantic_metrics(truth, pred, classes=classes)
        counts = [figures["counts"][c][key] for c in classes for key in ("intersection", "truth", "pred")]
        correct = figures["pixel_accuracy"] * truth.size
        return np.array([*counts, round(correct), truth.size], dtype=float)

    def aggregate(sums: np.ndarray) -> dict[str, np.ndarray]:
        out = {"pixel_accuracy": divide(sums[..., -2], sums[..., -1])}
        pairs = [
            iou_and_dice(sums[..., 3 * i], sums[..., 3 * i + 1], sums[..., 3 * i + 2]) for i in range(len(classes))
        ]
        ious, dices = [p[0] for p in pairs], [p[1] for p in pairs]
        out["mean_iou"], out["mean_dice"] = _nanmean(ious), _nanmean(dices)
        out.update({f"iou[{c}]": v for c, v in zip(classes, ious, strict=True)})
        out.update({f"dice[{c}]": v for c, v in zip(classes, dices, strict=True)})
        return out

    headline = ("mean_iou", "mean_dice", "pixel_accuracy", *(f"iou[{c}]" for c in classes))
    return Scorer(vectorize, aggregate, headline), {"classes": classes}


def _instances_scorer(
    truths: Sequence[np.ndarray],
    predictions: Mapping[str, Sequence[np.ndarray]],
    *,
    thresholds: Sequence[float] = metrics.DEFAULT_THRESHOLDS,
    **_: object,
) -> tuple[Scorer, TaskSettings]:
    levels = tuple(float(t) for t in thresholds)
    report_at = 0.5 if any(abs(t - 0.5) < 1e-9 for t in levels) else levels[0]
    n = len(levels)

    def vectorize(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
        m = metrics.match_instances(truth, pred, thresholds=levels)
        return np.concatenate([m.tp, m.fp, m.fn, m.sum_matched_iou]).astype(float)

    def aggregate(sums: np.ndarray) -> dict[str, np.ndarray]:
        tp, fp, fn, iou = (sums[..., j * n : (j + 1) * n] for j in range(4))
        figures = instance_ratios(tp, fp, fn, iou)
        out = {f"{name}@{t:g}": values[..., k] for name, values in figures.items() for k, t in enumerate(levels)}
        out["mean_accuracy"] = _nanmean([figures["accuracy"][..., k] for k in range(n)])
        out["n_true"], out["n_pred"] = tp[..., 0] + fn[..., 0], tp[..., 0] + fp[..., 0]
        return out

    at = f"{report_at:g}"
    headline = tuple(f"{name}@{at}" for name in ("f1", "precision", "recall", "accuracy", "panoptic_quality"))
    settings = {"iou_thresholds": list(levels), "reported_at": report_at}
    return Scorer(vectorize, aggregate, (*headline, "mean_accuracy")), settings


def _detection_scorer(
    truths: Sequence[np.ndarray],
    predictions: Mapping[str, Sequence[np.ndarray]],
    *,
    tolerance: float | None = None,
    **_: object,
) -> tuple[Scorer, TaskSettings]:
    if tolerance is None:
        raise DataError(
            "detection needs tolerance=: the largest distance in pixels at which a detected "
            "point still counts as finding a true one (e.g. a nucleus radius)"
        )

    distance = float(tolerance)

    def vectorize(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
        m = metrics.match_points(truth, pred, tolerance=distance)
        return np.array([m.tp, m.n_true, m.n_pred, m.pairs[:, 2].sum()], dtype=float)

    def aggregate(sums: np.ndarray) -> dict[str, np.ndarray]:
        return point_ratios(*(sums[..., j] for j in range(4)))

    return Scorer(vectorize, aggregate, ("f1", "precision", "recall", "mean_distance")), {"tolerance": distance}


# ---------------------------------------------------------------- model outputs (compare)


def _restoration_from_output(channels: np.ndarray, settings: InstanceSettings | None) -> np.ndarray:
    return channels[0].astype(np.float64)


def _semantic_from_output(channels: np.ndarray, settings: InstanceSettings | None) -> np.ndarray:
    if channels.shape[0] > 1:  # a softmax over classes
        return np.argmax(channels, axis=0).astype(np.int64)
    return (channels[0] > 0.5).astype(np.int64)


def _instances_from_output(channels: np.ndarray, settings: InstanceSettings | None) -> np.ndarray:
    if settings is not None:  # a microzoo-trained instance network: its own decoding
        from microzoo.runtime.instances import instances_from_output

        return instances_from_output(channels, settings=settings).astype(np.int64)
    from microzoo.qc.classical import watershed_instances

    return watershed_instances(channels[0], smoothing_sigma=0.0, polarity="bright").astype(np.int64)


def check_finite(
    truths: Sequence[np.ndarray], predictions: Mapping[str, Sequence[np.ndarray]], names: Sequence[str]
) -> None:
    """Refuse restoration images with NaN or infinite pixels, naming the file and the count."""
    problems = []
    for role, arrays in (("truth", truths), *((f"prediction ({m})", a) for m, a in predictions.items())):
        for name, array in zip(names, arrays, strict=True):
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            if bad:
                problems.append(f"{role} {name}: {bad} of {np.size(array)} pixels")
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise DataError(
            f"NaN or infinite pixels, which no restoration figure can score: {shown}. Replace them (e.g. "
            "numpy.nan_to_num) or crop them out, then evaluate again"
        )


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class QCTask:
    """Everything microzoo knows about scoring one kind of result.

    ``scorer(truths, predictions, **options)`` returns a :class:`Scorer` and the settings it
    chose (recorded in ``metrics.json``); ``labels`` says truth and predictions are integer
    images (0 = background); ``from_output`` turns a model's output, channels first, into a
    prediction (None: ``compare`` does not run this task); ``show`` and ``show_errors`` draw
    the report's panels (:mod:`microzoo.qc.panels`); ``check(truths, predictions, names)``
    refuses inputs the figures cannot score.
    """

    name: str
    what: str
    main_metric: str
    lower_is_better: frozenset[str]
    how_to_read: str
    labels: bool
    scorer: ScorerFactory
    show: ShowImage
    show_errors: ShowErrors
    from_output: Callable[[np.ndarray, InstanceSettings | None], np.ndarray] | None = None
    threshold_curves: bool = False
    check: Callable[[Sequence[np.ndarray], Mapping[str, Sequence[np.ndarray]], Sequence[str]], None] | None = None

    def higher_is_better(self, metric: str) -> bool:
        """Whether a larger value of ``metric`` is better (false for errors and distances)."""
        return metric not in self.lower_is_better


TASKS: Mapping[str, QCTask] = {
    task.name: task
    for task in (
        QCTask(
            name="restoration",
            what="images (denoised, deconvolved, ...) against clean images",
            main_metric="psnr_fitted",
            lower_is_better=frozenset({"nrmse", "mae", "nrmse_fitted", "mae_fitted"}),
            how_to_read="PSNR (dB) and SSIM: higher is better; NRMSE and MAE: lower is better. "
            "'fitted' figures are computed after mapping each prediction onto its truth by a least-squares "
            "scale and offset (a·pred + b), which forgives a global brightness or contrast difference; "
            "compare methods on them when predictions and truth are scaled differently (normalised network "
            "outputs, images stretched one by one). The error maps show |prediction − truth| on one colour "
            "scale per row.",
            labels=False,
            scorer=_restoration_scorer,
            show=panels.show_intensities,
            show_errors=panels.restoration_errors,
            from_output=_restoration_from_output,
            check=check_finite,
        ),
        QCTask(
            name="semantic",
            what="integer class maps (0 = background)",
            main_metric="mean_iou",
            lower_is_better=frozenset(),
            how_to_read="IoU = overlap / union and Dice = 2·overlap / (truth + prediction) per class, from "
            "pixel counts pooled over all images; mean IoU averages the classes. Error maps: red pixels got "
            "the wrong class.",
            labels=True,
            scorer=_semantic_scorer,
            show=panels.show_classes,
            show_errors=panels.semantic_errors,
            from_output=_semantic_from_output,
        ),
        QCTask(
            name="instances",
            what="instance label images (0 = background, one id per object)",
            main_metric="f1@0.5",
            lower_is_better=frozenset(),
            how_to_read="Objects are paired one-to-one by IoU (Hungarian assignment, as in StarDist); a pair "
            "at or above the IoU threshold is a true positive (TP), an unpaired prediction a false positive "
            "(FP), an unpaired true object a false negative (FN). F1 = 2TP/(2TP+FP+FN); accuracy = "
            "TP/(TP+FP+FN) (the StarDist paper's AP); panoptic quality = summed IoU of the TPs / "
            "(TP+FP/2+FN/2); mean accuracy averages accuracy over IoU 0.5 to 0.95. Counts are pooled over "
            "images before dividing. Error maps: green = matched, red = false positive, blue = missed object.",
            labels=True,
            scorer=_instances_scorer,
            show=panels.show_instances,
            show_errors=panels.instance_errors,
            from_output=_instances_from_output,
            threshold_curves=True,
        ),
        QCTask(
            name="detection",
            what="point lists (CSV of z/y/x) or label images whose object centroids are the points",
            main_metric="f1",
            lower_is_better=frozenset({"mean_distance"}),
            how_to_read="Detected points are paired one-to-one with true points within the tolerance "
            "(Hungarian assignment). Markers: green = matched, red × = false detection, blue ○ = missed point.",
            labels=True,
            scorer=_detection_scorer,
            show=panels.show_points,
            show_errors=panels.detection_errors,
        ),
    )
}


def get_task(name: str, *, runnable: bool = False) -> QCTask:
    """The :class:`QCTask` called ``name``; with ``runnable``, only tasks ``compare`` can run."""
    choices = [t for t in TASKS if not runnable or TASKS[t].from_output is not None]
    if name not in choices:
        raise DataError(f"unknown task {name!r}; choose one of {', '.join(choices)}")
    return TASKS[name]


def as_labels(array: np.ndarray, *, task: str, where: str) -> np.ndarray:
    """An integer label (or class) image from ``array``, or a DataError naming ``where``.

    The one check ``evaluate`` and ``compare`` both apply to label truths and predictions:
    booleans and whole-number floats are accepted; fractions (probability maps), NaN and
    negative values are refused.
    """
    array = np.squeeze(np.asarray(array))
    if array.dtype == bool:
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.all(np.isfinite(array)):
            raise DataError(
                f"{where} holds non-finite or non-numeric values; {task} needs integer labels (0 = background)"
            )
        if not np.array_equal(array, np.round(array)):
            raise DataError(
                f"{where} holds non-integer values (a probability map?); {task} needs integer labels "
                "(0 = background): threshold and label it first"
            )
    if array.size and array.min() < 0:
        raise DataError(f"{where} holds negative values; {task} needs labels >= 0 (0 = background)")
    return array.astype(np.int64)


def as_intensities(array: np.ndarray) -> np.ndarray:
    """A float64 grey image for restoration (RGB(A) to grey, single axes removed)."""
    array = np.squeeze(np.asarray(array))
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = to_grayscale(array)
    return array.astype(np.float64)
