"""`microzoo learning-curve`: how many annotated images are needed. The work is in
:mod:`microzoo.train.learning_curve`; this module parses and prints."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape


def learning_curve_command(
    task: str = typer.Argument(..., help="The training task: semantic, instances, care, n2v."),
    images: Path = typer.Option(..., "--images", help="Folder of input images."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (runs, report.html, learning_curve.json)."),
    labels: Path | None = typer.Option(None, "--labels", help="Label images (semantic, instances)."),
    targets: Path | None = typer.Option(None, "--targets", help="Clean images (care; n2v: to score)."),
    fractions: str = typer.Option("0.1,0.25,0.5,1", "--fractions", help="Fractions of the training images."),
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs of every run (the same budget each)."),
    steps_per_epoch: int | None = typer.Option(None, "--steps-per-epoch", help="Steps of each epoch."),
    patch: int | None = typer.Option(None, "--patch", help="Patch side (default 128)."),
    max_minutes: float | None = typer.Option(None, "--max-minutes", help="Also stop each run after this long."),
    from_model: str | None = typer.Option(None, "--from", help="Start every run from this package's weights."),
    repeats: int = typer.Option(
        1, "--repeats", min=1, help="Train each fraction this many times (seeds seed, seed+1, ...) and average."
    ),
) -> None:
    """Train on growing fractions of your images and fit the curve: the figure to expect with more annotation."""
    from microzoo.cli import _console, _progress_bar
    from microzoo.errors import ConfigError
    from microzoo.train import package_name, short_form_config
    from microzoo.train.learning_curve import learning_curve

    try:
        chosen = [float(f) for f in fractions.split(",") if f.strip()]
    except ValueError:
        raise ConfigError(f"--fractions {fractions}: give numbers separated by commas, e.g. 0.1,0.25,0.5,1") from None
    config = short_form_config(
        task, images=images.resolve(), labels=labels.resolve() if labels else None,
        targets=targets.resolve() if targets else None, patch_size=patch, epochs=epochs,
        steps_per_epoch=steps_per_epoch, max_minutes=max_minutes, name=package_name(f"{task}-{images.resolve().name}"),
    )  # fmt: skip
    config.training.init_from = from_model
    with _progress_bar("learning curve") as progress:
        curve = learning_curve(config, out_dir=out, fractions=chosen, repeats=repeats, progress=progress)
    console = _console()
    console.print(escape(curve.summary()))
    console.print(escape(f"Report: {out / 'report.html'}"))


def register(app: typer.Typer) -> None:
    """Add `microzoo learning-curve` to the command line."""
    app.command("learning-curve")(learning_curve_command)
