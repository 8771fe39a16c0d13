"""Rank candidate models and classical baselines, and say which differences are real.

With ground truth (:func:`rank_with_truth`) the ranking reads an
:class:`~microzoo.qc.evaluate.Evaluation` made by the same code as ``microzoo compare``: each
method's figure on the task's main metric with its 95% bootstrap interval, and for each pair of
neighbours in the ranking the paired interval of their difference. A difference whose interval
excludes 0 is real; one whose interval contains 0 is noise at this number of images. When the
top two cannot be separated, :func:`microzoo.qc.verdict.images_to_separate` estimates how many annotated images
would: the paired bootstrap standard deviation shrinks as 1/sqrt(n), so a difference ``d`` whose
interval half-width is ``h`` on ``n`` images needs about ``n * (h / d)**2`` (if ``d`` stays what
it is now).

Without ground truth (:func:`rank_without_truth`) the only evidence is agreement between the
candidates (mean foreground IoU with the others for segmentation, mean PSNR for restoration) and
the trust note of each model on the images: weaker evidence, and the ranking says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from microzoo.qc.tasks import get_task
from microzoo.qc.verdict import images_to_separate

if TYPE_CHECKING:
    from microzoo.qc.compare import MethodRuns
    from microzoo.qc.evaluate import Estimate, Evaluation

Z95 = 1.959964
WEAKER_EVIDENCE = (
    "No ground truth was given: this ranking rests on how well the candidates agree with each other and on "
    "each model's trust note, which is weaker evidence than scoring against annotations (candidates can agree "
    "and all be wrong). Annotate a few images and run select with --truth for a ranking you can rely on."
)


@dataclass(frozen=True)
class Ranked:
    """One method in the ranking: its figure on the ranking's metric and the 95% interval."""

    method: str
    kind: str  # "model", "baseline" or "fine-tuned"
    rank: int
    value: float
    low: float
    high: float
    trusted: float | None = None  # without truth: share of images the trust note calls similar
    trust_evidence: str = ""


@dataclass(frozen=True)
class Separation:
    """Two neighbours of the ranking: their difference (``first - second``) and whether it is real."""

    first: str
    second: str
    difference: float
    low: float
    high: float
    real: bool
    sentence: str


@dataclass(frozen=True)
class Ranking:
    """The ranking, best first; ``evidence`` is "ground truth" or "agreement and trust (weaker)"."""

    task: str
    metric: str
    higher_is_better: bool
    n_images: int
    evidence: str
    entries: tuple[Ranked, ...]
    separations: tuple[Separation, ...] = ()
    images_needed: int | None = None  # annotated images in all to separate the top two; None when not asked
    statements: tuple[str, ...] = ()
    verdict: str | None = None  # the one-line verdict of the best model against the classical baseline
    per_image: dict[str, list[float]] = field(default_factory=dict)  # method -> figure per image
    trust: dict[str, list[str]] = field(default_factory=dict)  # model -> its trust verdict per image (no truth)
    #: group of images (qc.groups) -> its number of images and each method's (value, low, high)
    by_group: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def best(self) -> str:
        return self.entries[0].method

    def to_dict(self) -> dict[str, Any]:
        def finite(x: float | None) -> float | None:
            return None if x is None or not math.isfinite(x) else float(x)

        return {
            "task": self.task, "metric": self.metric, "higher_is_better": self.higher_is_better,
            "n_images": self.n_images, "evidence": self.evidence, "best": self.best,
            "ranking": [
                {**vars(e), "value": finite(e.value), "low": finite(e.low), "high": finite(e.high)}
                for e in self.entries
            ],
            "separations": [
                {**vars(s), "difference": finite(s.difference), "low": finite(s.low), "high": finite(s.high)}
                for s in self.separations
            ],
            "images_needed": self.images_needed, "statements": list(self.statements), "verdict": self.verdict,
            "per_image": {m: [finite(v) for v in values] for m, values in self.per_image.items()},
            "trust": self.trust,
            "by_group": {
                name: {**group, "figures": {m: [finite(x) for x in v] for m, v in group["figures"].items()}}
                for name, group in self.by_group.items()
            },
        }  # fmt: skip


def rank_with_truth(evaluation: Evaluation, kinds: Mapping[str, str]) -> Ranking:
    """Rank ``evaluation``'s methods on its main metric; ``kinds`` names each method's kind."""
    metric, task = evaluation.main_metric, get_task(evaluation.task)
    higher = task.higher_is_better(metric)
    n = len(evaluation.images)

    def key(method: str) -> float:
        value = evaluation.summary[method][metric].value
        return -math.inf if math.isnan(value) else (value if higher else -value)

    order = sorted(evaluation.methods, key=key, reverse=True)
    entries = tuple(
        Ranked(m, kinds.get(m, "model"), i + 1, *_estimate(evaluation, m, metric)) for i, m in enumerate(order)
    )
    separations = []
    for first, second in zip(order, order[1:], strict=False):
        separations.append(_separation(_difference(evaluation, first, second, metric), first, second, metric, n))
    statements = [s.sentence for s in separations]
    needed = None
    if separations and not separations[0].real:
        top = separations[0]
        needed = images_to_separate(n, top.difference, top.low, top.high)
        if needed is not None:
            statements.append(
                f"{top.first} and {top.second} cannot be separated on these {n} images; about {needed} annotated "
                f"images in all ({needed - n} more) would separate them if the difference stays at "
                f"{top.difference:+.3f} (from the bootstrap spread of their paired difference)."
            )
        else:
            statements.append(f"{top.first} and {top.second} cannot be separated: their difference is nil.")
    per_image = {m: [float(v) for v in evaluation.per_image[m][metric]] for m in order}
    by_group = {
        name: {
            "n_images": len(group.images),
            "figures": {m: _estimate_of(group.summary[m][metric]) for m in order},
        }
        for name, group in evaluation.by_group.items()
    }
    statements.extend(evaluation.group_notes)  # a method better over all images but worse on a group
    return Ranking(
        task=evaluation.task, metric=metric, higher_is_better=higher, n_images=n, evidence="ground truth",
        entries=entries, separations=tuple(separations), images_needed=needed, statements=tuple(statements),
        per_image=per_image, by_group=by_group,
    )  # fmt: skip


def _estimate(evaluation: Evaluation, method: str, metric: str) -> tuple[float, float, float]:
    return _estimate_of(evaluation.summary[method][metric])


def _estimate_of(estimate: Estimate) -> tuple[float, float, float]:
    return estimate.value, estimate.low, estimate.high


def _difference(evaluation: Evaluation, first: str, second: str, metric: str) -> tuple[float, float, float]:
    """``first - second`` as evaluate computed it (its pairs are in one order; flip when needed)."""
    for d in evaluation.differences:
        if d.metric != metric:
            continue
        if (d.first, d.second) == (first, second):
            return (d.difference, d.low, d.high)
        if (d.first, d.second) == (second, first):
            return (-d.difference, -d.high, -d.low)
    a, b = evaluation.summary[first][metric].value, evaluation.summary[second][metric].value
    return (a - b, math.nan, math.nan)


def _separation(found: tuple[float, float, float], first: str, second: str, metric: str, n: int) -> Separation:
    difference, low, high = (float(x) for x in found)
    real = math.isfinite(low) and (low > 0 or high < 0)
    figures = f"{difference:+.3f} [{low:+.3f}, {high:+.3f}]" if math.isfinite(low) else f"{difference:+.3f}"
    if real:
        sentence = (
            f"{first} ranks above {second} on {metric} by {figures}: a real difference (the 95% interval excludes 0)."
        )
    elif not math.isfinite(low):
        sentence = f"{first} and {second}: {figures} on {metric}, no interval from {n} image(s); annotate more images."
    else:
        sentence = (f"{first} and {second} differ by {figures} on {metric}: noise at {n} images "
                    "(the 95% interval contains 0).")  # fmt: skip
    return Separation(first, second, difference, low, high, real, sentence)


# ---------------------------------------------------------------- without ground truth


def agreement(task: str, a: np.ndarray, b: np.ndarray) -> float:
    """How much two predictions of one image agree: foreground IoU (segmentation) or PSNR (restoration).

    >>> agreement("semantic", np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 1]]))
    0.6666666666666666
    """
    if get_task(task).labels:
        fa, fb = np.asarray(a) != 0, np.asarray(b) != 0
        union = np.logical_or(fa, fb).sum()
        return 1.0 if union == 0 else float(np.logical_and(fa, fb).sum() / union)
    a, b = np.asarray(a, dtype=np.float64).squeeze(), np.asarray(b, dtype=np.float64).squeeze()
    span = max(float(np.ptp(a)), float(np.ptp(b)), 1e-12)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(span**2 / mse)


def rank_without_truth(
    runs: MethodRuns,
    kinds: Mapping[str, str],
    trust: Mapping[str, Sequence[str] | None],
    *,
    trust_evidence: Mapping[str, str] | None = None,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> Ranking:
    """Rank by agreement with the other candidates; models the trust note flags on most images go last.

    ``trust`` maps a model to its verdict per image ("similar", "differs", "uncertain"), or None
    when the model's note could not judge the images; baselines have none.
    """
    methods = list(runs.predictions)
    if len(methods) < 2:
        from microzoo.errors import DataError

        raise DataError("without ground truth, ranking needs two candidates or more to compare with each other")
    n = len(runs.names)
    task = runs.task
    scores = {}
    for method in methods:
        others = [o for o in methods if o != method]
        per_image = [
            float(np.mean([agreement(task, runs.predictions[method][i], runs.predictions[o][i]) for o in others]))
            for i in range(n)
        ]
        scores[method] = np.clip(np.array(per_image), -1e12, 1e12)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_bootstrap, n))
    trusted = {m: _trusted_share(trust.get(m)) for m in methods}

    def key(method: str) -> tuple[bool, float]:
        share = trusted[method]
        flagged = share is not None and share < 0.5
        return (not flagged, float(scores[method].mean()))

    order = sorted(methods, key=key, reverse=True)
    entries = []
    for i, method in enumerate(order):
        values = scores[method]
        boot = values[draws].mean(axis=1)
        low, high = (float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))) if n >= 2 else (math.nan,) * 2
        entries.append(Ranked(method, kinds.get(method, "model"), i + 1, float(values.mean()), low, high,
                              trusted[method], (trust_evidence or {}).get(method, "")))  # fmt: skip
    metric = (
        "agreement (mean foreground IoU with the others)"
        if get_task(task).labels
        else "agreement (mean PSNR with the others, dB)"
    )
    statements = [WEAKER_EVIDENCE]
    if len(methods) == 2:
        statements.append(
            "With two candidates, agreement is the same figure for both and cannot order them; only the trust "
            "note can. Add candidates, or annotate images."
        )
    for entry in entries:
        if entry.trusted is not None and entry.trusted < 0.5:
            statements.append(
                f"The trust note flags {entry.method} on {1 - entry.trusted:.0%} of the images (unlike what the "
                "model was made for): ranked after the candidates it does not flag."
            )
    return Ranking(
        task=task, metric=metric, higher_is_better=True, n_images=n, evidence="agreement and trust (weaker)",
        entries=tuple(entries), statements=tuple(statements),
        per_image={m: [float(v) for v in scores[m]] for m in order},
        trust={m: list(v) for m in order if (v := trust.get(m))},
    )  # fmt: skip


def _trusted_share(verdicts: Sequence[str] | None) -> float | None:
    if not verdicts:
        return None
    return sum(v == "similar" for v in verdicts) / len(verdicts)
