"""Good-practice checks on a model evaluation: each returns :class:`Finding` objects.

A finding says what was found, why it matters and what to do, with a severity:
``"warning"`` (the evaluation or the use is likely to mislead; the command line exits 1) or
``"note"`` (information, nothing wrong found). :func:`run_checks` runs every check whose
inputs are given. See ``docs/checks.md``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel
from scipy import stats

from microzoo.errors import ConfigError, DataError
from microzoo.io.files import list_images, pair_by_stem
from microzoo.io.read import read_array
from microzoo.progress import ProgressCallback
from microzoo.qc.image_features import guess_modality
from microzoo.trust.fingerprint import MIN_FINGERPRINT_IMAGES, Fingerprint
from microzoo.trust.leakage import find_near_duplicates
from microzoo.trust.ood import check_images

Severity = Literal["note", "warning"]

#: Words in a model's tags, or in what a user says, that name a task or a modality.
TASKS = {
    "denoising": {
        "denoising",
        "denoise",
        "restoration",
        "care",
        "n2v",
        "noise2void",
        "noise2noise",
        "deconvolution",
        "super-resolution",
        "image-restoration",
    },
    "semantic": {
        "semantic",
        "semantic-segmentation",
        "pixel-classification",
        "membrane",
        "membranes",
        "boundary",
        "boundaries",
        "probability",
    },
    "instances": {
        "instance",
        "instances",
        "instance-segmentation",
        "nuclei",
        "cells",
        "stardist",
        "cellpose",
        "cell-segmentation",
        "nucleus-segmentation",
    },
}
MODALITIES = {
    "fluorescence": {
        "fluorescence",
        "fluorescence-light-microscopy",
        "confocal",
        "widefield",
        "light-sheet",
        "lightsheet",
        "spinning-disk",
    },
    "brightfield": {
        "brightfield",
        "bright-field",
        "phase-contrast",
        "dic",
        "transmission-light-microscopy",
        "electron-microscopy",
        "em",
        "tem",
        "sem",
        "fib-sem",
    },
    "colour": {"histology", "histopathology", "h&e", "he", "stained", "whole-slide"},
}
QUANTIFICATION_WORDS = {"quantification", "quantify", "intensity", "intensities", "measurement", "measure"}


class Finding(BaseModel):
    """One result of a check: what was found, why it matters, what to do."""

    check: str
    severity: Severity
    what: str
    why: str
    action: str


def check_leakage(
    train_images: Sequence[np.ndarray],
    test_images: Sequence[np.ndarray],
    *,
    train_names: Sequence[str] | None = None,
    test_names: Sequence[str] | None = None,
    progress: ProgressCallback | None = None,
) -> list[Finding]:
    """Near-duplicates of training images in the test set (noise, scaling, flips, resizing)."""
    train_names = list(train_names or [f"train {i}" for i in range(len(train_images))])
    test_names = list(test_names or [f"test {i}" for i in range(len(test_images))])
    pairs = find_near_duplicates(train_images, test_images, progress=progress)
    if not pairs:
        return [
            Finding(
                check="leakage",
                severity="note",
                what=f"No test image is a near-duplicate of a training image "
                f"({len(test_images)} test x {len(train_images)} training images compared).",
                why="Test images that repeat training images make scores look better than they are.",
                action="Nothing to do. Crops of larger training images are not detected: if the test "
                "images were cut from the same fields or animals as the training images, split by field.",
            )
        ]
    listed = "; ".join(
        f"{test_names[p.test_index]} ~ {train_names[p.train_index]} ({p.transform}, r={p.correlation:.2f})"
        for p in pairs[:8]
    )
    more = f" and {len(pairs) - 8} more" if len(pairs) > 8 else ""
    return [
        Finding(
            check="leakage",
            severity="warning",
            what=f"{len(pairs)} of {len(test_images)} test images nearly repeat a training image: {listed}{more}.",
            why="The model has seen these images (up to noise, an intensity change or a flip) while "
            "learning, so its scores on them overstate how well it does on new data.",
            action="Remove these images from the test set (or from training) and evaluate again; split "
            "by field of view, sample or animal, not by image.",
        )
    ]


def check_test_set_size(
    *,
    requested_precision: float,
    n_test: int | None = None,
    per_image_scores: Sequence[float] | None = None,
    metric_value: float = 0.5,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[Finding]:
    """Is the test set large enough to report a figure to ``+- requested_precision``?

    With ``per_image_scores`` the half-width of a percentile bootstrap interval of their mean
    is used (``seed``); otherwise that of a normal-approximation binomial interval for a
    proportion ``metric_value`` (0.5 is the worst case) over ``n_test`` independent images.
    """
    if requested_precision <= 0:
        raise ConfigError(f"requested_precision must be positive, got {requested_precision}")
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    if per_image_scores is not None:
        scores = np.asarray(per_image_scores, dtype=float)
        if scores.size < 2:
            raise DataError("the bootstrap needs at least 2 per-image scores; score more test images")
        rng = np.random.default_rng(seed)
        means = scores[rng.integers(0, scores.size, (2000, scores.size))].mean(axis=1)
        low, high = np.quantile(means, [(1 - confidence) / 2, (1 + confidence) / 2])
        half_width, n, how = float(high - low) / 2, scores.size, "bootstrap over the per-image scores"
        spread = float(scores.std(ddof=1))
        needed = int(np.ceil((z * spread / requested_precision) ** 2)) if spread > 0 else n
    elif n_test:
        n, how = int(n_test), f"binomial interval for a figure near {metric_value:g}"
        half_width = z * float(np.sqrt(metric_value * (1 - metric_value) / n))
        needed = int(np.ceil(metric_value * (1 - metric_value) * (z / requested_precision) ** 2))
    else:
        raise ConfigError("give n_test or per_image_scores to check the test set size")
    what = (
        f"With {n} test images the {confidence:.0%} confidence interval is +-{half_width:.3f} "
        f"({how}); you asked for +-{requested_precision:g}."
    )
    if half_width <= requested_precision:
        return [
            Finding(
                check="test set size",
                severity="note",
                what=what,
                why="A figure is only as precise as its confidence interval.",
                action="Report the interval with the figure.",
            )
        ]
    return [
        Finding(
            check="test set size",
            severity="warning",
            what=what,
            why="Differences smaller than the interval between two models, or between a model and a "
            "baseline, may be chance; the reported precision is not supported by this test set.",
            action=f"Annotate about {needed} test images (from new fields or samples), or report the "
            f"figure as +-{half_width:.2g}.",
        )
    ]


def check_label_balance(
    label_images: Sequence[np.ndarray],
    *,
    kind: Literal["auto", "semantic", "instances"] = "auto",
    min_class_fraction: float = 0.05,
    max_size_ratio: float = 25.0,
) -> list[Finding]:
    """Class imbalance (semantic labels) or object-size spread (instance labels).

    ``kind="auto"`` takes the labels as instances when some image has more than 10 distinct
    values, else as classes.
    """
    labels = [np.asarray(image) for image in label_images]
    if not labels:
        raise DataError("no label images given; give the folder of label images")
    if kind == "auto":
        kind = "instances" if any(np.unique(image).size > 10 for image in labels) else "semantic"
    if kind == "semantic":
        values, counts = np.unique(np.concatenate([image.ravel() for image in labels]), return_counts=True)
        fractions = counts / counts.sum()
        listed = ", ".join(f"class {v}: {f:.1%}" for v, f in zip(values, fractions, strict=True))
        rare = values[fractions < min_class_fraction]
        if rare.size == 0:
            return [
                Finding(
                    check="label balance",
                    severity="note",
                    what=f"Class pixel fractions: {listed}.",
                    why="Rare classes make pixel accuracy misleading.",
                    action="Nothing to do; report per-class IoU anyway.",
                )
            ]
        return [
            Finding(
                check="label balance",
                severity="warning",
                what=f"Class(es) {', '.join(map(str, rare))} cover less than {min_class_fraction:.0%} of the "
                f"pixels ({listed}).",
                why="A model that never predicts a rare class still reaches a high pixel accuracy and mean "
                "score; the rare class is usually the one that matters.",
                action="Report IoU/Dice per class (not pixel accuracy); weight the loss or sample patches "
                "containing the rare class when training.",
            )
        ]
    areas = np.concatenate([np.bincount(image.ravel().astype(np.int64))[1:] for image in labels])
    areas = areas[areas > 0]
    empty = sum(1 for image in labels if not np.any(image))
    if areas.size == 0:
        return [
            Finding(
                check="label balance",
                severity="warning",
                what="The label images hold no objects.",
                why="Nothing can be evaluated against empty labels.",
                action="Check that the label folder holds instance masks (0 = background).",
            )
        ]
    p5, p50, p95 = np.percentile(areas, [5, 50, 95])
    what = (
        f"{areas.size} objects in {len(labels)} label images ({empty} empty); object area "
        f"5th/50th/95th percentile {p5:.0f}/{p50:.0f}/{p95:.0f} pixels."
    )
    if p95 / max(p5, 1) <= max_size_ratio:
        return [
            Finding(
                check="label balance",
                severity="note",
                what=what,
                why="Very different object sizes are segmented with very different accuracy.",
                action="Nothing to do.",
            )
        ]
    return [
        Finding(
            check="label balance",
            severity="warning",
            what=what + f" The largest objects are {p95 / max(p5, 1):.0f}x the smallest.",
            why="Detection scores are dominated by the many objects of the common size; small (or large) "
            "objects may be missed without the overall F1 showing it, and one pixel size rarely suits all.",
            action="Report F1 per size class (e.g. below and above the median area), and check that "
            "images were acquired at a comparable magnification.",
        )
    ]


def check_out_of_distribution(
    fingerprint: Fingerprint,
    images: Sequence[np.ndarray],
    *,
    names: Sequence[str] | None = None,
    pixel_size: float | None = None,
    progress: ProgressCallback | None = None,
) -> list[Finding]:
    """Images unlike the model's training data (see :mod:`microzoo.trust.ood`)."""
    results = check_images(fingerprint, images, names=names, pixel_size=pixel_size, progress=progress)
    flagged = [r for r in results if r.out_of_distribution]
    base = (
        f"{len(flagged)} of {len(results)} images are unlike the {fingerprint.n_images} training "
        f"images (about {fingerprint.false_alarm_target:.0%} of images like the training ones are "
        "flagged by chance)."
    )
    if not flagged:
        return [
            Finding(
                check="out of distribution",
                severity="note",
                what=base,
                why="A model is only known to work on images like those it learnt from.",
                action="Nothing to do; still inspect a few outputs by eye.",
            )
        ]
    examples = " ".join(r.summary for r in flagged[:4]) + (" ..." if len(flagged) > 4 else "")
    return [
        Finding(
            check="out of distribution",
            severity="warning",
            what=f"{base} {examples}",
            why="On images unlike its training data a model can fail silently: outputs still look "
            "plausible but are wrong (missed or invented structures).",
            action="Check these images' outputs against a few manual annotations or the classical "
            "baseline; where they disagree, fine-tune on annotated images of yours.",
        )
    ]


def check_quantification_use(*, model_tags: Sequence[str], intended_use: str | None) -> list[Finding]:
    """A restoration (denoising) model's output used for intensity measurements."""
    tags = {tag.lower() for tag in model_tags}
    words = set((intended_use or "").lower().replace(",", " ").split())
    if not (tags & TASKS["denoising"]) or not (words & QUANTIFICATION_WORDS):
        return []
    return [
        Finding(
            check="quantification",
            severity="warning",
            what="The outputs of a restoration model are to be used for intensity quantification.",
            why="A restoration network predicts a plausible clean image, not a measurement: it can "
            "invent or remove structures (hallucination) and shift intensities where it is unsure, "
            "most of all on images unlike its training data.",
            action="Measure intensities on the raw images (use the restored ones to find and segment "
            "objects); inspect the residual map (input minus output) in the QC report for "
            "structure in the residual, which marks changed content.",
        )
    ]


def check_task_and_modality(
    *,
    model_tags: Sequence[str],
    task: str | None = None,
    images: Sequence[np.ndarray] = (),
) -> list[Finding]:
    """The model used for another task, or on another kind of image, than it was made for."""
    tags = {tag.lower() for tag in model_tags}
    findings = []
    model_tasks = {name for name, words in TASKS.items() if tags & words}
    if task and model_tasks:
        user_tasks = {name for name, words in TASKS.items() if task.lower() in words | {name}}
        if user_tasks and not (user_tasks & model_tasks):
            findings.append(
                Finding(
                    check="task",
                    severity="warning",
                    what=f"You want {task!r}; the model was made for {', '.join(sorted(model_tasks))}.",
                    why="A model's output means what its training task defined; another task needs other "
                    "outputs and postprocessing and is untested.",
                    action="Choose a model whose tags name your task (microzoo search), or train one.",
                )
            )
    model_modalities = {name for name, words in MODALITIES.items() if tags & words}
    if len(images) and model_modalities:
        guesses = [guess_modality(image) for image in images]
        other = [g for g in guesses if g not in model_modalities]
        if len(other) > len(guesses) / 2:
            common = max(set(other), key=other.count)
            findings.append(
                Finding(
                    check="modality",
                    severity="warning",
                    what=f"{len(other)} of {len(guesses)} images look like {common} images; the model's "
                    f"tags say {', '.join(sorted(model_modalities))}.",
                    why="Contrast and background differ between modalities; a model rarely transfers.",
                    action="Use a model trained on your modality, or confirm on a few annotated images.",
                )
            )
    return findings


def load_model_claims(source: str | os.PathLike[str]) -> tuple[Fingerprint | None, list[str]]:
    """The training fingerprint and tags a model claims, from a package or a fingerprint file.

    ``source`` is a fingerprint (``.json``, or a ``.yaml`` that is not a model description) or
    anything :func:`microzoo.package.load.open_package` opens; a package's fingerprint is its
    attachment ``training_fingerprint.json`` (``None`` when it has none).
    """
    from microzoo.package.load import DESCRIPTION_NAMES, open_package

    path = Path(source)
    if path.is_file() and path.name not in DESCRIPTION_NAMES and path.suffix.lower() in (".json", ".yaml", ".yml"):
        return Fingerprint.load(path), []
    from microzoo.trust.note import package_fingerprint

    package = open_package(source, check_files=False)
    return package_fingerprint(package), [str(tag) for tag in (package.descr.tags or [])]


def _check_pixel_size(pixel_size: float | None) -> None:
    if pixel_size is not None and not (np.isfinite(pixel_size) and pixel_size > 0):
        raise ConfigError(f"the pixel size must be a positive number of micrometres per pixel, got {pixel_size}")


def run_checks(
    *,
    train_images: Sequence[np.ndarray] = (),
    test_images: Sequence[np.ndarray] = (),
    train_names: Sequence[str] | None = None,
    test_names: Sequence[str] | None = None,
    test_labels: Sequence[np.ndarray] = (),
    fingerprint: Fingerprint | None = None,
    model_tags: Sequence[str] = (),
    task: str | None = None,
    intended_use: str | None = None,
    requested_precision: float | None = None,
    per_image_scores: Sequence[float] | None = None,
    pixel_size: float | None = None,
    progress: ProgressCallback | None = None,
) -> list[Finding]:
    """Run every check whose inputs are given; warnings first.

    Without a ``fingerprint``, one is made from ``train_images`` (at least
    ``MIN_FINGERPRINT_IMAGES``) to check the test images against; with fewer, a note says the
    check did not run.
    """
    _check_pixel_size(pixel_size)
    findings: list[Finding] = []
    if len(train_images) and len(test_images):
        findings += check_leakage(
            train_images, test_images, train_names=train_names, test_names=test_names, progress=progress
        )
    if requested_precision is not None and (per_image_scores is not None or len(test_images)):
        findings += check_test_set_size(
            requested_precision=requested_precision, n_test=len(test_images), per_image_scores=per_image_scores
        )
    if len(test_labels):
        findings += check_label_balance(test_labels)
    if fingerprint is None and len(train_images) >= MIN_FINGERPRINT_IMAGES:
        from microzoo.trust.fingerprint import fingerprint_images

        fingerprint = fingerprint_images(train_images, progress=progress)
    elif fingerprint is None and len(train_images) and len(test_images):
        findings.append(
            Finding(
                check="out of distribution",
                severity="note",
                what=f"Not checked: {len(train_images)} training image(s) are too few to learn their typical "
                f"ranges (at least {MIN_FINGERPRINT_IMAGES} are needed).",
                why="Without those ranges microzoo cannot tell whether your test images resemble the training data.",
                action=f"Give at least {MIN_FINGERPRINT_IMAGES} training images with --train, or a model that "
                "carries a training fingerprint with --model.",
            )
        )
    if fingerprint is not None and len(test_images):
        findings += check_out_of_distribution(
            fingerprint, test_images, names=test_names, pixel_size=pixel_size, progress=progress
        )
    findings += check_quantification_use(model_tags=model_tags, intended_use=intended_use)
    findings += check_task_and_modality(model_tags=model_tags, task=task, images=test_images)
    return sorted(findings, key=lambda finding: finding.severity != "warning")


def check_folders(
    *,
    test_dir: str | os.PathLike[str],
    train_dir: str | os.PathLike[str] | None = None,
    labels_dir: str | os.PathLike[str] | None = None,
    model: str | os.PathLike[str] | None = None,
    task: str | None = None,
    intended_use: str | None = None,
    requested_precision: float | None = None,
    pixel_size: float | None = None,
    progress: ProgressCallback | None = None,
) -> list[Finding]:
    """:func:`run_checks` on folders of images (what ``microzoo check`` runs)."""
    _check_pixel_size(pixel_size)
    test_files = list_images(test_dir, role="test images")
    train_files = list_images(train_dir, role="training images") if train_dir else []
    label_files: list[Path] = []
    if labels_dir:  # every test image needs its label image, paired by name
        _, paired = pair_by_stem({"test images": test_files, "labels": list_images(labels_dir, role="labels")})
        label_files = paired["labels"]
    test_images, test_names = [read_array(f) for f in test_files], [f.name for f in test_files]
    train_images = [read_array(f) for f in train_files]
    train_names = [f.name for f in train_files] if train_files else None
    labels = [read_array(f) for f in label_files]
    fingerprint, tags = load_model_claims(model) if model else (None, [])
    findings = run_checks(
        train_images=train_images,
        test_images=test_images,
        train_names=train_names,
        test_names=test_names,
        test_labels=labels,
        fingerprint=fingerprint,
        model_tags=tags,
        task=task,
        intended_use=intended_use,
        requested_precision=requested_precision,
        pixel_size=pixel_size,
        progress=progress,
    )
    if model and fingerprint is None and not train_images:
        findings.append(
            Finding(
                check="out of distribution",
                severity="note",
                what="The model carries no training fingerprint and no training images were given.",
                why="Without either, microzoo cannot tell whether your images resemble the training data.",
                action="Give the training images with --train, or ask the model's authors for its "
                "training_fingerprint.json.",
            )
        )
    return findings
