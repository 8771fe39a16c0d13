"""The one-line verdict of a model against the classical baseline, and what to do about it.

:func:`baseline_verdict` reads an :class:`~microzoo.qc.evaluate.Evaluation` that scored a model
and a classical baseline on the same images, and says on the main metric whether the model is
``"better"``, ``"worse"`` or shows ``"no clear difference"`` (the paired 95% bootstrap interval
of the difference contains 0), with the difference, its interval and advice: keep the model,
train longer, annotate more images, or use the baseline. The CLI prints ``Verdict.line`` after
``train``, ``compare --classical``, ``select`` and ``predict --truth``; the notebooks print it too.

>>> import numpy as np
>>> from microzoo.qc.evaluate import evaluate
>>> truth = [np.array([[0, 1], [1, 1]])] * 4
>>> e = evaluate({"net": truth, "Otsu": truth}, truth, task="semantic")
>>> baseline_verdict(e, "net", "Otsu").kind
'no clear difference'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from microzoo.errors import DataError
from microzoo.qc.evaluate import group_notes
from microzoo.qc.tasks import get_task

if TYPE_CHECKING:
    from microzoo.qc.evaluate import Evaluation

__all__ = ["Verdict", "baseline_verdict", "best_baseline", "verdicts_against_baselines"]


@dataclass(frozen=True)
class Verdict:
    """A model against a classical baseline on one metric.

    ``difference`` is ``model - baseline`` on ``metric`` and ``interval`` its paired 95% bootstrap
    interval (NaN with fewer than 2 images); ``kind`` already accounts for metrics where lower is
    better. ``advice`` says what to do; ``line`` is the whole sentence the front ends print.
    """

    kind: str  # "better" | "no clear difference" | "worse"
    model: str
    baseline: str
    metric: str
    difference: float
    interval: tuple[float, float]
    n_images: int
    advice: str
    line: str
    #: groups of images (:mod:`microzoo.qc.groups`) on which a model better overall is worse
    group_notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        def finite(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "kind": self.kind, "model": self.model, "baseline": self.baseline, "metric": self.metric,
            "difference": finite(self.difference), "interval": [finite(x) for x in self.interval],
            "n_images": self.n_images, "advice": self.advice, "line": self.line, "group_notes": list(self.group_notes),
        }  # fmt: skip


def best_baseline(evaluation: Evaluation, baselines: Sequence[str]) -> str:
    """The strongest of ``baselines`` on the evaluation's main metric (what a model must beat)."""
    if not baselines:
        raise DataError("no classical baseline in the evaluation; run it with the baseline (e.g. --classical)")
    task = get_task(evaluation.task)
    metric = evaluation.main_metric

    def score(name: str) -> float:
        value = evaluation.summary[name][metric].value
        value = value if task.higher_is_better(metric) else -value
        return value if not math.isnan(value) else -math.inf

    return max(baselines, key=score)


def verdicts_against_baselines(evaluation: Evaluation, baselines: Sequence[str]) -> tuple[Verdict, ...]:
    """Each method that is not one of ``baselines`` against the strongest of them (none without one)."""
    if not baselines:
        return ()
    strongest = best_baseline(evaluation, list(baselines))
    return tuple(baseline_verdict(evaluation, m, strongest) for m in evaluation.methods if m not in baselines)


def baseline_verdict(
    evaluation: Evaluation, model: str | None = None, baseline: str | None = None, *, metric: str | None = None
) -> Verdict:
    """Say whether ``model`` beats ``baseline`` on ``metric`` (default: the main metric).

    ``model`` and ``baseline`` name methods of the evaluation (default: its first and second).
    """
    methods = evaluation.methods
    model = model if model is not None else methods[0]
    if baseline is None:
        if len(methods) < 2:
            raise DataError("the evaluation holds one method: a verdict needs the model and a baseline")
        baseline = next(m for m in methods if m != model)
    for name in (model, baseline):
        if name not in methods:
            raise DataError(f"no method {name!r} in the evaluation; it holds {', '.join(methods)}")
    if model == baseline:
        raise DataError(f"compare the model with another method, not with itself ({model!r})")
    metric = metric or evaluation.main_metric
    found = [d for d in evaluation.differences if d.metric == metric and {d.first, d.second} == {model, baseline}]
    if not found:
        raise DataError(f"the evaluation has no paired difference on {metric!r}; choose one of {evaluation.headline}")
    d = found[0]
    sign = 1.0 if d.first == model else -1.0
    difference = sign * d.difference
    low, high = sorted((sign * d.low, sign * d.high)) if not math.isnan(d.low) else (math.nan, math.nan)
    higher = get_task(evaluation.task).higher_is_better(metric)
    n = len(evaluation.images)
    if d.better is not None:
        kind = "better" if d.better == model else "worse"
    elif n == 1 and difference != 0 and not math.isnan(difference):  # no interval: the sign, said to be weak
        kind = "better" if (difference > 0) == higher else "worse"
    else:
        kind = "no clear difference"
    advice = _advice(kind, evaluation.task, baseline, difference, (low, high), n, higher)
    if math.isnan(difference):
        figures = "undefined difference"
    elif math.isnan(low):
        figures = f"{difference:+.3f} on its only image (no interval from 1 image: weak evidence)"
    else:
        figures = f"{difference:+.3f} [{low:+.3f}, {high:+.3f}], 95% interval over {n} images"
    subject = {
        "better": "is better than",
        "worse": "is worse than",
        "no clear difference": "shows no clear difference from",
    }[kind]
    notes = group_notes([d], evaluation.by_group, metric, higher_is_better=higher) if kind == "better" else ()
    if notes:
        advice = ("Use the model on images like those it wins on, the baseline on the group(s) where it loses; "
                  "or train with more images like those.")  # fmt: skip
    line = f"Verdict: {model} {subject} the classical baseline {baseline} on {metric}: {figures}. {advice}"
    line += "".join(f" But: {note}." for note in notes)
    return Verdict(kind, model, baseline, metric, difference, (low, high), n, advice, line, notes)


def images_to_separate(n: int, difference: float, low: float, high: float) -> int | None:
    """Annotated images (in all) for the 95% interval of ``difference`` to exclude 0.

    The interval's half-width shrinks as 1/sqrt(n); None when the difference is 0 or undefined.

    >>> images_to_separate(10, 0.02, -0.01, 0.05)   # half-width 0.03: (0.03 / 0.02)**2 * 10
    23
    """
    if not all(math.isfinite(x) for x in (difference, low, high)) or difference == 0:
        return None
    half = (high - low) / 2
    return max(n + 1, math.ceil(n * (half / abs(difference)) ** 2))


def _advice(kind: str, task: str, baseline: str, difference: float, interval: tuple[float, float], n: int,
            higher: bool) -> str:  # fmt: skip
    more = "training pairs" if task == "restoration" else "annotated images"
    once = " Evaluate on more images to confirm it." if n == 1 else ""
    if kind == "better":
        return "Use the model; check the report's per-image and per-group figures for images it fails on." + once
    if kind == "worse":
        return f"Use the baseline ({baseline}), or train longer and with more {more}, then compare again." + once
    low, high = interval
    if math.isnan(low):
        return f"Evaluate on 2 or more images to tell them apart; until then prefer the simpler {baseline}."
    half = (high - low) / 2
    favours_model = (difference > 0) == higher and difference != 0
    if favours_model and half > abs(difference) > 0:
        needed = images_to_separate(n, difference, low, high)
        return (f"Annotate more evaluation images (about {needed} in all would separate a difference this size), "
                f"or train longer; until then the simpler {baseline} does as well.")  # fmt: skip
    return f"Train longer or with more {more}; until then the simpler {baseline} does as well."
