"""`microzoo select`: rank candidate models and the classical baseline on your images.

The work is in :mod:`microzoo.selection`; this module parses and prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape


def select(
    models: list[str] = typer.Argument(None, help="Model packages to rank (folder, .zip, yaml, URL, zoo:NAME)."),
    images: Path = typer.Option(..., "--images", help="Folder of your images."),
    truth: Path | None = typer.Option(
        None, "--truth", help="Folder of ground truth paired with the images by name (without it: weaker evidence)."
    ),
    zoo: str | None = typer.Option(None, "--zoo", help="A zoo's address: its models for the task join the candidates."),
    search: str = typer.Option("", "--search", help="With --zoo: words the zoo's models must match (tags, title)."),
    task: str = typer.Option("instances", "--task", help="instances, semantic or restoration."),
    out: Path = typer.Option(
        ..., "-o", "--out", help="Folder for selection.html, selection.json (and qc/ with --truth)."
    ),
    max_candidates: int = typer.Option(5, "--max-candidates", min=1, help="With --zoo: at most this many zoo models."),
    finetune: bool = typer.Option(
        False, "--finetune", help="Also fine-tune the best trainable candidate on your images (needs --truth)."
    ),
    finetune_steps: int = typer.Option(200, "--finetune-steps", min=1, help="With --finetune: training steps."),
    axes: str | None = typer.Option(None, "--axes", help="Axes of the input images, e.g. yx or yxc."),
    weights: str | None = typer.Option(None, "--weights", help="Weight format for every model."),
    truth_foreground: int | None = typer.Option(
        None, "--truth-foreground", help="Semantic: the truth value of the model's foreground (default: non-zero)."
    ),
    data_range: float | None = typer.Option(None, "--data-range", help="Restoration: value span, e.g. 255."),
) -> None:
    """Rank models (named, or a zoo's for the task) and the classical baseline on your own images.

    With --truth: by the task's metric, with 95% intervals, the same figures as `microzoo compare`;
    which differences are real, and how many more annotated images would separate the top two.
    Without: by agreement between the candidates and their trust notes (weaker evidence).
    """
    from microzoo.cli import _console, _progress_bar
    from microzoo.selection import select_models

    with _progress_bar("selecting") as progress:
        result = select_models(
            images_dir=images, task=task, out_dir=out, models=models or [], zoo=zoo, truth_dir=truth,
            search=search, max_candidates=max_candidates, finetune=finetune, finetune_steps=finetune_steps,
            axes=axes, weights=weights, truth_foreground=truth_foreground, data_range=data_range, progress=progress,
        )  # fmt: skip
    print_selection(_console(), result)


def print_selection(console: Any, result: Any) -> None:
    """The ranking table, what is real and what is noise, the verdict, and where the report is."""
    from rich.table import Table

    from microzoo.qc.report import format_estimate  # as selection.html and the napari widget show it

    ranking = result.ranking
    for notice in result.notices:
        console.print(f"[yellow]note:[/] {escape(notice)}")
    for reason in result.left_out:
        console.print(f"[dim]not run: {escape(reason)}[/]")
    table = Table(title=f"{ranking.task}: {ranking.n_images} images, ranked by {ranking.metric} (95% intervals)")
    short = ranking.metric.split(" (")[0]
    for column in ("rank", "method", "kind", short):
        table.add_column(column, justify="right" if column in ("rank", short) else "left")
    trust = any(e.trusted is not None for e in ranking.entries)
    if trust:
        table.add_column("trusted images", justify="right")
    for e in ranking.entries:
        cells = [str(e.rank), escape(e.method), e.kind, format_estimate(e.value, e.low, e.high, ranking.metric)]
        if trust:
            cells.append("–" if e.trusted is None else f"{e.trusted:.0%}")
        table.add_row(*cells)
    console.print(table)
    for statement in ranking.statements:
        console.print(escape(statement))
    if ranking.verdict:
        console.print(f"[bold]{escape(ranking.verdict)}[/]")
    console.print(escape(f"report: {result.paths['report']}"))


def register(app: typer.Typer) -> None:
    app.command("select")(select)
