"""How many images do I need? Train on growing fractions of the images and fit a learning curve.

:func:`learning_curve` puts a fixed set of validation images aside (``data.validation_images``,
or the config's seeded split), then trains the task once per fraction of the other images
(nested subsets: the 25% run has the 10% run's images and more), each run with the same
budget (the config's epochs x steps per epoch, or its minutes). Each trained model is scored
on the same validation images by the task's main metric (the QC figures of ``microzoo
evaluate``), and :func:`fit_curve` fits a saturating power law::

    figure(n) = a - b * (n / n_max) ** -c        (b >= 0; for lower-is-better figures: a + b * ...)

``a`` is the plateau, the figure that unlimited annotation would approach with this training
budget. The intervals come from resampling the validation images (bootstrap, the same resample
for every fraction, the fit repeated on each): they cover which validation images were drawn,
not the randomness of training, unless ``repeats`` trains several seeds per fraction: then each
point averages its seeds' per-image scores and the resamples draw the seeds too. With fewer than
four fractions the exponent is fixed at 0.5 (three free parameters would go through the points exactly).

:func:`write_learning_curve` writes ``report.html`` (the plot with the fitted curve and its
band), ``learning_curve.json`` and ``learning_curve.png``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.errors import DataError
from microzoo.progress import ProgressCallback, no_progress

__all__ = [
    "CurveFit", "CurvePoint", "LearningCurve", "curve_from_vectors", "fit_curve", "learning_curve",
    "write_learning_curve",
]  # fmt: skip

#: the fractions `microzoo learning-curve` trains on by default
DEFAULT_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
#: the exponent used when there are too few points to fit it
FIXED_EXPONENT = 0.5
#: "flattens": one more doubling of the images gains less than this (in the metric's units)
FLAT_GAIN = 0.01


@dataclass(frozen=True)
class CurveFit:
    """``a - sign * b * (n / n_max) ** -c``; ``sign`` is 1 when higher figures are better."""

    a: float
    b: float
    c: float
    n_max: int
    sign: int = 1
    exponent_fitted: bool = True

    def predict(self, n: float | np.ndarray) -> np.ndarray:
        return self.a - self.sign * self.b * (np.asarray(n, float) / self.n_max) ** -self.c

    def flattens_at(self, gain: float = FLAT_GAIN) -> float:
        """The number of images from which one more doubling gains less than ``gain``."""
        per_doubling = self.b * (1 - 2.0**-self.c)
        if per_doubling <= gain:
            return 0.0
        return float(self.n_max * (per_doubling / gain) ** (1 / self.c))


def fit_curve(sizes: Sequence[int], figures: Sequence[float], *, higher_is_better: bool = True) -> CurveFit:
    """Least-squares fit of the saturating power law to (images, figure) points."""
    from scipy.optimize import least_squares

    n = np.asarray(sizes, float)
    y = np.asarray(figures, float)
    if len(n) < 2 or len(set(n.tolist())) < 2:
        raise DataError("a learning curve needs figures at two or more different numbers of images")
    sign = 1 if higher_is_better else -1
    n_max = int(n.max())
    u = n / n_max
    free = len(set(n.tolist())) >= 4
    spread = float(np.ptp(y)) or 1e-3

    def residuals(p: np.ndarray) -> np.ndarray:
        c = p[2] if free else FIXED_EXPONENT
        return p[0] - sign * p[1] * u**-c - y

    start = np.array([y[np.argmax(n)] + sign * spread / 2, spread, FIXED_EXPONENT])
    low, high = np.array([-np.inf, 0.0, 0.05]), np.array([np.inf, np.inf, 3.0])
    if not free:
        start, low, high = start[:2], low[:2], high[:2]
    result = least_squares(residuals, start, bounds=(low, high))
    a, b = float(result.x[0]), float(result.x[1])
    c = float(result.x[2]) if free else FIXED_EXPONENT
    return CurveFit(a=a, b=b, c=c, n_max=n_max, sign=sign, exponent_fitted=free)


@dataclass(frozen=True)
class CurvePoint:
    """One run: its training images, the figure on the validation images and its interval."""

    fraction: float
    images: int
    value: float
    low: float
    high: float
    run: str = ""


@dataclass(frozen=True)
class LearningCurve:
    """The points, the fitted curve, and what it predicts (each with a 95% interval)."""

    task: str
    metric: str
    higher_is_better: bool
    points: tuple[CurvePoint, ...]
    fit: CurveFit
    #: images -> (predicted figure, low, high), at the largest run, twice and four times as many
    predictions: dict[int, tuple[float, float, float]]
    plateau: tuple[float, float, float]
    flattens_at: tuple[float, float, float]  # images; 0: already flat at the smallest
    validation_images: tuple[str, ...]
    n_bootstrap: int
    budget: str = ""
    notes: tuple[str, ...] = ()
    band: dict[str, list[float]] = field(default_factory=dict, repr=False)  # the plot's curve and band

    def summary(self) -> str:
        """The answer in a few sentences."""
        last = self.points[-1]
        lines = [f"With {last.images} training images: {self.metric} {last.value:.3f} "
                 f"[{last.low:.3f}, {last.high:.3f}] on {len(self.validation_images)} validation images."]  # fmt: skip
        for n, (value, low, high) in sorted(self.predictions.items()):
            if n > last.images:
                lines.append(f"Expected with {n} images: {value:.3f} [{low:.3f}, {high:.3f}].")
        lines.append(f"Plateau of this training budget: {self.plateau[0]:.3f} [{self.plateau[1]:.3f}, "
                     f"{self.plateau[2]:.3f}].")  # fmt: skip
        flat = self.flattens_at[0]
        if flat <= last.images:
            lines.append(f"The curve is already flat: doubling the images gains less than {FLAT_GAIN:g}; "
                         "annotating more is unlikely to help with this training budget "
                         "(train longer instead).")  # fmt: skip
        else:
            lines.append(f"The curve flattens (a doubling gains less than {FLAT_GAIN:g}) from about {flat:.0f} "
                         f"images [{self.flattens_at[1]:.0f}, {self.flattens_at[2]:.0f}].")  # fmt: skip
        return " ".join(lines)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["predictions"] = {str(k): list(v) for k, v in self.predictions.items()}
        data["summary"] = self.summary()
        data["curve"] = "a - b * (n / n_max) ** -c" if self.higher_is_better else "a + b * (n / n_max) ** -c"
        return data


def curve_from_vectors(
    sizes: Sequence[int], vectors: Sequence[np.ndarray], aggregate: Callable[[np.ndarray], dict[str, Any]], *,
    metric: str, higher_is_better: bool = True, fractions: Sequence[float] | None = None,
    names: Sequence[str] = (), n_bootstrap: int = 500, seed: int = 0, predict_at: Sequence[int] = (),
    task: str = "", budget: str = "", runs: Sequence[str] = (),
) -> LearningCurve:  # fmt: skip
    """Fit the curve to per-image additive scores (a QC scorer's ``vectorize``) of each run.

    ``vectors[i]`` is ``(n_images, k)`` for the run on ``sizes[i]`` images, the same validation
    images in the same order for every run; ``aggregate(sums)[metric]`` turns sums into the
    figure. Where a size was trained with several seeds, ``vectors[i]`` is ``(seeds, n_images, k)``:
    its point is the figure of the scores averaged over the seeds, and each resample draws the
    seeds too (with replacement, before the images), so the intervals cover the randomness of
    training as well as the choice of validation images. The images are resampled together for
    every run (``n_bootstrap`` times).
    """
    runs_seeds = [np.asarray(v, float) for v in vectors]
    runs_seeds = [v[None] if v.ndim == 2 else v for v in runs_seeds]  # (seeds, images, k) each
    n_images = runs_seeds[0].shape[1]
    if any(v.shape[1] != n_images for v in runs_seeds):
        raise DataError("every run must be scored on the same validation images")
    figures = [float(aggregate(v.mean(axis=0).sum(axis=0))[metric]) for v in runs_seeds]
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_bootstrap, n_images))
    np.add.at(weights, (np.arange(n_bootstrap)[:, None], rng.integers(0, n_images, size=(n_bootstrap, n_images))), 1)
    columns = []
    for v in runs_seeds:
        seeds = len(v)
        draws = np.zeros((n_bootstrap, seeds))  # each resample's share of each seed (1 / seeds per draw)
        if seeds > 1:
            np.add.at(draws, (np.arange(n_bootstrap)[:, None], rng.integers(0, seeds, size=(n_bootstrap, seeds))), 1)
        else:
            draws[:] = 1
        drawn = np.einsum("bs,sik->bik", draws / seeds, v)  # each resample's seed-averaged scores
        columns.append(np.asarray(aggregate(np.einsum("bi,bik->bk", weights, drawn))[metric], float))
    boot = np.stack(columns, axis=1)  # (boot, runs)
    several = any(len(v) > 1 for v in runs_seeds)
    fit = fit_curve(sizes, figures, higher_is_better=higher_is_better)
    largest = int(max(sizes))
    targets = sorted({largest, 2 * largest, 4 * largest, *(int(n) for n in predict_at)})
    grid = np.unique(np.geomspace(min(sizes), 4 * largest, 60).round().astype(int))
    fits = []
    for row in boot:
        finite = np.isfinite(row)
        if finite.sum() >= 2 and len(set(np.asarray(sizes)[finite].tolist())) >= 2:
            fits.append(fit_curve(np.asarray(sizes)[finite], row[finite], higher_is_better=higher_is_better))

    def estimate(value: float, samples: Sequence[float]) -> tuple[float, float, float]:
        low, high = np.nanpercentile(samples, [2.5, 97.5]) if len(samples) else (np.nan, np.nan)
        return (float(value), float(low), float(high))

    curves = np.array([f.predict(grid) for f in fits]) if fits else np.full((1, len(grid)), np.nan)
    band = {"images": grid.tolist(), "fit": fit.predict(grid).tolist(),
            "low": np.nanpercentile(curves, 2.5, axis=0).tolist(),
            "high": np.nanpercentile(curves, 97.5, axis=0).tolist()}  # fmt: skip
    fractions = list(fractions) if fractions is not None else [s / largest for s in sizes]
    intervals = np.nanpercentile(boot, [2.5, 97.5], axis=0)  # (2, runs)
    points = tuple(
        CurvePoint(
            fraction=float(f),
            images=int(s),
            value=figures[i],
            low=float(intervals[0, i]),
            high=float(intervals[1, i]),
            run=runs[i] if i < len(runs) else "",
        )  # fmt: skip
        for i, (f, s) in enumerate(zip(fractions, sizes, strict=True))
    )
    notes = [
        "Intervals: 95% bootstrap over the seeds of each fraction and the validation images (the same "
        "images for every run, the curve refitted on each resample), so they cover the randomness of "
        "training as well as which validation images were drawn."
        if several else
        "Intervals: 95% bootstrap over the validation images (the same resample for every run, the curve "
        "refitted on each); they do not cover the randomness of training (each fraction's runs differ by "
        "their seeds too: `--repeats N` trains N seeds per fraction and puts their spread in the intervals)."
    ]  # fmt: skip
    if not fit.exponent_fitted:
        notes.append(f"Fewer than four fractions: the exponent c is fixed at {FIXED_EXPONENT}.")
    return LearningCurve(
        task=task, metric=metric, higher_is_better=higher_is_better, points=points, fit=fit,
        predictions={n: estimate(float(fit.predict(n)), [float(f.predict(n)) for f in fits]) for n in targets},
        plateau=estimate(fit.a, [f.a for f in fits]),
        flattens_at=estimate(fit.flattens_at(), [f.flattens_at() for f in fits]),
        validation_images=tuple(names), n_bootstrap=n_bootstrap, budget=budget, notes=tuple(notes), band=band,
    )  # fmt: skip


# ------------------------------------------------------------------ the runs


def _names(config: Any) -> tuple[list[str], list[str]]:
    """(training pool, validation images): the config's named or seeded split, by name."""
    from microzoo.io.files import image_stem
    from microzoo.io.read import find_images
    from microzoo.train.data import Sample, split_samples

    try:
        names = sorted(image_stem(p) for p in find_images([str(config.data.images)]))
    except Exception as error:  # ImageError: no images there
        raise DataError(f"data.images: {error}") from None
    if config.data.validation_images is not None:
        validation = list(config.data.validation_images)
    else:
        if len(names) < 4:
            raise DataError(f"{len(names)} image(s): a learning curve needs at least 4 images (3 train, 1 validates)")
        empty = np.zeros(0, np.float32)
        _, val = split_samples([Sample(n, empty, empty) for n in names], fraction=config.data.validation_fraction,
                               seed=config.training.seed)  # fmt: skip
        validation = [s.name for s in val]
    pool = [n for n in names if n not in set(validation)]
    if config.data.training_images is not None:
        pool = [n for n in pool if n in set(config.data.training_images)]
    return pool, validation


def _train_one_run(
    config: Any, run_dir: Path, scores: Path, truths_file: Path, qc_task: Any, *, training: list[str],
    validation: list[str], seed: int, label: str, progress: ProgressCallback,
) -> None:  # fmt: skip
    """Train one run of the curve and save its per-image validation scores (and, once, the truths)."""
    from microzoo.io.atomic import atomic_output
    from microzoo.train.run import train

    run_config = config.model_copy(deep=True)
    run_config.data.training_images, run_config.data.validation_images = list(training), list(validation)
    run_config.training.export = False
    run_config.training.seed = seed
    extra = f"-seed-{seed}" if seed != config.training.seed else ""
    run_config.name = f"{config.name}-{len(training)}-images{extra}"

    def step(done: int, total: int, description: str) -> None:
        progress(done, total, f"{label}: {description}")

    result = train(run_config, out_dir=run_dir, progress=step, resume=(run_dir / "config.yaml").exists())
    check = result.validation
    if check is None or not check.predictions:
        raise DataError(f"`{config.task}` gives no validation figures without ground truth; "
                        "give labels or targets to draw a learning curve")  # fmt: skip
    model_predictions = next(iter(check.predictions.values()))
    if not truths_file.exists():
        with atomic_output(truths_file) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, *check.truths)
    scorer, _ = qc_task.scorer(check.truths, {"model": check.truths})
    with atomic_output(scores) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.stack([scorer.vectorize(t, p) for t, p in
                                  zip(check.truths, model_predictions, strict=True)]))  # fmt: skip


def learning_curve(
    config: Any, *, out_dir: str | os.PathLike[str], fractions: Sequence[float] = DEFAULT_FRACTIONS,
    repeats: int = 1, n_bootstrap: int = 500, progress: ProgressCallback | None = None,
) -> LearningCurve:  # fmt: skip
    """Train ``config`` on growing ``fractions`` of its images and fit the learning curve.

    Each run trains into ``OUT/runs/images_NNNN/`` (no package); a run that finished before
    is reused, so an interrupted learning curve continues where it stopped. With ``repeats``
    above 1 every fraction is trained that many times with the training seeds ``seed``,
    ``seed + 1``, ... (into ``images_NNNN_seed_S/`` beyond the first) and each validation
    image's scores are averaged over them, so one unlucky run does not bend the curve (the
    images drawn for a fraction stay the same). The report goes to ``OUT``
    (:func:`write_learning_curve`).

    Raises
    ------
    ConfigError, DataError : as :func:`microzoo.train.run.train`; fractions outside (0, 1];
    ``repeats`` below 1.
    """
    from microzoo.qc.tasks import get_task as get_qc_task
    from microzoo.train.tasks.registry import get_task

    progress = progress or no_progress
    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise DataError(f"fractions {list(fractions)}: give fractions in (0, 1], e.g. 0.1,0.25,0.5,1")
    if repeats < 1:
        raise DataError(f"repeats {repeats}: train each fraction at least once (1, or more to average seeds)")
    out = Path(out_dir)
    pool, validation = _names(config)
    order = [pool[i] for i in np.random.default_rng(config.training.seed).permutation(len(pool))]
    sizes = sorted({max(1, int(round(f * len(pool)))) for f in fractions})
    if len(sizes) < 2:
        raise DataError(f"the fractions give {len(sizes)} distinct number(s) of images; give at least two")
    qc_task = get_qc_task(get_task(config.task).qc_task)
    truths_file = out / "runs" / "validation_truths.npz"  # the scorer's settings come from them
    vectors, runs = [], []
    total_runs = len(sizes) * repeats
    for index, size in enumerate(sizes):
        per_seed = []
        for repeat in range(repeats):
            seed = config.training.seed + repeat
            run_dir = out / "runs" / (f"images_{size:04d}" + (f"_seed_{seed}" if repeat else ""))
            scores = run_dir / "validation_scores.npy"
            if not repeat:
                runs.append(str(run_dir))  # a point names its first run; the others sit beside it
            if not scores.exists():
                number = index * repeats + repeat + 1
                _train_one_run(config, run_dir, scores, truths_file, qc_task, training=order[:size],
                               validation=validation, seed=seed, label=f"run {number}/{total_runs} ({size} images"
                               + (f", seed {seed})" if repeats > 1 else ")"), progress=progress)  # fmt: skip
            per_seed.append(np.load(scores))
        vectors.append(np.stack(per_seed))  # (seeds, images, k): the curve averages them and resamples the seeds
    with np.load(truths_file) as archive:
        truths = [archive[key] for key in archive.files]
    scorer, _ = qc_task.scorer(truths, {"model": truths})
    settings = config.training
    limit = f", at most {settings.max_minutes:g} minutes" if settings.max_minutes else ""
    budget = (
        f"{settings.epochs} epochs x {settings.steps_per_epoch} steps of {settings.batch_size} patches{limit} per run"
        + (f"; each fraction trained {repeats} times (seeds {settings.seed}-{settings.seed + repeats - 1}), "
           "per-image scores averaged" if repeats > 1 else "")
    )  # fmt: skip
    curve = curve_from_vectors(
        sizes, vectors, scorer.aggregate, metric=qc_task.main_metric,
        higher_is_better=qc_task.higher_is_better(qc_task.main_metric), fractions=[s / len(pool) for s in sizes],
        names=sorted(validation), n_bootstrap=n_bootstrap, seed=config.training.seed, task=config.task,
        budget=budget, runs=runs,
    )  # fmt: skip
    write_learning_curve(curve, out)
    return curve


# ------------------------------------------------------------------ the report


def _plot(curve: LearningCurve) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    band = curve.band
    ax.fill_between(band["images"], band["low"], band["high"], color="tab:blue", alpha=0.2,
                    label="95% interval of the curve")  # fmt: skip
    ax.plot(band["images"], band["fit"], color="tab:blue", label="fitted curve")
    xs = [p.images for p in curve.points]
    ax.errorbar(xs, [p.value for p in curve.points],
                yerr=[[p.value - p.low for p in curve.points], [p.high - p.value for p in curve.points]],
                fmt="o", color="black", capsize=3, label="measured (95% interval)")  # fmt: skip
    ax.axhline(curve.plateau[0], color="grey", linestyle="--", linewidth=1, label="plateau")
    ax.set_xscale("log")
    ax.set(xlabel="training images", ylabel=f"{curve.metric} on the validation images", title="learning curve")
    ax.legend(loc="lower right" if curve.higher_is_better else "upper right", fontsize=8)
    return figure


def write_learning_curve(curve: LearningCurve, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """``report.html`` (self-contained), ``learning_curve.json`` and ``learning_curve.png`` in ``out_dir``."""
    import base64
    import html

    from microzoo.io.atomic import atomic_output
    from microzoo.qc.evaluate import json_safe

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"report": out / "report.html", "json": out / "learning_curve.json", "plot": out / "learning_curve.png"}
    with atomic_output(paths["plot"]) as tmp:
        _plot(curve).savefig(tmp, format="png", dpi=110)
    with atomic_output(paths["json"]) as tmp:
        tmp.write_text(json.dumps(json_safe(curve.to_dict()), indent=1, allow_nan=False), encoding="utf-8")
    png = base64.b64encode(paths["plot"].read_bytes()).decode()
    rows = "".join(
        f"<tr><td>{p.fraction:.0%}</td><td>{p.images}</td><td>{p.value:.3f}</td>"
        f"<td>[{p.low:.3f}, {p.high:.3f}]</td></tr>"
        for p in curve.points
    )
    predicted = "".join(
        f"<tr><td>{n}</td><td>{v:.3f}</td><td>[{lo:.3f}, {hi:.3f}]</td></tr>"
        for n, (v, lo, hi) in sorted(curve.predictions.items())
    )
    fit = curve.fit
    sign = "-" if curve.higher_is_better else "+"
    text = f"""<!doctype html><html><head><meta charset="utf-8"><title>Learning curve: {html.escape(curve.task)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}
.summary{{background:#f4f6fa;padding:1em;border-left:4px solid #4a72b0}}</style></head><body>
<h1>How many images? Learning curve of <code>{html.escape(curve.task)}</code></h1>
<p class="summary">{html.escape(curve.summary())}</p>
<img alt="learning curve" src="data:image/png;base64,{png}">
<h2>Runs</h2><p>Same budget for every run: {html.escape(curve.budget)}. Validation: the same
{len(curve.validation_images)} images for every run; figure: {html.escape(curve.metric)}.</p>
<table><tr><th>fraction</th><th>training images</th><th>{html.escape(curve.metric)}</th>
<th>95% interval</th></tr>{rows}</table>
<h2>Fitted curve</h2><p><code>{html.escape(curve.metric)}(n) = {fit.a:.4f} {sign} {fit.b:.4f} * (n / {fit.n_max})
^ -{fit.c:.3f}</code>{"" if fit.exponent_fitted else " (exponent fixed)"}.</p>
<table><tr><th>training images</th><th>expected {html.escape(curve.metric)}</th>
<th>95% interval</th></tr>{predicted}</table>
<h2>How to read it</h2><ul>{"".join(f"<li>{html.escape(n)}</li>" for n in curve.notes)}
<li>The plateau is what more images can give with this training budget; a longer training can raise it.</li></ul>
</body></html>"""
    with atomic_output(paths["report"]) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return paths
