"""Evaluate methods against ground truth: per image, pooled, with bootstrap confidence intervals.

Any number of methods are scored on the same images. Each image is reduced to a vector of
additive numbers, so the data-set figure is computed from sums over images and a bootstrap
resample is one weighted sum. Resampling images
with replacement (seeded) gives a 95% percentile interval for every figure; resampling the
same images for two methods gives the interval of their paired difference.

:func:`evaluate` works on arrays in memory; :func:`evaluate_folders` pairs files by name,
evaluates and writes ``metrics.json``, ``per_image.csv`` and ``report.html``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.errors import DataError
from microzoo.progress import ProgressCallback, no_progress
from microzoo.qc import metrics
from microzoo.qc.calibration import Reliability, calibration_by_method
from microzoo.qc.tasks import TaskSettings, get_task


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
class GroupFigures:
    """The figures of one group of images (:mod:`microzoo.qc.groups`), as for the whole set."""

    images: tuple[str, ...]
    summary: dict[str, dict[str, Estimate]]
    differences: tuple[Difference, ...]


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
    settings: TaskSettings = field(default_factory=dict)
    calibration: dict[str, Reliability] = field(default_factory=dict)  # method -> foreground calibration
    #: group name -> its figures, when ``evaluate`` was given groups (else empty)
    by_group: dict[str, GroupFigures] = field(default_factory=dict)
    #: plain sentences: a method better over all images but worse on a group
    group_notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        document = json_safe(
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
                "differences": [{**vars(d), "verdict": d.verdict} for d in self.differences],
                "per_image": {
                    method: {name: values.tolist() for name, values in figures.items()}
                    for method, figures in self.per_image.items()
                },
                "settings": self.settings,
                "groups": {
                    name: {
                        "images": list(group.images),
                        "summary": {m: {k: vars(e) for k, e in f.items()} for m, f in group.summary.items()},
                        "differences": [{**vars(d), "verdict": d.verdict} for d in group.differences],
                    }
                    for name, group in self.by_group.items()
                },
                "group_notes": list(self.group_notes),
            }
        )
        if self.calibration:
            document["calibration"] = json_safe({m: r.to_dict() for m, r in self.calibration.items()})
        return document


def read_evaluation(path: str | Path) -> Evaluation:
    """An :class:`Evaluation` read back from the ``metrics.json`` that :func:`write_evaluation` wrote.

    Every figure, difference, group and setting comes back (JSON's nulls as NaN); the calibration
    numbers stay in the file (``calibration`` is left empty).
    """
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        return _evaluation_from_dict(document)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(
            f"cannot read an evaluation from {path} ({error}); give the metrics.json that microzoo evaluate, "
            "compare or train wrote"
        ) from None


def _number(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _estimates(figures: Mapping[str, Mapping[str, dict[str, Any]]]) -> dict[str, dict[str, Estimate]]:
    return {method: {name: Estimate(_number(e["value"]), _number(e["low"]), _number(e["high"]))
                     for name, e in by_name.items()} for method, by_name in figures.items()}  # fmt: skip


def _differences(rows: Sequence[Mapping[str, Any]]) -> tuple[Difference, ...]:
    return tuple(Difference(row["first"], row["second"], row["metric"], _number(row["difference"]),
                            _number(row["low"]), _number(row["high"]), row["better"]) for row in rows)  # fmt: skip


def _evaluation_from_dict(document: Mapping[str, Any]) -> Evaluation:
    per_image = {
        method: {name: np.array([_number(v) for v in values]) for name, values in figures.items()}
        for method, figures in document["per_image"].items()
    }
    groups = {
        name: GroupFigures(tuple(g["images"]), _estimates(g["summary"]), _differences(g["differences"]))
        for name, g in document.get("groups", {}).items()
    }
    return Evaluation(
        task=document["task"],
        methods=tuple(document["methods"]),
        images=tuple(document["images"]),
        main_metric=document["main_metric"],
        headline=tuple(document["headline_metrics"]),
        summary=_estimates(document["summary"]),
        per_image=per_image,
        differences=_differences(document["differences"]),
        settings=document.get("settings", {}),
        by_group=groups,
        group_notes=tuple(document.get("group_notes", ())),
    )


def json_safe(value: Any) -> Any:
    """NaN and infinities become null (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# ---------------------------------------------------------------- evaluation


def _interval(samples: np.ndarray) -> tuple[float, float]:
    defined = samples[~np.isnan(samples)]
    if defined.size == 0:
        return float("nan"), float("nan")
    # no interpolation, so infinite values (PSNR of an exact copy) do not turn into NaN
    return float(np.percentile(defined, 2.5, method="lower")), float(np.percentile(defined, 97.5, method="higher"))


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
    groups: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
    probabilities: Mapping[str, Sequence[np.ndarray]] | None = None,
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
    groups : each image's group name (e.g. :meth:`microzoo.qc.groups.ImageGroups.of_images`):
        the figures and paired differences of each group too (``by_group``, bootstrapped
        within the group), and ``group_notes`` where a method better over all images is worse
        on a group.
    progress : called as ``progress(done, total, description)`` while scoring.
    probabilities : semantic and instances only: method -> each image's foreground probability
        (the truth's shape); their calibration (:mod:`microzoo.qc.calibration`) is reported.
    """
    progress = progress or no_progress
    truths = list(truths)
    predictions = {str(name): list(arrays) for name, arrays in predictions.items()}
    definition = get_task(task)
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
    if groups is not None and len(groups) != n:
        raise DataError(f"give one group name per image: {len(groups)} names for {n} images")
    calibration = _calibration(probabilities, predictions, truths, task, n_bootstrap=n_bootstrap, seed=seed)

    if definition.check is not None:
        definition.check(truths, predictions, names)
    scorer, task_settings = definition.scorer(
        truths, predictions, data_range=data_range, thresholds=thresholds, tolerance=tolerance
    )
    main_metric = main_metric or definition.main_metric
    total, done = n * len(predictions), 0
    vectors: dict[str, np.ndarray] = {}
    for method, arrays in predictions.items():
        rows = []
        for name, truth, pred in zip(names, truths, arrays, strict=True):
            try:
                rows.append(scorer.vectorize(truth, pred))
            except DataError as error:
                raise DataError(f"method {method!r}, image {name!r}: {error}") from None
            done += 1
            progress(done, total, f"scoring {method}")
        vectors[method] = np.stack(rows)

    summary, differences = _figures(vectors, scorer, definition, n_bootstrap=n_bootstrap, seed=seed)
    if main_metric not in summary[next(iter(summary))]:
        raise DataError(
            f"unknown main metric {main_metric!r}; choose one of {', '.join(sorted(summary[next(iter(summary))]))}"
        )
    per_image = {method: scorer.aggregate(vector) for method, vector in vectors.items()}
    by_group: dict[str, GroupFigures] = {}
    for name in dict.fromkeys(groups or ()):
        members = np.array([g == name for g in groups or ()])
        figures, paired = _figures({m: v[members] for m, v in vectors.items()}, scorer, definition,
                                   n_bootstrap=n_bootstrap, seed=seed)  # fmt: skip
        by_group[str(name)] = GroupFigures(tuple(np.array(names)[members].tolist()), figures, tuple(paired))
    settings = {
        "task": task,
        "n_images": n,
        "n_bootstrap": int(n_bootstrap),
        "seed": int(seed),
        "interval": "95% bootstrap percentile interval over images (resampled with replacement)",
        **task_settings,
    }
    return Evaluation(
        calibration=calibration,
        task=task,
        methods=tuple(predictions),
        images=names,
        main_metric=main_metric,
        headline=scorer.headline if main_metric in scorer.headline else (main_metric, *scorer.headline),
        summary=summary,
        per_image=per_image,
        differences=tuple(differences),
        settings={**settings, **({"groups": len(by_group)} if by_group else {})},
        by_group=by_group,
        group_notes=group_notes(
            differences, by_group, main_metric, higher_is_better=definition.higher_is_better(main_metric)
        ),  # fmt: skip
    )


def _calibration(
    probabilities: Mapping[str, Sequence[np.ndarray]] | None,
    predictions: Mapping[str, Any],
    truths: Sequence[np.ndarray],
    task: str,
    *,
    n_bootstrap: int,
    seed: int,
) -> dict[str, Reliability]:
    """Each method's calibration against the truth's foreground (non-zero), when probabilities are given."""
    if not probabilities:
        return {}
    if task not in ("semantic", "instances"):
        raise DataError(f"probabilities are calibrated for segmentation (semantic, instances), not for {task}")
    unknown = set(probabilities) - set(predictions)
    if unknown:
        raise DataError(f"probabilities for {', '.join(sorted(unknown))}, which has no predictions: name a method")
    return calibration_by_method(probabilities, truths, n_bootstrap=n_bootstrap, seed=seed)


def _figures(vectors: dict[str, np.ndarray], scorer: Any, definition: Any, *, n_bootstrap: int, seed: int
             ) -> tuple[dict[str, dict[str, Estimate]], list[Difference]]:  # fmt: skip
    """Every method's figures with their intervals, and the paired differences, from per-image vectors."""
    n = len(next(iter(vectors.values())))
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_bootstrap, n))
    np.add.at(weights, (np.arange(n_bootstrap)[:, None], rng.integers(0, n, size=(n_bootstrap, n))), 1)
    full, boot = {}, {}
    for method, vector in vectors.items():
        full[method] = scorer.aggregate(vector.sum(axis=0))
        boot[method] = scorer.aggregate(weights @ vector)
    # resampling one image gives that image back every time: no interval, and no verdict, from it
    interval = _interval if n >= 2 else (lambda samples: (float("nan"), float("nan")))
    summary = {
        method: {name: Estimate(float(value), *interval(boot[method][name])) for name, value in figures.items()}
        for method, figures in full.items()
    }
    differences = []
    for first, second in itertools.combinations(vectors, 2):
        for metric in scorer.headline:
            a, b = full[first][metric], full[second][metric]
            if np.isinf(a) and np.isinf(b):  # two exact copies: nothing to tell apart
                value, low, high = float("nan"), float("nan"), float("nan")
            else:
                value = float(a - b)
                low, high = interval(boot[first][metric] - boot[second][metric])
            better = None
            if low > 0 or high < 0:
                better = first if (low > 0) == definition.higher_is_better(metric) else second
            differences.append(Difference(first, second, metric, value, low, high, better))
    return summary, differences


def group_notes(differences: Sequence[Difference], by_group: Mapping[str, GroupFigures], metric: str, *,
                higher_is_better: bool = True) -> tuple[str, ...]:  # fmt: skip
    """Sentences for each method clearly better over all images but worse on a group of them.

    "worse" when the group's paired interval says so; "no better" when the group's difference
    goes the other way within its interval (noise, or too few images to tell).
    """
    notes = []
    for overall in differences:
        if overall.metric != metric or overall.better is None:
            continue
        winner = overall.better
        loser = overall.second if winner == overall.first else overall.first
        sign = 1.0 if winner == overall.first else -1.0  # winner - loser
        for name, group in by_group.items():
            d = next(x for x in group.differences if x.metric == metric and {x.first, x.second} == {winner, loser})
            value = sign * d.difference
            if d.better != loser and not (value < 0 if higher_is_better else value > 0):
                continue
            how = "worse" if d.better == loser else "no better"
            spread = (f"[{min(sign * d.low, sign * d.high):+.3f}, {max(sign * d.low, sign * d.high):+.3f}]"
                      if np.isfinite(d.low) else "no interval")  # fmt: skip
            notes.append(
                f"{winner} is better than {loser} on {metric} over all images ({sign * overall.difference:+.3f}) "
                f"but {how} on the {len(group.images)} image(s) of group '{name}' ({value:+.3f} {spread})"
            )
    return tuple(notes)


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
    document["figures"] = json_safe(figure_numbers)
    paths = {
        "metrics": out_dir / "metrics.json",
        "per_image": out_dir / "per_image.csv",
        "report": out_dir / "report.html",
    }
    with atomic_output(paths["metrics"]) as tmp:
        tmp.write_text(json.dumps(document, indent=1), encoding="utf-8")
    with atomic_output(paths["per_image"]) as tmp:
        write_csv(tmp, evaluation)
    with atomic_output(paths["report"]) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return paths
