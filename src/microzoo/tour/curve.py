"""Step 4: the learning curve: how many more annotated images would help.

Nuclei instance segmentation trains on growing fractions of a set of annotated DSB2018
fluorescence training images, every run with the same short budget, and the library fits the
saturating curve (:func:`microzoo.train.learning_curve.learning_curve`, the configuration built
as ``microzoo learning-curve instances`` builds it), with intervals.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from microzoo.tour.common import Picture, StepResult, TourContext, command, link_images


@dataclasses.dataclass(frozen=True)
class CurveSizes:
    """Images (fluorescence, file order), fractions and the budget of each run."""

    images: int
    fractions: tuple[float, ...]
    epochs: int
    steps: int
    patch: int
    minutes: float


FULL = CurveSizes(images=28, fractions=(0.25, 0.5, 1.0), epochs=100, steps=10, patch=64, minutes=0.3)
QUICK = CurveSizes(images=6, fractions=(0.5, 1.0), epochs=1, steps=3, patch=64, minutes=0.1)


def fluorescence_images(folder: Path, n: int, *, side: int = 360) -> list[Path]:
    """The first ``n`` grey, dark-background images of ``folder`` (in file order) of at most ``side`` pixels a side."""
    import imageio.v3 as iio

    chosen = []
    for path in sorted(folder.glob("*.png")):
        rgb = iio.imread(path)[..., :3]
        if max(rgb.shape[:2]) <= side and rgb.std(axis=-1).mean() < 1 and rgb.mean() < 60:
            chosen.append(path)
        if len(chosen) == n:
            break
    return chosen


def step_curve(ctx: TourContext) -> StepResult:
    """Step 4: train on growing fractions, fit the curve, say what more images would give."""
    from microzoo.train import short_form_config
    from microzoo.train.learning_curve import learning_curve

    start = time.perf_counter()
    sizes = QUICK if ctx.quick else FULL
    folder = ctx.folder("learning-curve")
    train = ctx.data / "dsb2018" / "train"
    chosen = fluorescence_images(train / "images", sizes.images)
    images = link_images(chosen, folder / "images")
    labels = link_images([train / "labels" / f"{p.stem}.tif" for p in chosen], folder / "labels")
    fractions = sizes.fractions
    config = short_form_config(
        "instances", images=images.resolve(), labels=labels.resolve(), patch_size=sizes.patch, epochs=sizes.epochs,
        steps_per_epoch=sizes.steps, max_minutes=sizes.minutes, name=f"instances-{images.name}",
    )  # fmt: skip
    curve = learning_curve(config, out_dir=folder, fractions=fractions, progress=ctx.progress)
    last = curve.points[-1]
    more = {n: v for n, v in sorted(curve.predictions.items()) if n > last.images}
    figures = [(f"{p.images} training images: {curve.metric}", f"{p.value:.3f} [{p.low:.3f}, {p.high:.3f}]")
               for p in curve.points]  # fmt: skip
    figures += [(f"expected with {n} images", f"{v:.3f} [{lo:.3f}, {hi:.3f}]") for n, (v, lo, hi) in more.items()]
    plateau = curve.plateau
    figures.append(("plateau of this budget", f"{plateau[0]:.3f} [{plateau[1]:.3f}, {plateau[2]:.3f}]"))
    plot = folder / "learning_curve.png"
    import base64

    picture = Picture(
        f"{curve.metric} on {len(curve.validation_images)} validation images after training on each number of "
        "images (points, 95% intervals), and the fitted curve with its band.",
        "data:image/png;base64," + base64.b64encode(plot.read_bytes()).decode("ascii"),
    )
    flat = curve.flattens_at[0] <= last.images
    answer = ("already flat: more annotation is unlikely to help with this budget; train longer first" if flat
              else f"flattens from about {curve.flattens_at[0]:.0f} images")  # fmt: skip
    return StepResult(
        number=4,
        title="How many annotated images do you need?",
        what=(
            f"A nuclei segmentation network trains {len(curve.points)} times, on "
            f"{', '.join(str(p.images) for p in curve.points)} "
            f"annotated DSB2018 fluorescence images, each run with the same short budget ({curve.budget}); the "
            "fitted curve says what twice and four times as many images would give, with intervals."
        ),
        why=(
            "Annotation is the expensive part of deep learning in microscopy; a learning curve on your own images "
            "tells you whether annotating more will pay, or whether the model is limited by something else "
            "(its training time, the task itself)."
        ),
        commands=(
            command("learning-curve", "instances", "--images", images, "--labels", labels, "-o", folder,
                    "--fractions", ",".join(f"{f:g}" for f in fractions), "--epochs", str(sizes.epochs),
                    "--steps-per-epoch", str(sizes.steps), "--patch", str(sizes.patch),
                    "--max-minutes", f"{sizes.minutes:g}"),
        ),  # fmt: skip
        summary=f"{curve.metric} {last.value:.3f} with {last.images} images; the curve {answer}",
        figures=tuple(figures),
        lines=(curve.summary(), *curve.notes),
        pictures=(picture,),
        reports=(
            ("learning-curve report", folder / "report.html"),
            ("its figures (JSON)", folder / "learning_curve.json"),
        ),
        seconds=time.perf_counter() - start,
        facts={"points": [(p.images, p.value) for p in curve.points], "flat": bool(flat),
               "predictions": {str(n): v[0] for n, v in curve.predictions.items()},
               "plateau": float(np.asarray(curve.plateau[0]))},
    )  # fmt: skip
