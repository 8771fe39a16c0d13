"""The evaluation report: one self-contained HTML file, and the per-image CSV.

Figures are drawn with matplotlib (no pyplot state), embedded as base64 PNG; the CSS is
inline; nothing is fetched from anywhere, so the file opens offline and can be mailed.
:func:`render_report` also returns the numbers behind every figure, which
:func:`microzoo.qc.evaluate.write_evaluation` stores in ``metrics.json``.
"""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from microzoo.qc import panels
from microzoo.qc.tasks import get_task

if TYPE_CHECKING:
    import jinja2

    from microzoo.qc.evaluate import Evaluation

_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def format_figure(value: float | None, metric: str = "") -> str:
    """A figure as every report shows it: 2 decimals for PSNR, distances and MAE, else 3; ``–`` for none."""
    if value is None or np.isnan(value):
        return "–"
    if np.isinf(value):
        return "∞" if value > 0 else "−∞"
    digits = 2 if metric.startswith(("psnr", "mean_distance", "mae")) else 3
    return f"{value:.{digits}f}"


def format_estimate(value: float | None, low: float | None, high: float | None, metric: str = "") -> str:
    """A figure and its interval: ``0.777 [0.715, 0.828]``."""
    return f"{format_figure(value, metric)} [{format_figure(low, metric)}, {format_figure(high, metric)}]"


def html_templates(folder: Path) -> jinja2.Environment:
    """The Jinja environment of a report's templates in ``folder`` (escaping on, undefined names fail)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def png_uri(figure: Figure) -> str:
    """A figure as a PNG ``data:`` URI to embed in a self-contained HTML report."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _colour(index: int) -> str:
    return _COLOURS[index % len(_COLOURS)]


# ---------------------------------------------------------------- plots of figures


def _distributions(evaluation: Evaluation) -> tuple[str, dict[str, dict[str, np.ndarray]]]:
    main = evaluation.main_metric
    # the main metric first, then its kin (fitted beside fitted, raw beside raw)
    others = sorted(
        (m for m in evaluation.headline if m != main), key=lambda m: m.endswith("_fitted") != main.endswith("_fitted")
    )
    shown = [main, *others][:4]
    figure = Figure(figsize=(3.2 * len(shown), 3.2 + 0.15 * max(len(m) for m in evaluation.methods)))
    rng = np.random.default_rng(0)
    numbers: dict[str, dict[str, np.ndarray]] = {}
    for k, metric in enumerate(shown):
        axes = figure.add_subplot(1, len(shown), k + 1)
        values = [evaluation.per_image[m][metric] for m in evaluation.methods]
        finite = [v[np.isfinite(v)] for v in values]
        axes.boxplot(finite, showfliers=False, widths=0.5, medianprops={"color": "black"})
        for i, v in enumerate(finite):
            axes.plot(i + 1 + rng.uniform(-0.15, 0.15, v.size), v, "o", ms=3.5, alpha=0.7, color=_colour(i))
        axes.set_xticks(range(1, len(values) + 1), evaluation.methods, rotation=30, ha="right")
        better = "higher is better" if get_task(evaluation.task).higher_is_better(metric) else "lower is better"
        axes.set_title(f"{metric}\n({better})", fontsize=10)
        axes.grid(axis="y", alpha=0.3)
        numbers[metric] = {m: v for m, v in zip(evaluation.methods, values, strict=True)}
    figure.tight_layout()
    return png_uri(figure), numbers


def _threshold_curves(evaluation: Evaluation) -> tuple[str, dict[str, dict[str, list[float]]]]:
    thresholds = evaluation.settings["iou_thresholds"]
    figure = Figure(figsize=(9, 3.4))
    numbers: dict[str, dict[str, list[float]]] = {}
    for k, name in enumerate(("f1", "accuracy")):
        axes = figure.add_subplot(1, 2, k + 1)
        for i, method in enumerate(evaluation.methods):
            estimates = [evaluation.summary[method][f"{name}@{t:g}"] for t in thresholds]
            values = [e.value for e in estimates]
            axes.plot(thresholds, values, "o-", ms=3, color=_colour(i), label=method)
            axes.fill_between(
                thresholds, [e.low for e in estimates], [e.high for e in estimates], color=_colour(i), alpha=0.15
            )
            numbers.setdefault(method, {"threshold": list(thresholds)})
            numbers[method].update(
                {name: values, f"{name}_low": [e.low for e in estimates], f"{name}_high": [e.high for e in estimates]}
            )
        axes.set_xlabel("IoU threshold")
        axes.set_ylabel(name)
        axes.set_ylim(0, 1.02)
        axes.grid(alpha=0.3)
        axes.set_title(f"{name} vs IoU threshold (band: 95% interval)", fontsize=10)
    axes.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    return png_uri(figure), numbers


def _reliability(evaluation: Evaluation) -> tuple[str, dict[str, object]]:
    """The reliability diagram of the methods whose probabilities were given, and its numbers."""
    from microzoo.qc.calibration import draw_reliability

    figure = Figure(figsize=(4.6, 4.2))
    draw_reliability(figure.add_subplot(1, 1, 1), evaluation.calibration, _COLOURS)
    figure.tight_layout()
    return png_uri(figure), {method: result.to_dict() for method, result in evaluation.calibration.items()}


# ---------------------------------------------------------------- image panels


def image_panel(
    evaluation: Evaluation,
    index: int,
    reason: str,
    truths: Sequence[np.ndarray],
    predictions: Mapping[str, Sequence[np.ndarray]],
    inputs: Sequence[np.ndarray] | None,
) -> str:
    """One image's panel as the report shows it (a PNG ``data:`` URI): the input, the truth, and per
    method its prediction (titled with its figure) and its errors; ``reason`` goes in the title."""
    task, methods = get_task(evaluation.task), evaluation.methods
    truth = truths[index]
    columns = (1 if inputs is not None else 0) + 1 + 2 * len(methods)
    figure = Figure(figsize=(2.3 * columns, 2.9))
    axes = list(figure.subplots(1, columns, squeeze=False)[0])
    if inputs is not None:
        ax = axes.pop(0)
        ax.imshow(panels.stretch(panels.plane(inputs[index], colour=True)), cmap="gray")
        ax.set_title("input", fontsize=9)
    settings, background = evaluation.settings, panels.background(inputs, truth, index)
    task.show(axes[0], truth, settings=settings, background=background)
    axes[0].set_title("truth", fontsize=9)
    image_axes, error_axes = axes[1::2], axes[2::2]
    for ax, method in zip(image_axes, methods, strict=True):
        value = format_figure(evaluation.per_image[method][evaluation.main_metric][index], evaluation.main_metric)
        task.show(ax, predictions[method][index], settings=settings, background=background)
        ax.set_title(f"{method}\n{evaluation.main_metric} {value}", fontsize=9)
    task.show_errors(
        error_axes,
        figure,
        truth,
        [predictions[m][index] for m in methods],
        settings=settings,
        background=background,
        main_metric=evaluation.main_metric,
    )
    for ax, method in zip(error_axes, methods, strict=True):
        ax.set_title(f"{method}: errors", fontsize=9)
    for ax in figure.axes:
        if ax.images or ax.lines:
            ax.set_xticks([])
            ax.set_yticks([])
    figure.suptitle(f"{evaluation.images[index]} ({reason})", fontsize=10, y=1.0)
    figure.tight_layout()
    return png_uri(figure)


def _ranked_images(evaluation: Evaluation) -> list[int]:
    """Image indices from worst to best by the main metric averaged over methods."""
    metric = evaluation.main_metric
    stack = np.stack([evaluation.per_image[m][metric] for m in evaluation.methods])
    stack = np.where(np.isnan(stack), np.nan, np.clip(stack, -1e12, 1e12))
    defined = ~np.isnan(stack)
    mean = np.where(
        defined.any(axis=0), np.where(defined, stack, 0).sum(axis=0) / np.maximum(defined.sum(axis=0), 1), np.nan
    )
    key = mean if get_task(evaluation.task).higher_is_better(metric) else -mean
    order = np.argsort(np.where(np.isnan(key), np.inf, key), kind="stable")
    return [int(i) for i in order if not np.isnan(key[i])]


# ---------------------------------------------------------------- the document


def render_report(
    evaluation: Evaluation,
    *,
    truths: Sequence[np.ndarray],
    predictions: Mapping[str, Sequence[np.ndarray]],
    inputs: Sequence[np.ndarray] | None = None,
    n_panels: int = 4,
    n_worst: int = 8,
) -> tuple[str, dict[str, object]]:
    """Render the report; return the HTML text and the numbers behind its figures."""
    from microzoo import __version__

    metric = evaluation.main_metric
    task = get_task(evaluation.task)
    ranked = _ranked_images(evaluation)
    worst_values = [
        (evaluation.images[i], [float(evaluation.per_image[m][metric][i]) for m in evaluation.methods])
        for i in ranked[:n_worst]
    ]
    worst = [{"image": image, **dict(zip(evaluation.methods, values, strict=True))} for image, values in worst_values]
    chosen: dict[int, str] = {}
    if ranked:
        picks = [
            (ranked[0], "worst"),
            (ranked[1] if len(ranked) > 1 else ranked[0], "second worst"),
            (ranked[len(ranked) // 2], "median"),
            (ranked[-1], "best"),
        ]
        for index, reason in picks:
            chosen.setdefault(index, reason)
    panels = [
        {
            "image": evaluation.images[i],
            "reason": reason,
            "png": image_panel(evaluation, i, reason, truths, predictions, inputs),
        }
        for i, reason in list(chosen.items())[:n_panels]
    ]
    distribution_png, distribution_numbers = _distributions(evaluation)
    curves_png, curve_numbers = _threshold_curves(evaluation) if task.threshold_curves else (None, None)
    reliability_png, reliability_numbers = _reliability(evaluation) if evaluation.calibration else (None, None)

    summary_rows = []
    for method in evaluation.methods:
        cells = []
        for name in evaluation.headline:
            estimate = evaluation.summary[method][name]
            values = [evaluation.summary[m][name].value for m in evaluation.methods]
            defined = [v for v in values if not np.isnan(v)]
            best = (
                bool(defined)
                and len(evaluation.methods) > 1
                and estimate.value == (max(defined) if task.higher_is_better(name) else min(defined))
            )
            cells.append(
                {
                    "value": format_figure(estimate.value, name),
                    "interval": f"[{format_figure(estimate.low, name)}, {format_figure(estimate.high, name)}]",
                    "best": best,
                }
            )
        summary_rows.append({"method": method, "cells": cells})
    differences = [
        {
            "pair": f"{d.first} − {d.second}",
            "metric": d.metric,
            "difference": format_figure(d.difference, d.metric),
            "interval": f"[{format_figure(d.low, d.metric)}, {format_figure(d.high, d.metric)}]",
            "verdict": d.verdict,
            "decided": d.better is not None,
        }
        for d in evaluation.differences
        if d.metric == metric or len(evaluation.headline) <= 6
    ]
    environment = html_templates(Path(__file__).parent / "templates")
    html = environment.get_template("report.html.j2").render(
        evaluation=evaluation,
        headline=[
            {"name": n, "arrow": "↑" if task.higher_is_better(n) else "↓", "main": n == metric}
            for n in evaluation.headline
        ],
        summary_rows=summary_rows,
        differences=differences,
        groups=_group_rows(evaluation, metric),
        how_to_read=task.how_to_read,
        distribution_png=distribution_png,
        curves_png=curves_png,
        reliability_png=reliability_png,
        calibration=[
            {
                "method": m,
                "ece": format_figure(r.ece),
                "interval": f"[{format_figure(r.ece_low)}, {format_figure(r.ece_high)}]",
            }
            for m, r in evaluation.calibration.items()
        ],
        worst=[
            {"image": image, "values": [format_figure(v, metric) for v in values]} for image, values in worst_values
        ],
        panels=panels,
        settings=evaluation.settings,
        version=__version__,
        has_inputs=inputs is not None,
    )
    numbers: dict[str, object] = {
        "distributions": distribution_numbers,
        "worst_images": worst,
        "panels": [{"image": p["image"], "reason": p["reason"]} for p in panels],
    }
    if curve_numbers is not None:
        numbers["threshold_curves"] = curve_numbers
    if reliability_numbers is not None:
        numbers["reliability"] = reliability_numbers
    return html, numbers


def _group_rows(evaluation: Evaluation, metric: str) -> list[dict[str, object]]:
    """Per group of images: each method's main figure with its interval, and the verdicts of the pairs."""
    rows = []
    for name, group in evaluation.by_group.items():
        cells = []
        for method in evaluation.methods:
            e = group.summary[method][metric]
            cells.append(format_estimate(e.value, e.low, e.high, metric))
        verdicts = [f"{d.first} − {d.second}: {format_figure(d.difference, metric)} ({d.verdict})"
                    for d in group.differences if d.metric == metric]  # fmt: skip
        rows.append({"name": name, "n": len(group.images), "cells": cells, "verdicts": verdicts})
    return rows


def write_csv(path: str | Path, evaluation: Evaluation) -> None:
    """One row per image and method: every per-image figure, headline figures first."""
    first = evaluation.per_image[evaluation.methods[0]]
    columns = list(evaluation.headline) + sorted(set(first) - set(evaluation.headline))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "method", *columns])
        for method in evaluation.methods:
            figures = evaluation.per_image[method]
            for i, image in enumerate(evaluation.images):
                writer.writerow(
                    [image, method, *("" if np.isnan(figures[c][i]) else f"{figures[c][i]:.6g}" for c in columns)]
                )
