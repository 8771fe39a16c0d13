"""`microzoo tour` (what `make demo` runs): six steps on real data, one HTML page.

The work is in :mod:`microzoo.tour`; this module shows the progress of each step and prints
each step's one-line result as it ends, then the page's path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape


def tour(
    out: Path = typer.Option(Path("tour-output"), "-o", "--out", help="Folder for tour.html and every report."),
    quick: bool = typer.Option(False, "--quick", help="The same six steps at tiny sizes (for the tests)."),
    data: Path | None = typer.Option(
        None, "--data", help="The shared data (default: $MICROZOO_SHARED_DATA, else ../shared/data)."
    ),
) -> None:
    """Learn deep learning for microscopy by using it: a zoo, a model and its trust note, training,
    classical baselines, a learning curve, publishing, and a large image (under 10 minutes on 2 cores, offline)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from microzoo.cli import _console
    from microzoo.tour import STEPS, StepResult, run_tour

    console = _console(stderr=True)
    console.print(escape(f"The microzoo tour{' (quick)' if quick else ''}: {len(STEPS)} steps into {out.resolve()}"))
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as bar:  # fmt: skip
        task: Any = bar.add_task("starting", total=None)

        def update(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total or None, description=escape(what[:90]))

        def finished(step: StepResult) -> None:
            bar.console.print(
                f"[bold]{step.number}. {escape(step.title)}[/] ({step.seconds:.0f} s): {escape(step.summary)}",
                highlight=False,
            )

        result = run_tour(out, data=data, quick=quick, progress=update, on_step=finished)
    for line in result.failed:
        console.print(f"[red]failed:[/] {escape(line)}", highlight=False)
    console.print(escape(f"{len(result.steps)} of {len(STEPS)} steps in {result.seconds / 60:.1f} minutes."))
    typer.echo(str(result.page))
    if result.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `microzoo tour` to the command line."""
    app.command("tour")(tour)
