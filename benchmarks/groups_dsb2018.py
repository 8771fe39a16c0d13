"""DSB2018 instances: grey against colour training, same number of steps, whole test split and per group.

    nice -n 5 .venv/bin/python benchmarks/groups_dsb2018.py --epochs 12 --steps-per-epoch 50 --features 16

Two instance U-Nets are trained on the 469 train images with the same recipe and the same number
of steps (``epochs x steps_per_epoch``, fixed work, fair on a loaded machine): ``data.colour: grey``
(every image converted to grey, the recorded recipe) and ``data.colour: auto`` (the set holds
colour histology, so 3 colour channels, fluorescence images repeated into them). Both exported
packages and the Otsu + watershed baseline run on the 100 test images through the runtime, as
``microzoo compare`` does, and are evaluated (F1 at IoU 0.5, pooled, 95% bootstrap intervals):
on the whole split, per group found by :func:`microzoo.qc.groups.find_groups` on the test
images, and per modality (:func:`microzoo.qc.image_features.guess_modality`: fluorescence,
brightfield, colour histology). Outputs in benchmarks/out/groups_dsb2018/ (git-ignored); the
tables are printed as Markdown for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import tifffile

from microzoo.io.files import list_images
from microzoo.io.read import read_image
from microzoo.qc.baselines import instances_baseline
from microzoo.qc.evaluate import Evaluation, evaluate
from microzoo.qc.groups import find_groups
from microzoo.qc.image_features import guess_modality
from microzoo.qc.tasks import get_task
from microzoo.qc.verdict import baseline_verdict
from microzoo.runtime.instances import instance_settings_of
from microzoo.runtime.predict import Model
from microzoo.train.config import instances_config
from microzoo.train.run import train

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MICROZOO_SHARED_DATA", ROOT.parent / "shared" / "data")) / "dsb2018"
T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[{(time.monotonic() - T0) / 60:6.1f} min] {message}", flush=True)


def train_one(colour: str, args: argparse.Namespace, out: Path) -> tuple[Path, float]:
    config = instances_config(
        images=DATA / "train" / "images", labels=DATA / "train" / "labels", patch_size=args.patch,
        batch_size=args.batch, steps_per_epoch=args.steps_per_epoch, epochs=args.epochs, seed=args.seed,
        name=f"dsb2018-{colour}",
    )  # fmt: skip
    config.data.colour = colour
    config.data.validation_fraction = args.val_fraction
    config.network.base_features = args.features
    config.training.early_stopping_patience = None
    config.training.export = True
    if (out / colour / "package" / "bioimageio.yaml").exists():  # trained by an earlier call
        log(f"{colour}: using the package already in {out / colour}")
        return out / colour / "package", float("nan")
    start = time.monotonic()
    # a run stopped after its last epoch (e.g. in QC) resumes there: QC and export only
    result = train(config, out_dir=out / colour, resume=(out / colour / "checkpoints" / "last.pt").exists())
    minutes = (time.monotonic() - start) / 60
    verdict = result.verdict.line if result.verdict else "no verdict"
    log(f"{colour}: trained {args.epochs} x {args.steps_per_epoch} steps in {minutes:.1f} min; {verdict}")
    assert result.package is not None
    return result.package.parent, minutes


def predictions(package: Path, images: list[np.ndarray], axes: list[str]) -> list[np.ndarray]:
    """What ``compare`` scores: the package's output decoded with its own instance settings."""
    model = Model.open(package)
    task, settings = get_task("instances", runnable=True), instance_settings_of(model.descr)
    assert task.from_output is not None
    labels = []
    for image, image_axes in zip(images, axes, strict=True):
        result = model.predict_image(image, axes=image_axes)
        (output,), (out_axes,) = result.outputs.values(), result.axes.values()
        labels.append(task.from_output(np.moveaxis(output, out_axes.index("c"), 0), settings))
    return labels


def rows(evaluation: Evaluation, split: str) -> list[str]:
    lines = []
    parts = {"whole split": (evaluation.images, evaluation.summary, evaluation.differences)}
    parts |= {name: (g.images, g.summary, g.differences) for name, g in evaluation.by_group.items()}
    for name, (images, summary, differences) in parts.items():
        cells = [f"{summary[m]['f1@0.5'].value:.3f} [{summary[m]['f1@0.5'].low:.3f}, {summary[m]['f1@0.5'].high:.3f}]"
                 for m in evaluation.methods]  # fmt: skip
        pair = next(d for d in differences if d.metric == "f1@0.5" and {d.first, d.second} == {"colour", "grey"})
        sign = 1 if pair.first == "colour" else -1
        lo, hi = sorted((sign * pair.low, sign * pair.high))
        lines.append(f"| {split}: {name} | {len(images)} | " + " | ".join(cells)
                     + f" | {sign * pair.difference:+.3f} [{lo:+.3f}, {hi:+.3f}] |")  # fmt: skip
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--steps-per-epoch", type=int, default=50)
    p.add_argument("--features", type=int, default=16, choices=(16, 32))
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1, help="train images that validate and pick thresholds")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "groups_dsb2018")
    p.add_argument("--eval-only", action="store_true", help="evaluate the packages already in --out")
    args = p.parse_args()

    packages, minutes = {}, {}
    for colour in ("grey", "auto"):
        if args.eval_only:
            packages[colour], minutes[colour] = args.out / colour / "package", float("nan")
        else:
            packages[colour], minutes[colour] = train_one(colour, args, args.out)
    files = list_images(DATA / "test" / "images")
    read = [read_image(f) for f in files]
    images, axes = [np.asarray(r.data) for r in read], [r.axes for r in read]
    truths = [tifffile.imread(DATA / "test" / "labels" / f"{f.stem}.tif").astype(np.int64) for f in files]
    start = time.monotonic()
    predicted = {"grey": predictions(packages["grey"], images, axes)}
    log(f"grey model on {len(files)} test images in {(time.monotonic() - start) / 60:.1f} min")
    predicted["colour"] = predictions(packages["auto"], images, axes)
    log("colour model done")
    watershed = instances_baseline()
    predicted["watershed"] = [watershed(image) for image in images]
    groups = find_groups(images)
    modality = [guess_modality(image[..., :3] if image.ndim == 3 else image) for image in images]
    names = [f.stem for f in files]
    found = evaluate(predicted, truths, task="instances", names=names, groups=groups.of_images() if groups else None)
    by_modality = evaluate(predicted, truths, task="instances", names=names, groups=modality)
    log("evaluated")

    print(f"\nTraining: {args.epochs} epochs x {args.steps_per_epoch} steps (batch {args.batch}, patch {args.patch}, "
          f"{args.val_fraction:.0%} of the train images validate, "
          f"U-Net depth 3, {args.features} base features, seed {args.seed}); grey {minutes['grey']:.1f} min, "
          f"colour {minutes['auto']:.1f} min of wall time.\n")  # fmt: skip
    print("| images | n | grey U-Net F1@0.5 | colour U-Net F1@0.5 | watershed F1@0.5 | colour - grey |")
    print("|---|---|---|---|---|---|")
    for line in rows(found, "groups found"):
        print(line)
    for line in rows(by_modality, "modality")[1:]:
        print(line)
    for evaluation in (found, by_modality):
        for note in evaluation.group_notes:
            print(f"- {note}")
    for model in ("grey", "colour"):
        print(f"- {baseline_verdict(found, model, 'watershed').line}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "figures.json").write_text(json.dumps(
        {"groups": found.to_dict(), "modality": by_modality.to_dict(), "minutes": minutes,
         "found": groups.to_dict() if groups else None}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
