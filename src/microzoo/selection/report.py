"""The selection report: ``selection.json`` and a self-contained ``selection.html`` (the QC report's style).

The HTML shows the ranking with intervals, which differences are real, the verdict against the
classical baseline, the figure of every candidate on every image, and panels of each candidate
on the same images: those where the candidates differ most, and the median one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from microzoo.io.atomic import atomic_output
from microzoo.qc import panels
from microzoo.qc.report import format_estimate, format_figure, html_templates, png_uri  # one look for every report
from microzoo.qc.tasks import get_task

if TYPE_CHECKING:
    from microzoo.qc.compare import MethodRuns
    from microzoo.selection.rank import Ranking
    from microzoo.selection.select import Selection


def write_selection(selection: Selection, runs: MethodRuns, out_dir: Path, *, n_panels: int = 4) -> dict[str, Path]:
    """Write ``selection.json`` and ``selection.html`` into ``out_dir`` (each atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    document = selection_document(selection, runs)
    paths = {"json": out_dir / "selection.json", "report": out_dir / "selection.html"}
    with atomic_output(paths["json"]) as tmp:
        tmp.write_text(json.dumps(document, indent=1), encoding="utf-8")
    html = render_selection(selection, runs, document, n_panels=n_panels)
    with atomic_output(paths["report"]) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return paths


def selection_document(selection: Selection, runs: MethodRuns) -> dict[str, Any]:
    """What ``selection.json`` holds."""
    label_of = {source: label for label, source in runs.sources.items()}
    return {
        "task": runs.task,
        "images": list(runs.names),
        "ground_truth": runs.truths is not None,
        "candidates": [
            {"method": label_of.get(c.source), "source": c.source, "origin": c.origin, "title": c.title}
            for c in selection.candidates
        ],
        "baselines": {name: runs.classical_params[name] for name in selection.baselines},
        "left_out": list(selection.left_out),
        "notices": list(selection.notices),
        **selection.ranking.to_dict(),
        "qc_report": str(selection.paths["qc report"]) if "qc report" in selection.paths else None,
    }


def _panel_images(ranking: Ranking, n: int, count: int) -> list[tuple[int, str]]:
    """Indices of the images to draw, then the median one. With truth: where the methods' figures
    spread most (where the choice matters); without: where they agree least."""
    stack = np.array([np.nan_to_num(np.clip(v, -1e12, 1e12), nan=0.0) for v in ranking.per_image.values()])
    mean = stack.mean(axis=0)
    if ranking.evidence == "ground truth":
        key, reason = -(stack.max(axis=0) - stack.min(axis=0)), "the methods differ most"
    else:
        key, reason = mean, "the candidates agree least"
    order = [int(i) for i in np.argsort(key, kind="stable")]
    chosen = [(i, reason) for i in order[: max(count - 1, 1)]]
    median = int(np.argsort(mean, kind="stable")[n // 2])
    if median not in {i for i, _ in chosen}:
        chosen.append((median, "median image"))
    return chosen[:count]


def _panel(runs: MethodRuns, order: list[str], per_image: dict[str, list[float]], index: int, reason: str,
           metric: str) -> str:  # fmt: skip
    task = get_task(runs.task)
    truth = runs.truths[index] if runs.truths is not None else None
    columns = 1 + (truth is not None) + len(order)
    figure = Figure(figsize=(2.3 * columns, 2.9))
    axes = list(figure.subplots(1, columns, squeeze=False)[0])
    reference = truth if truth is not None else runs.predictions[order[0]][index]
    background = panels.background(runs.gray_inputs, reference, index)
    settings = {"classes": np.unique(np.concatenate([np.unique(runs.predictions[m][index]) for m in order]))}
    ax = axes.pop(0)
    ax.imshow(panels.stretch(panels.plane(runs.inputs[index], colour=True)), cmap="gray")
    ax.set_title("input", fontsize=9)
    if truth is not None:
        ax = axes.pop(0)
        task.show(ax, truth, settings=settings, background=background)
        ax.set_title("truth", fontsize=9)
    for ax, method in zip(axes, order, strict=True):
        task.show(ax, runs.predictions[method][index], settings=settings, background=background)
        ax.set_title(f"{method}\n{_short(metric)} {format_figure(per_image[method][index], metric)}", fontsize=9)
    for ax in figure.axes:
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle(f"{runs.names[index]} ({reason})", fontsize=10, y=1.0)
    figure.tight_layout()
    return png_uri(figure)


def _cell(ranking: Ranking, method: str, index: int) -> str:
    value = format_figure(ranking.per_image[method][index], ranking.metric)
    verdicts = ranking.trust.get(method)
    return f"{value} ({verdicts[index]})" if verdicts else value


def _short(metric: str) -> str:
    return metric.split(" (")[0]


def render_selection(selection: Selection, runs: MethodRuns, document: dict[str, Any], *, n_panels: int = 4) -> str:
    """The HTML report."""
    from microzoo import __version__

    ranking = selection.ranking
    order = [e.method for e in ranking.entries]
    metric = ranking.metric
    n = len(runs.names)
    panel_list = [
        {"png": _panel(runs, order, ranking.per_image, i, reason, metric)}
        for i, reason in _panel_images(ranking, n, n_panels)
    ]
    rows = [
        {
            "rank": e.rank, "method": e.method, "kind": e.kind, "value": format_figure(e.value, metric),
            "interval": f"[{format_figure(e.low, metric)}, {format_figure(e.high, metric)}]",
            "trusted": "–" if e.trusted is None else f"{e.trusted:.0%}", "trust_evidence": e.trust_evidence,
        }
        for e in ranking.entries
    ]  # fmt: skip
    per_image = [{"image": name, "values": [_cell(ranking, m, i) for m in order]} for i, name in enumerate(runs.names)]
    groups = [
        {
            "name": name, "n": group["n_images"],
            "cells": [format_estimate(v, lo, hi, metric) for v, lo, hi in (group["figures"][m] for m in order)],
        }
        for name, group in ranking.by_group.items()
    ]  # fmt: skip
    evidence = sorted({f"{e.method}: {e.trust_evidence}" for e in ranking.entries if e.trust_evidence})
    environment = html_templates(Path(__file__).parent / "templates")
    qc = document.get("qc_report")
    return environment.get_template("selection.html.j2").render(
        ranking=ranking, rows=rows, order=order, per_image=per_image, panels=panel_list, n_images=n,
        separations=ranking.separations, statements=ranking.statements, left_out=selection.left_out,
        notices=selection.notices, candidates=document["candidates"], baselines=document["baselines"],
        qc_report=Path(qc).relative_to(Path(qc).parents[1]).as_posix() if qc else None,
        groups=groups, trust_evidence=evidence,
        show_trust=any(e.trusted is not None or e.trust_evidence for e in ranking.entries),
        version=__version__, finite=lambda x: x is not None and math.isfinite(x),
    )  # fmt: skip
