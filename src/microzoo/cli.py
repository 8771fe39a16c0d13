"""The `microzoo` command line: parse, show progress, render results. The work lives in the library."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from microzoo.progress import ProgressCallback

if TYPE_CHECKING:
    from rich.console import Console

    from microzoo.qc.evaluate import Evaluation
    from microzoo.runtime.batch import FileResult
    from microzoo.runtime.predict import Model
    from microzoo.runtime.uncertainty import UncertaintySettings
    from microzoo.trust.note import TrustNote

app = typer.Typer(
    name="microzoo",
    help="Find, run, train, check and publish deep-learning models for microscopy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print the microzoo version."""
    from microzoo import __version__

    typer.echo(__version__)


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _progress_bar(description: str = "working") -> Iterator[ProgressCallback]:
    """A rich progress bar behind the library's ``progress(done, total, description)`` callback."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=_console(stderr=True),
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what or description)

        yield update


def _parse_tile(tile: str | None) -> int | dict[str, int] | None:
    """``--tile 256`` (every spatial axis) or ``--tile y=256,x=512``."""
    from microzoo.errors import ConfigError

    if tile is None:
        return None
    try:
        sizes = (
            {"": int(tile)}
            if "=" not in tile
            else {k.strip(): int(v) for k, v in (part.split("=") for part in tile.split(","))}
        )
    except ValueError as error:
        raise ConfigError(
            f"cannot read --tile '{tile}': write one size (--tile 256) or sizes per axis (--tile y=256,x=512)"
        ) from error
    if any(size < 1 for size in sizes.values()):
        raise ConfigError(
            f"--tile {tile}: tile sizes must be positive (e.g. --tile 256); leave --tile out to fit the memory budget"
        )
    return sizes[""] if "" in sizes else sizes


def _parse_channels(channel: str | None) -> list[int] | None:
    """``--channel 0`` or ``--channel 0,2``: image channels numbered from 0."""
    from microzoo.errors import ConfigError

    if channel is None:
        return None
    try:
        channels = [int(part) for part in channel.split(",")]
    except ValueError as error:
        raise ConfigError(
            f"cannot read --channel '{channel}': write channel numbers from 0, e.g. --channel 0 or --channel 0,2"
        ) from error
    if any(c < 0 for c in channels):
        raise ConfigError(f"--channel {channel}: channels are numbered from 0 (e.g. --channel 0)")
    return channels


@app.command()
def validate(model: str = typer.Argument(..., help="Package folder, .zip, bioimageio.yaml or URL.")) -> None:
    """Check a model package against the BioImage Model Zoo format (and every file's sha256)."""
    from microzoo.package.validate import validate_package

    report = validate_package(model)
    out = _console()
    out.print(f"[bold]{escape(str(report.name or model))}[/] (format {report.format_version})")
    for problem in report.errors:
        out.print(f"  [red]error[/]   {escape(f'{problem.where}: {problem.message}')}")
    for problem in report.warnings:
        out.print(f"  [yellow]warning[/] {escape(f'{problem.where}: {problem.message}')}")
    if report.passed:
        out.print(f"[green]valid[/] ({len(report.warnings)} warning(s))")
    else:
        out.print(f"[red]invalid[/]: {len(report.errors)} error(s), {len(report.warnings)} warning(s)")
        raise typer.Exit(1)


@app.command()
def info(
    model: str = typer.Argument(
        ..., help="Package folder, .zip, bioimageio.yaml, URL or zoo:NAME or zoo:NAME/VERSION."
    ),
    zoo: str | None = typer.Option(None, "--zoo", help="The zoo a zoo:NAME or zoo:NAME/VERSION model comes from."),
) -> None:
    """Show what a model does, what it takes and gives, and how to cite it."""
    from rich.table import Table

    from microzoo.package.load import open_package
    from microzoo.runtime.summary import summarize

    _use_zoo(zoo)
    package = open_package(model)
    s = summarize(package)
    out = _console()
    for notice in package.notices:
        out.print(f"[yellow]note[/] {escape(notice)}")
    out.print(f"[bold]{escape(s.name)}[/]  " + escape(f"(format {s.format_version}, licence {s.license})"))
    out.print(escape(s.description))
    out.print(escape(f"task: {s.task or 'not stated'}   tags: {', '.join(s.tags)}"))
    out.print(escape(f"weights: {', '.join(s.weight_formats)}   authors: {', '.join(s.authors)}"))
    table = Table("", "tensor", "axes and sizes", "processing", show_lines=True)
    for kind, tensors in (("input", s.inputs), ("output", s.outputs)):
        for t in tensors:
            table.add_row(
                kind, escape(t.id), escape("\n".join(t.size_rules)), escape("\n".join(t.processing) or "none")
            )
    out.print(table)
    for citation in s.citations:
        out.print(escape(f"cite: {citation}"))


@app.command("test")
def test_model(
    model: str = typer.Argument(..., help="Package folder, .zip, bioimageio.yaml or URL."),
    weights: str | None = typer.Option(None, "--weights", help="Test only this weight format."),
) -> None:
    """Reproduce the package's test outputs from its test inputs with every weight format."""
    from microzoo.package.load import open_package
    from microzoo.runtime.reproduce import test_package

    package = open_package(model)
    with _progress_bar("testing") as progress:
        results = test_package(package, weight_format=weights, progress=progress)
    out = _console()
    out.print(f"[bold]{escape(package.name)}[/]")
    for r in results:
        verdict = "[green]pass[/]" if r.passed else "[red]FAIL[/]"
        out.print(
            f"  {verdict}  {r.weight_format:<18} {r.output_id}: max |diff| {r.max_abs_diff:.3g}, "
            f"{r.mismatched_per_million:.1f} mismatched per million (allowed {r.allowed_per_million:g}; "
            f"rtol {r.relative_tolerance:g}, atol {r.absolute_tolerance:g})"
        )
        if r.error:
            out.print(f"         {escape(str(r.error))}")
    if not all(r.passed for r in results):
        raise typer.Exit(1)


def _use_zoo(zoo: str | None) -> None:
    """``--zoo URL``: where ``zoo:NAME[/VERSION]`` models come from (as ``$MICROZOO_ZOO``)."""
    if zoo:
        os.environ["MICROZOO_ZOO"] = zoo


@app.command()
def convert(
    model: str = typer.Argument(..., help="Package folder, .zip, bioimageio.yaml or URL."),
    to: str = typer.Option(..., "--to", help="Weight formats to add: onnx, torchscript, or onnx,torchscript."),
    out: Path = typer.Option(..., "-o", "--out", help="Folder of the new package (written whole or not at all)."),
) -> None:
    """Add TorchScript and/or ONNX weights (from the state dict or TorchScript), checked against the test outputs."""
    from microzoo.runtime.convert import convert_package

    with _progress_bar("converting") as progress:
        rdf = convert_package(model, to.split(","), out_dir=out, progress=progress)
    console = _console()
    console.print(escape(f"wrote {rdf.parent}: {to} weights added; each reproduces the package's test outputs"))
    console.print(escape(f"check it with: microzoo test {rdf.parent}"))


@app.command()
def predict(
    model: str = typer.Argument(
        ..., help="Package folder, .zip, bioimageio.yaml, URL or zoo:NAME or zoo:NAME/VERSION."
    ),
    inputs: list[str] = typer.Argument(..., help="Image files, folders or glob patterns."),
    out: Path = typer.Option(
        ..., "-o", "--out", help="Output folder, or one file for one input (out.ome.zarr streams, resumably)."
    ),
    weights: str | None = typer.Option(None, "--weights", help="torchscript, onnx or pytorch_state_dict."),
    tile: str | None = typer.Option(
        None, "--tile", help="Tile size: 256, or y=256,x=512. Default: fit the memory budget."
    ),
    axes: str | None = typer.Option(None, "--axes", help="Axes of the input images, e.g. yx, zyx, cyx, yxc."),
    memory_budget: str | None = typer.Option(None, "--memory-budget", help="Memory one forward may use, e.g. 2GB."),
    output_format: str = typer.Option(
        ".tif", "--format", help="Output file type: .tif, .ome.zarr (streamed), .zarr, .npy or .png."
    ),
    channel: str | None = typer.Option(None, "--channel", help="Image channel(s) to use, from 0: 0, or 0,2."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace outputs that exist already."),
    zoo: str | None = typer.Option(None, "--zoo", help="The zoo a zoo:NAME or zoo:NAME/VERSION model comes from."),
    level: int = typer.Option(0, "--level", min=0, help="Resolution level of a multiscale input (0: full)."),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="CPU threads per forward (default: all; a resumed job keeps its own)."
    ),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Run on a local Dask cluster of N workers."),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="Run on an existing Dask cluster, e.g. tcp://host:8786."
    ),
    uncertainty: str | None = typer.Option(
        None,
        "--uncertainty",
        help="tta (flips, 90-degree rotations), dropout or ensemble: the output is the mean of several "
        "predictions, their spread is written beside it as <stem>_uncertainty.tif.",
    ),
    ensemble: list[str] | None = typer.Option(
        None, "--ensemble", help="Another model of the ensemble (repeat the option); implies --uncertainty ensemble."
    ),
    truth: Path | None = typer.Option(
        None, "--truth", help="Folder of ground truth named like the inputs: score the outputs and the baseline."
    ),
    task: str | None = typer.Option(
        None, "--task", help="With --truth: restoration, semantic or instances (default: from the package)."
    ),
    flip_check: str = typer.Option(
        "cheap",
        "--flip-check",
        help="The trust note's flip check: cheap (2 flips: the image predicted twice more), tta (all 8) or off.",
    ),  # fmt: skip
) -> None:
    """Run a model on images: files, folders and globs, tiled to fit memory, one progress bar.

    Images too large for memory, and every .ome.zarr output, stream tile by tile; an
    interrupted run continues when the same command runs again. With --truth, the outputs and
    the classical baseline are scored against the truth (report in OUT/qc) and the verdict printed."""
    from microzoo.errors import ConfigError
    from microzoo.io.read import find_images
    from microzoo.runtime.predict import Model
    from microzoo.runtime.resources import parse_bytes
    from microzoo.trust.note import predict_files_with_note

    if flip_check not in ("cheap", "tta", "off"):
        raise ConfigError(f"--flip-check {flip_check}: choose cheap, tta or off")
    _use_zoo(zoo)
    tiles, channels = _parse_tile(tile), _parse_channels(channel)
    budget = parse_bytes(memory_budget) if memory_budget is not None else None
    paths = find_images(inputs)
    loaded = Model.open(model, weights=weights, threads=threads)
    suffix = output_format if output_format.startswith(".") else f".{output_format}"
    with _progress_bar("predicting") as progress:
        run = predict_files_with_note(
            loaded,
            paths,
            out,
            axes=axes,
            tile=tiles,
            memory_budget=budget,
            channel=channels,
            suffix=suffix,
            overwrite=overwrite,
            level=level,
            workers=workers,
            scheduler=scheduler,
            progress=progress,
            uncertainty=_uncertainty_option(uncertainty, ensemble, threads),
            flips=flip_check,
        )
    console = _console()
    _print_notices(console, run.results)
    _print_uncertainty(console, run.results)
    written = [p for r in run.results for p in r.outputs.values()]
    console.print(
        escape(
            f"{loaded.package.name} ({loaded.weight_format}): {len(run.results)} image(s), "
            f"{len(written)} output(s) in {out}"
        )
    )
    _print_trust_note(console, run.trust)
    if run.trust_file is not None:
        console.print(escape(f"trust: each image's verdict, score and reasons in {run.trust_file}"))
    if truth is not None:
        from microzoo.io.files import image_stem
        from microzoo.io.read import image_format

        qc_dir = out / "qc" if image_format(out) is None else out.parent / f"{image_stem(out)}_qc"
        _score_against_truth(console, loaded, run.results, truth=truth, task=task, axes=axes, out_dir=qc_dir)


def _score_against_truth(console: Console, model: Model, results: list[FileResult], *, truth: Path,
                         task: str | None, axes: str | None, out_dir: Path) -> None:  # fmt: skip
    """``predict --truth``: figures, the verdict against the classical baseline, the report."""
    from microzoo.qc.scored import score_predictions

    with _progress_bar("scoring") as progress:
        scored = score_predictions(model, results, truth_dir=truth, out_dir=out_dir, task=task, axes=axes,
                                   progress=progress)  # fmt: skip
    _print_scored(console, scored.notices, scored.evaluation, list(scored.classical_params), scored.paths["report"])


def _uncertainty_option(
    method: str | None, ensemble: list[str] | None, threads: int | None
) -> UncertaintySettings | None:
    """``uncertainty=`` for predict_files from --uncertainty and --ensemble (None without them)."""
    from microzoo.runtime.predict import Model
    from microzoo.runtime.uncertainty import UncertaintySettings

    if method is None and not ensemble:
        return None
    others = tuple(Model.open(source, threads=threads) for source in ensemble or ())
    return UncertaintySettings(method=method or "ensemble", ensemble=others)


def _print_uncertainty(console: Console, results: list[FileResult]) -> None:
    """Where the uncertainty maps went, and how much the predictions disagreed."""
    uncertain = [(r.input.name, r.uncertainty, len(r.uncertainty_maps)) for r in results if r.uncertainty is not None]
    if not uncertain:
        return
    first = uncertain[0][1]
    n_maps = sum(n for _, _, n in uncertain)
    console.print(
        escape(
            f"uncertainty ({first.method}, {first.members} predictions each): "
            f"{n_maps} map(s) <stem>_uncertainty.tif beside the outputs"
        )
    )
    rates = {}
    for name, result, _ in uncertain:
        known = [rate for rate in result.flip_rate.values() if rate is not None]
        if known:
            rates[name] = max(known)
    if rates:
        worst = max(rates, key=rates.__getitem__)
        console.print(escape(f"  the predictions disagree on up to {rates[worst]:.0%} of the foreground ({worst})"))


def _print_notices(console: Console, results: list[FileResult]) -> None:
    """Each notice once, naming the files it concerns when it does not concern them all."""
    notices: dict[str, list[str]] = {}
    for result in results:
        for notice in result.prediction.notices:
            notices.setdefault(notice, []).append(result.input.name)
    for notice, names in notices.items():
        where = "" if len(names) == len(results) and len(results) > 1 else f" ({', '.join(names)})"
        console.print(f"[yellow]note:[/] {escape(notice + where)}")


def _print_trust_note(console: Console, note: TrustNote) -> None:
    """Render the library's trust note (microzoo.trust.note.TrustNote)."""
    if note.warning:
        console.print(f"[yellow]trust: {escape(note.headline)}[/]")
    else:
        console.print(f"trust: {escape(note.headline)}")
    for line in note.details:
        console.print(f"  {escape(line)}")


@app.command()
def evaluate(
    pred: list[str] = typer.Option(
        ..., "--pred", help="Folder of predictions; repeat as NAME=DIR for several methods."
    ),
    truth: Path = typer.Option(..., "--truth", help="Folder of ground truth, files named like the predictions."),
    task: str = typer.Option(..., "--task", help="restoration, semantic, instances or detection."),
    out: Path = typer.Option(..., "-o", "--out", help="Folder for metrics.json, per_image.csv and report.html."),
    images: Path | None = typer.Option(None, "--images", help="Folder of input images, shown in the report."),
    data_range: float | None = typer.Option(
        None, "--data-range", help="Restoration: value span for PSNR/SSIM (e.g. 255)."
    ),
    tolerance: float | None = typer.Option(None, "--tolerance", help="Detection: matching distance in pixels."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
) -> None:
    """Score predictions against ground truth, with 95% intervals, and write an HTML report."""
    from microzoo.errors import ConfigError
    from microzoo.qc.folders import evaluate_folders

    pred_dirs: dict[str, Path] = {}
    for entry in pred:
        name, _, folder = entry.rpartition("=") if "=" in entry else (Path(entry).name, "", entry)
        if not name or name in pred_dirs:
            raise ConfigError(f"--pred {entry}: give each method a distinct name, as --pred NAME=DIR")
        pred_dirs[name] = Path(folder)
    with _progress_bar("evaluating") as progress:
        result = evaluate_folders(
            pred_dirs,
            truth,
            task=task,
            images_dir=images,
            out_dir=out,
            data_range=data_range,
            tolerance=tolerance,
            seed=seed,
            progress=progress,
        )
    console = _console()
    _print_evaluation_summary(console, result)
    console.print(escape(f"Report: {out / 'report.html'}"))


def _print_scored(
    console: Console, notices: Sequence[str], evaluation: Evaluation, baselines: list[str], report: Path
) -> None:
    """What `compare` and `predict --truth` print: notices, the figures, the verdict lines, the report."""
    from microzoo.qc.verdict import verdicts_against_baselines

    for notice in notices:
        console.print(f"[yellow]note:[/] {escape(notice)}")
    _print_evaluation_summary(console, evaluation)
    for verdict in verdicts_against_baselines(evaluation, baselines):
        console.print(escape(verdict.line))
    console.print(escape(f"report: {report}"))


def _print_evaluation_summary(console: Console, result: Evaluation) -> None:
    """The data-set figures with intervals, and the verdict of every pair on the main metric."""
    from rich.table import Table

    table = Table(title=f"{result.task}: {len(result.images)} images, 95% bootstrap intervals")
    table.add_column("metric")
    for method in result.methods:
        table.add_column(method, justify="right")
    for metric in result.headline:
        cells = [result.summary[method][metric] for method in result.methods]
        table.add_row(metric, *(f"{c.value:.3f} [{c.low:.3f}, {c.high:.3f}]" for c in cells))
    console.print(table)
    for difference in result.differences:
        if difference.metric == result.main_metric:
            console.print(f"{difference.first} vs {difference.second} on {difference.metric}: {difference.verdict}")


@app.command()
def check(
    test: Path = typer.Option(..., "--test", help="Folder of the images you evaluate or predict on."),
    train: Path | None = typer.Option(None, "--train", help="Folder of the training images."),
    labels: Path | None = typer.Option(None, "--labels", help="Folder of the test label images."),
    model: str | None = typer.Option(None, "--model", help="Model package, or a training fingerprint .json/.yaml."),
    task: str | None = typer.Option(None, "--task", help="What you use the model for: semantic, instances, denoising."),
    use: str | None = typer.Option(None, "--use", help="What the outputs are for, e.g. 'intensity quantification'."),
    precision: float | None = typer.Option(None, "--precision", help="Precision you want to report, e.g. 0.02."),
    pixel_size: float | None = typer.Option(None, "--pixel-size", help="Micrometres per pixel of the test images."),
) -> None:
    """Good-practice checks (leakage, test-set size, label balance, unlike-training images, task).

    Prints each finding: what, why it matters, what to do. Exit code 0 when only notes, 1 when a
    warning was found (2 on unusable input). See docs/checks.md.
    """
    from microzoo.trust.checks import check_folders

    with _progress_bar("checking") as progress:
        findings = check_folders(
            test_dir=test,
            train_dir=train,
            labels_dir=labels,
            model=model,
            task=task,
            intended_use=use,
            requested_precision=precision,
            pixel_size=pixel_size,
            progress=progress,
        )
    console = _console()
    for finding in findings:
        colour = "yellow" if finding.severity == "warning" else "green"
        console.print(f"[bold {colour}]{finding.severity.upper()}[/] [bold]{finding.check}[/]: {escape(finding.what)}")
        console.print(f"  [dim]why it matters:[/] {escape(finding.why)}")
        console.print(f"  [dim]what to do:[/] {escape(finding.action)}")
    if any(finding.severity == "warning" for finding in findings):
        raise typer.Exit(1)


@app.command()
def compare(
    models: list[str] = typer.Argument(
        None, help="Model packages (folder, .zip, yaml or URL); none with --classical only."
    ),
    images: Path = typer.Option(..., "--images", help="Folder of input images."),
    truth: Path = typer.Option(..., "--truth", help="Folder of ground truth, paired with the images by file name."),
    task: str = typer.Option(..., "--task", help="restoration, semantic or instances."),
    out: Path = typer.Option(..., "-o", "--out", help="Folder for report.html, metrics.json, per_image.csv."),
    classical: bool = typer.Option(False, "--classical", help="Also run the matching classical baseline."),
    axes: str | None = typer.Option(None, "--axes", help="Axes of the input images, e.g. yx or yxc."),
    weights: str | None = typer.Option(None, "--weights", help="Weight format for every model."),
    truth_foreground: int | None = typer.Option(
        None, "--truth-foreground", help="Semantic: the truth value of the model's foreground (default: non-zero)."
    ),
    data_range: float | None = typer.Option(
        None, "--data-range", help="Restoration: value span for PSNR/SSIM, e.g. 255."
    ),
    train_noisy: Path | None = typer.Option(
        None, "--train-noisy", help="Restoration: noisy training images to tune the baselines on."
    ),
    train_clean: Path | None = typer.Option(None, "--train-clean", help="Restoration: their clean counterparts."),
) -> None:
    """Rank models and classical baselines on your own annotated images, with confidence intervals."""
    from microzoo.qc.compare import compare as run_compare

    with _progress_bar("comparing") as progress:
        result = run_compare(
            models or [],
            images_dir=images,
            truth_dir=truth,
            task=task,
            out_dir=out,
            classical=classical,
            axes=axes,
            weights=weights,
            truth_foreground=truth_foreground,
            data_range=data_range,
            train_noisy=train_noisy,
            train_clean=train_clean,
            progress=progress,
        )
    console = _console()
    _print_scored(console, result.notices, result.evaluation, list(result.classical_params), result.paths["report"])


@app.command("train")
def train_command(
    what: str = typer.Argument(
        ..., help="A training configuration (.yaml), or a task: semantic, instances, care, n2v."
    ),
    out: Path | None = typer.Option(None, "-o", "--out", help="Output folder (default: beside the YAML file)."),
    images: Path | None = typer.Option(None, "--images", help="Short form: folder of input images."),
    labels: Path | None = typer.Option(None, "--labels", help="Short form (semantic, instances): label images."),
    targets: Path | None = typer.Option(None, "--targets", help="Short form: clean images (care; n2v: QC only)."),
    foreground: str | None = typer.Option(
        None,
        "--foreground",
        help="Short form (semantic): 'nonzero' (labels > 0 are the objects, the default) "
        "or 'zero' (label 0 is, e.g. membranes).",
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Short form: number of epochs."),
    patch: int | None = typer.Option(None, "--patch", help="Short form: patch side (default 128, 3-D 32x64x64)."),
    three_d: bool = typer.Option(False, "--3d", help="Short form: train on 3-D stacks (zyx)."),
    max_minutes: float | None = typer.Option(None, "--max-minutes", help="Stop cleanly after this many minutes."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in the output folder."),
    from_model: str | None = typer.Option(
        None, "--from", help="Start from this package's weights (one microzoo exported; folder, zip or URL)."
    ),
) -> None:
    """Train a model on your images, check it against a classical baseline, export a zoo package."""
    from microzoo.errors import ConfigError
    from microzoo.train import config as configs
    from microzoo.train import package_name, short_form_config, train
    from microzoo.train.tasks import get_task

    if not what.lower().endswith((".yaml", ".yml")):
        get_task(what, source=f"`microzoo train {what}` (a task, or a configuration file .yaml)")
        if images is None or out is None:
            raise ConfigError(f"microzoo train {what} needs --images DIR and --out DIR")
        config = short_form_config(
            what, images=images.resolve(), labels=labels.resolve() if labels else None,
            targets=targets.resolve() if targets else None, foreground=foreground, spatial_dims=3 if three_d else 2,
            patch_size=patch, epochs=epochs, max_minutes=max_minutes,
            name=package_name(f"{what}-{images.resolve().name}"),
        )  # fmt: skip
    else:
        config = configs.load_config(what)
        if max_minutes is not None:
            config.training.max_minutes = max_minutes
        out = out or Path(what).resolve().parent / config.name
    if from_model is not None:
        config.training.init_from = from_model
    with _progress_bar("training") as progress:
        result = train(config, out_dir=out, progress=progress, resume=resume)
    console = _console()
    for notice in result.notices:
        console.print(escape(f"Note: {notice}"))
    last = result.history[-1]
    figures = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k.startswith("val_"))
    console.print(escape(f"Stopped after {len(result.history)} epochs ({result.stopped}); {result.kept}; "
                         f"last epoch: loss {last['train_loss']:.4g}, {figures}"))  # fmt: skip
    if result.verdict is not None:
        console.print(escape(result.verdict.line))
    for label, path in (("Package", result.package), ("QC report", result.report), ("Curves", result.curves_png),
                        ("Configuration", result.config), ("Checkpoints", result.best_checkpoint.parent)):  # fmt: skip
        if path is not None:
            console.print(escape(f"{label}: {path}"))


@app.command()
def baseline(
    method: str = typer.Argument(
        ..., help="gaussian, median, nl_means, bm3d (denoising); otsu, local (masks); watershed (instances)."
    ),
    images: Path = typer.Option(..., "--images", help="Folder of input images."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder (one TIFF per image, same name)."),
    param: list[str] = typer.Option(
        [], "--param", help="A method parameter as NAME=VALUE, e.g. sigma=1.5; repeatable."
    ),
) -> None:
    """Run a classical method on a folder: the baseline a careful analyst would use, timed."""
    from microzoo.errors import ConfigError
    from microzoo.qc.classical import run_classical_on_folder

    params: dict[str, float] = {}
    for entry in param:
        name, sep, value = entry.partition("=")
        try:
            params[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ConfigError(f"--param {entry}: write NAME=VALUE with a number, e.g. --param sigma=1.5")
    with _progress_bar(method) as progress:
        run = run_classical_on_folder(method, images, out, params=params or None, progress=progress)
    _console().print(
        escape(
            f"{method} {run.params}: {len(run.outputs)} image(s) in {out}, "
            f"{run.mean_seconds:.3f} s per image on average"
        )
    )


def _register_zoo_commands() -> None:
    from microzoo.cli_zoo import register

    register(app)


_register_zoo_commands()
from microzoo.cli_learn import register as _register_learn  # noqa: E402  (it needs `app`)

_register_learn(app)


def _register_select_command() -> None:
    from microzoo.cli_select import register

    register(app)


_register_select_command()


def _register_tour_command() -> None:
    from microzoo.cli_tour import register

    register(app)


_register_tour_command()


@app.callback()
def _root() -> None:
    """Find, run, train, check and publish deep-learning models for microscopy."""


def main() -> None:
    """Entry point: a MicrozooError prints its message without a traceback and exits with 2."""
    from microzoo.errors import MicrozooError

    try:
        app()
    except MicrozooError as error:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]Error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
