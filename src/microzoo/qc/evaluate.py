"""Evaluate methods against ground truth: per image, pooled, with bootstrap confidence intervals.

Any number of methods are scored on the same images. Each image is reduced to a vector of
additive numbers (TP/FP/FN counts for objects, pixel counts per class, metric values for
restoration), so the data-set figure is computed from sums over images, as StarDist's
``matching_dataset`` does, and a bootstrap resample is one weighted sum. Resampling images
with replacement (seeded) gives a 95% percentile interval for every figure; resampling the
same images for two methods gives the interval of their paired difference.

:func:`evaluate` works on arrays in memory; :func:`evaluate_folders` pairs files by name,
evaluates and writes ``metrics.json``, ``per_image.csv`` and ``report.html``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from microzoo.errors import DataError
from microzoo.io.files import list_images, pair_by_stem
from microzoo.progress import ProgressCallback, no_progress
from microzoo.qc import metrics

TASKS = ("restoration", "semantic", "instances", "detection")
LOWER_IS_BETTER = frozenset({"nrmse", "mae", "nrmse_fitted", "mae_fitted", "mean_distance"})
MAIN_METRIC = {"restoration": "psnr_fitted", "semantic": "mean_iou", "instances": "f1@0.5", "detection": "f1"}


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (false for errors and distances)."""
    return metric not in LOWER_IS_BETTER


@dataclass(frozen=True)
class Estimate:
    """A data-set figure and its bootstrap 95% interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Difference:
    """``first - second`` on one metric, its paired bootstrap interval, and the verdict."""

    first: str
    second: str
    metric: str
    difference: float
    low: float
    high: float
    better: str | None  # the better method's name, None when the interval contains 0

    @property
    def verdict(self) -> str:
        if self.better is not None:
            return f"{self.better} better"
        if np.isnan(self.difference):
            return "undefined"
        return "too few images to tell (need 2 or more)" if np.isnan(self.low) else "no clear difference"


@dataclass(frozen=True)
class Evaluation:
    """Every figure of an evaluation; :meth:`to_dict` gives it JSON-ready."""

    task: str
    methods: tuple[str, ...]
    images: tuple[str, ...]
    main_metric: str
    headline: tuple[str, ...]
    summary: dict[str, dict[str, Estimate]]
    per_image: dict[str, dict[str, np.ndarray]]
    differences: tuple[Difference, ...]
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return _json_safe(
            {
                "task": self.task,
                "methods": list(self.methods),
                "images": list(self.images),
                "main_metric": self.main_metric,
                "headline_metrics": list(self.headline),
                "summary": {
                    method: {name: vars(est) for name, est in figures.items()}
                    for method, figures in self.summary.items()
                },
                "differences": [
                    {**vars(d), "verdict": d.verdict} for d in self.differences
                ],
                "per_image": {
                    method: {name: values.tolist() for name, values in figures.items()}
                    for method, figures in self.per_image.items()
                },
                "settings": self.settings,
            }
        )


def _json_safe(value):
    """NaN and infinities become null (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _divide(numerator, denominator):
    numerator, denominator = np.broadcast_arrays(np.asarray(numerator, float), np.asarray(denominator, float))
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _nanmean(stack: list[np.ndarray]) -> np.ndarray:
    values = np.stack(stack, axis=-1)
    defined = ~np.isnan(values)
    return _divide(np.where(defined, values, 0).sum(axis=-1), defined.sum(axis=-1))


# ---------------------------------------------------------------- tasks: image -> additive vector


@dataclass(frozen=True)
class _Task:
    """How one task turns an image pair into additive numbers and sums back into figures."""

    vectorize: Callable[[np.ndarray, np.ndarray], np.ndarray]
    aggregate: Callable[[np.ndarray], dict[str, np.ndarray]]  # sums (..., k) -> figures (...)
    headline: tuple[str, ...]


def _restoration_task(data_range: float) -> _Task:
    names = ("psnr", "ssim", "nrmse", "mae", "psnr_fitted", "ssim_fitted", "nrmse_fitted", "mae_fitted")

    def vectorize(truth, pred):
        figures = metrics.restoration_metrics(truth, pred, data_range=data_range)
        values = np.array([figures[name] for name in names])
        defined = ~np.isnan(values)
        return np.concatenate([np.where(defined, values, 0.0), defined.astype(float)])

    def aggregate(sums):
        k = len(names)
        return {name: _divide(sums[..., i], sums[..., k + i]) for i, name in enumerate(names)}

    return _Task(vectorize, aggregate, names)


def _semantic_task(classes: list[int]) -> _Task:
    def vectorize(truth, pred):
        figures = metrics.semantic_metrics(truth, pred, classes=classes)
        counts = [figures["counts"][c][key] for c in classes for key in ("intersection", "truth", "pred")]
        correct = figures["pixel_accuracy"] * truth.size
        return np.array([*counts, round(correct), truth.size], dtype=float)

    def aggregate(sums):
        out = {"pixel_accuracy": _divide(sums[..., -2], sums[..., -1])}
        ious, dices = [], []
        for i, c in enumerate(classes):
            inter, n_truth, n_pred = sums[..., 3 * i], sums[..., 3 * i + 1], sums[..., 3 * i + 2]
            ious.append(_divide(inter, n_truth + n_pred - inter))
            dices.append(_divide(2 * inter, n_truth + n_pred))
        out["mean_iou"], out["mean_dice"] = _nanmean(ious), _nanmean(dices)
        out.update({f"iou[{c}]": v for c, v in zip(classes, ious)})
        out.update({f"dice[{c}]": v for c, v in zip(classes, dices)})
        return out

    headline = ("mean_iou", "mean_dice", "pixel_accuracy", *(f"iou[{c}]" for c in classes))
    return _Task(vectorize, aggregate, headline)


def _instances_task(thresholds: tuple[float, ...], report_at: float) -> _Task:
    n = len(thresholds)

    def vectorize(truth, pred):
        m = metrics.match_instances(truth, pred, thresholds=thresholds)
        return np.concatenate([m.tp, m.fp, m.fn, m.sum_matched_iou]).astype(float)

    def aggregate(sums):
        tp, fp, fn, iou = (sums[..., j * n : (j + 1) * n] for j in range(4))
        figures = {
            "precision": _divide(tp, tp + fp),
            "recall": _divide(tp, tp + fn),
            "f1": _divide(2 * tp, 2 * tp + fp + fn),
            "accuracy": _divide(tp, tp + fp + fn),
            "panoptic_quality": _divide(iou, tp + fp / 2 + fn / 2),
            "mean_matched_iou": _divide(iou, tp),
        }
        out = {
            f"{name}@{t:g}": values[..., k]
            for name, values in figures.items()
            for k, t in enumerate(thresholds)
        }
        out["mean_accuracy"] = _nanmean([figures["accuracy"][..., k] for k in range(n)])
        out["n_true"], out["n_pred"] = tp[..., 0] + fn[..., 0], tp[..., 0] + fp[..., 0]
        return out

    at = f"{report_at:g}"
    headline = tuple(f"{name}@{at}" for name in ("f1", "precision", "recall", "accuracy", "panoptic_quality"))
    return _Task(vectorize, aggregate, (*headline, "mean_accuracy"))


def _detection_task(tolerance: float) -> _Task:
    def vectorize(truth, pred):
        m = metrics.match_points(truth, pred, tolerance=tolerance)
        return np.array([m.tp, m.n_true, m.n_pred, m.pairs[:, 2].sum()], dtype=float)

    def aggregate(sums):
        tp, n_true, n_pred, distance = (sums[..., j] for j in range(4))
        return {
            "f1": _divide(2 * tp, n_true + n_pred),
            "precision": _divide(tp, n_pred),
            "recall": _divide(tp, n_true),
            "mean_distance": _divide(distance, tp),
        }

    return _Task(vectorize, aggregate, ("f1", "precision", "recall", "mean_distance"))


# ---------------------------------------------------------------- evaluation


def _interval(samples: np.ndarray) -> tuple[float, float]:
    defined = samples[~np.isnan(samples)]
    if defined.size == 0:
        return float("nan"), float("nan")
    # no interpolation, so infinite values (PSNR of an exact copy) do not turn into NaN
    return float(np.percentile(defined, 2.5, method="lower")), float(
        np.percentile(defined, 97.5, method="higher")
    )


def _make_task(task, truths, predictions, *, data_range, thresholds, tolerance) -> tuple[_Task, dict]:
    if task == "restoration":
        if data_range is None:
            low = min(float(np.min(t)) for t in truths)
            data_range = max(float(np.max(t)) for t in truths) - low
            if data_range <= 0:
                raise DataError("every truth image is constant; give data_range= (e.g. 255 for 8-bit)")
        return _restoration_task(float(data_range)), {"data_range": float(data_range)}
    if task == "semantic":
        classes = set()
        for array in itertools.chain(truths, *predictions.values()):
            classes.update(np.unique(array).tolist())
        classes = sorted(int(c) for c in classes)
        return _semantic_task(classes), {"classes": classes}
    if task == "instances":
        thresholds = tuple(float(t) for t in thresholds)
        report_at = 0.5 if any(abs(t - 0.5) < 1e-9 for t in thresholds) else thresholds[0]
        return _instances_task(thresholds, report_at), {"iou_thresholds": list(thresholds), "reported_at": report_at}
    if task == "detection":
        if tolerance is None:
            raise DataError(
                "detection needs tolerance=: the largest distance in pixels at which a detected "
                "point still counts as finding a true one (e.g. a nucleus radius)"
            )
        return _detection_task(float(tolerance)), {"tolerance": float(tolerance)}
    raise DataError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")


def evaluate(
    predictions: Mapping[str, Sequence[np.ndarray]],
    truths: Sequence[np.ndarray],
    *,
    task: str,
    names: Sequence[str] | None = None,
    data_range: float | None = None,
    thresholds: Sequence[float] = metrics.DEFAULT_THRESHOLDS,
    tolerance: float | None = None,
    main_metric: str | None = None,
    n_bootstrap: int = 2000,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> Evaluation:
    """Score each method's predictions against the truths, per image and over the data set.

    Parameters
    ----------
    predictions : mapping of method name to a sequence of arrays
        One prediction per truth image, in the same order, for every method. Restoration:
        images; semantic: integer class maps; instances: label images (0 = background);
        detection: ``(n, ndim)`` point coordinates.
    truths : sequence of arrays
        The ground truth, in the same form as the predictions.
    task : {"restoration", "semantic", "instances", "detection"}, keyword-only
    names : image names for the tables (default ``image_000``, ...).
    data_range : restoration only: the span of possible values for PSNR and SSIM (e.g. 255);
        by default the span of all truth images together, recorded in the settings.
    thresholds : instances only: IoU thresholds; figures are reported at 0.5 and curves over all.
    tolerance : detection only: matching distance in pixels (required).
    main_metric : the figure that ranks images and draws the distributions; by default
        ``psnr_fitted``, ``mean_iou``, ``f1@0.5`` or ``f1``.
    n_bootstrap, seed : number of bootstrap resamples of the images, and their seed.
    progress : called as ``progress(done, total, description)`` while scoring.
    """
    progress = progress or no_progress
    truths = list(truths)
    predictions = {str(name): list(arrays) for name, arrays in predictions.items()}
    n = len(truths)
    if n == 0:
        raise DataError("no images to evaluate: give at least one truth image")
    if not predictions:
        raise DataError("no method to evaluate: give at least one set of predictions")
    for method, arrays in predictions.items():
        if len(arrays) != n:
            raise DataError(f"method {method!r} has {len(arrays)} predictions for {n} truth images; give one per image")
    names = tuple(str(s) for s in names) if names is not None else tuple(f"image_{i:03d}" for i in range(n))
    if len(names) != n or len(set(names)) != n:
        raise DataError(f"give {n} distinct image names, one per truth image")
    if n_bootstrap < 1:
        raise DataError(f"n_bootstrap must be at least 1, got {n_bootstrap}")

    scorer, task_settings = _make_task(
        task, truths, predictions, data_range=data_range, thresholds=thresholds, tolerance=tolerance
    )
    main_metric = main_metric or MAIN_METRIC[task]
    total, done = n * len(predictions), 0
    vectors: dict[str, np.ndarray] = {}
    for method, arrays in predictions.items():
        rows = []
        for name, truth, pred in zip(names, truths, arrays):
            try:
                rows.append(scorer.vectorize(truth, pred))
            except DataError as error:
                raise DataError(f"method {method!r}, image {name!r}: {error}") from None
            done += 1
            progress(done, total, f"scoring {method}")
        vectors[method] = np.stack(rows)

    rng = np.random.default_rng(seed)
    weights = np.zeros((n_bootstrap, n))
    np.add.at(weights, (np.arange(n_bootstrap)[:, None], rng.integers(0, n, size=(n_bootstrap, n))), 1)
    full, boot, per_image = {}, {}, {}
    for method, vector in vectors.items():
        full[method] = scorer.aggregate(vector.sum(axis=0))
        boot[method] = scorer.aggregate(weights @ vector)
        per_image[method] = scorer.aggregate(vector)
    if main_metric not in full[next(iter(full))]:
        raise DataError(f"unknown main metric {main_metric!r}; choose one of {', '.join(sorted(full[next(iter(full))]))}")
    # resampling one image gives that image back every time: no interval, and no verdict, from it
    interval = _interval if n >= 2 else (lambda samples: (float("nan"), float("nan")))
    summary = {
        method: {name: Estimate(float(value), *interval(boot[method][name])) for name, value in figures.items()}
        for method, figures in full.items()
    }
    differences = []
    for first, second in itertools.combinations(predictions, 2):
        for metric in scorer.headline:
            a, b = full[first][metric], full[second][metric]
            if np.isinf(a) and np.isinf(b):  # two exact copies: nothing to tell apart
                value, low, high = float("nan"), float("nan"), float("nan")
            else:
                value = float(a - b)
                low, high = interval(boot[first][metric] - boot[second][metric])
            better = None
            if low > 0 or high < 0:
                better = first if (low > 0) == higher_is_better(metric) else second
            differences.append(Difference(first, second, metric, value, low, high, better))
    settings = {
        "task": task,
        "n_images": n,
        "n_bootstrap": int(n_bootstrap),
        "seed": int(seed),
        "interval": "95% bootstrap percentile interval over images (resampled with replacement)",
        **task_settings,
    }
    return Evaluation(
        task=task,
        methods=tuple(predictions),
        images=names,
        main_metric=main_metric,
        headline=scorer.headline if main_metric in scorer.headline else (main_metric, *scorer.headline),
        summary=summary,
        per_image=per_image,
        differences=tuple(differences),
        settings=settings,
    )


def write_evaluation(
    evaluation: Evaluation,
    out_dir: str | Path,
    *,
    truths: Sequence[np.ndarray],
    predictions: Mapping[str, Sequence[np.ndarray]],
    inputs: Sequence[np.ndarray] | None = None,
) -> dict[str, Path]:
    """Write ``metrics.json``, ``per_image.csv`` and ``report.html`` into ``out_dir``, each atomically."""
    from microzoo.io.atomic import atomic_output
    from microzoo.qc.report import render_report, write_csv

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html, figure_numbers = render_report(evaluation, truths=truths, predictions=predictions, inputs=inputs)
    document = evaluation.to_dict()
    document["figures"] = _json_safe(figure_numbers)
    paths = {"metrics": out_dir / "metrics.json", "per_image": out_dir / "per_image.csv", "report": out_dir / "report.html"}
    with atomic_output(paths["metrics"]) as tmp:
        tmp.write_text(json.dumps(document, indent=1), encoding="utf-8")
    with atomic_output(paths["per_image"]) as tmp:
        write_csv(tmp, evaluation)
    with atomic_output(paths["report"]) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return paths


# ---------------------------------------------------------------- folders

def _pair_files(pred_dirs, truth_dir, images_dir):
    """Stems and, per role (``"truth"``, ``("pred", method)``, ``"images"``), the files in that order."""
    groups = {"truth": list_images(truth_dir, role="truth", extra_suffixes=(".csv",))}
    for method, folder in pred_dirs.items():
        groups[f"predictions ({method})"] = list_images(folder, role=f"predictions ({method})", extra_suffixes=(".csv",))
    if images_dir is not None:
        groups["input images"] = list_images(images_dir, role="input images")
    stems, paired = pair_by_stem(groups)
    paths = {"truth": paired["truth"], **{("pred", m): paired[f"predictions ({m})"] for m in pred_dirs}}
    if images_dir is not None:
        paths["images"] = paired["input images"]
    return stems, paths


def _read_points(path: Path) -> np.ndarray:
    import csv

    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = [h.strip().lower() for h in rows[0]], [r for r in rows[1:] if r]
    wanted = [h for h in ("z", "y", "x") if h in header] or [h for h in header if h.startswith("axis-")]
    if not wanted:
        raise DataError(f"{path} has no coordinate columns; name them z, y, x (or axis-0, axis-1, ...)")
    columns = [header.index(h) for h in wanted]
    return np.array([[float(r[c]) for c in columns] for r in body]).reshape(-1, len(columns))


def _read_one(path: Path, *, task: str, role: str) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        if task != "detection":
            raise DataError(f"{path} is a CSV file; only detection reads point lists")
        return _read_points(path)
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            array = tifffile.imread(path)
        elif suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            import imageio.v3 as iio

            array = iio.imread(path)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {path}: {error}; give a TIFF, PNG, JPEG or .npy file") from None
    if role == "input":
        return array
    array = np.squeeze(array)
    if task in ("semantic", "instances", "detection") and not np.issubdtype(array.dtype, np.integer):
        if array.dtype != bool and not np.array_equal(array, np.round(array)):
            raise DataError(f"{path} holds non-integer values; {task} needs integer labels (0 = background)")
        array = array.astype(np.int64)
    if task == "detection":
        from skimage.measure import regionprops

        array = np.array([r.centroid for r in regionprops(array)]).reshape(-1, array.ndim)
    return array


def _read_images(paths: Sequence[Path], *, task: str, role: str, progress: ProgressCallback) -> list[np.ndarray]:
    arrays = []
    for done, path in enumerate(paths, start=1):
        arrays.append(_read_one(path, task=task, role=role))
        progress(done, len(paths), f"reading {role}")
    return arrays


def evaluate_folders(
    pred_dirs: Mapping[str, str | Path],
    truth_dir: str | Path,
    *,
    task: str,
    out_dir: str | Path,
    images_dir: str | Path | None = None,
    data_range: float | None = None,
    thresholds: Sequence[float] = metrics.DEFAULT_THRESHOLDS,
    tolerance: float | None = None,
    main_metric: str | None = None,
    n_bootstrap: int = 2000,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> Evaluation:
    """Evaluate folders of predictions (one per method) against a folder of truths.

    Files are paired by name without extension (``a.tif`` with ``a.png``); a name missing
    from any folder is a :class:`~microzoo.errors.DataError` that lists them. ``images_dir``
    holds the inputs, shown in the report's panels. Detection truths and predictions are CSV
    files of coordinates (columns ``z``/``y``/``x`` or ``axis-0``, ...) or label images whose
    object centroids are used. All images are held in memory. Writes ``metrics.json``,
    ``per_image.csv`` and ``report.html`` into ``out_dir``; the other options are those of
    :func:`evaluate`.
    """
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    progress = progress or no_progress
    stems, paths = _pair_files(pred_dirs, truth_dir, images_dir)
    truths = _read_images(paths["truth"], task=task, role="truth", progress=progress)
    predictions = {
        method: _read_images(paths[("pred", method)], task=task, role=method, progress=progress)
        for method in pred_dirs
    }
    inputs = _read_images(paths["images"], task=task, role="input", progress=progress) if images_dir else None
    evaluation = evaluate(
        predictions,
        truths,
        task=task,
        names=stems,
        data_range=data_range,
        thresholds=thresholds,
        tolerance=tolerance,
        main_metric=main_metric,
        n_bootstrap=n_bootstrap,
        seed=seed,
        progress=progress,
    )
    progress(0, 1, "writing the report")
    write_evaluation(evaluation, out_dir, truths=truths, predictions=predictions, inputs=inputs)
    progress(1, 1, "writing the report")
    return evaluation
