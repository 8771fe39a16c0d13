"""Quality control in a notebook: the QC table and the report's image panels.

The figures come from ``OUT/qc/metrics.json`` as training wrote it
(:func:`microzoo.qc.read_evaluation`); the panels are drawn by the report's own
:func:`microzoo.qc.report.panel_figure` from the validation outputs that
:func:`microzoo.train.train` returns, so they are the report's panels, not a copy parsed from it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from microzoo.errors import DataError
from microzoo.notebook.display import Picture, Pictures, Table

if TYPE_CHECKING:
    from microzoo.qc.evaluate import Evaluation
    from microzoo.train import TrainingResult

__all__ = ["qc_panels", "qc_table"]

NO_QC = (
    "No QC: this run had no ground truth for its validation images (give the label or clean images "
    "in the parameters cell)."
)


def _metrics_path(result: TrainingResult | str | os.PathLike[str]) -> Path | None:
    if isinstance(result, (str, os.PathLike)):
        return Path(result)
    return result.metrics


def qc_table(result: TrainingResult | str | os.PathLike[str]) -> Table:
    """The QC figures of a training run (or of any ``metrics.json``): one row per method (the
    model first, then the classical baseline), each headline figure with its 95% interval; then
    the paired difference on the main metric and the one-line verdict against the baseline."""
    from microzoo.qc.evaluate import read_evaluation
    from microzoo.qc.report import format_estimate, format_figure
    from microzoo.qc.verdict import baseline_verdict

    path = _metrics_path(result)
    if path is None:
        return Table((), (), before=(NO_QC,))
    evaluation = read_evaluation(path)
    headline = evaluation.headline
    rows = tuple(
        (method, *(format_estimate(*_estimate(evaluation, method, name), name) for name in headline))
        for method in evaluation.methods
    )
    after = [
        f"{d.first} − {d.second} on {d.metric}: {format_figure(d.difference, d.metric)} "
        f"[{format_figure(d.low, d.metric)}, {format_figure(d.high, d.metric)}] → {d.verdict}"
        for d in evaluation.differences
        if d.metric == evaluation.main_metric
    ]
    verdict = getattr(result, "verdict", None)
    if verdict is None and len(evaluation.methods) > 1:
        verdict = baseline_verdict(evaluation)
    if verdict is not None:
        after.append(verdict.line)
    before = f"**{len(evaluation.images)} validation image(s)**, value [95% interval]; main: {evaluation.main_metric}"
    return Table(("method", *headline), rows, before=(before,), after=tuple(after))


def _estimate(evaluation: Evaluation, method: str, name: str) -> tuple[float, float, float]:
    estimate = evaluation.summary[method][name]
    return estimate.value, estimate.low, estimate.high


def qc_panels(result: TrainingResult, n: int = 2) -> Pictures:
    """The QC report's image panels of a training run, worst image first, at most ``n``: the
    input, the truth, and each method's output and errors; with links to the whole report
    and the per-image figures."""
    from microzoo.qc.evaluate import read_evaluation
    from microzoo.qc.report import panel_choice, panel_figure

    if result.metrics is None or result.report is None:
        return Pictures((), (NO_QC,))
    check = result.validation
    if check is None or check.predictions is None:
        raise DataError(
            "the panels need the validation outputs of the training run in this session (what train() "
            f"returned); open the report instead: {result.report}"
        )
    evaluation = read_evaluation(result.metrics)
    pictures = tuple(
        Picture.of(panel_figure(evaluation, index, truths=check.truths, predictions=check.predictions,
                                inputs=check.inputs, reason=reason), f"{evaluation.images[index]} ({reason})")
        for index, reason in panel_choice(evaluation, n)
    )  # fmt: skip
    per_image = result.metrics.parent / "per_image.csv"
    links = (("the whole report", _relative(result.report)), ("per-image figures", _relative(per_image)))
    return Pictures(pictures, (f"{len(pictures)} of {len(evaluation.images)} validation images, worst first",), links)


def _relative(path: Path) -> str:
    """A path as a link from the folder Jupyter runs in (relative when it can be)."""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
