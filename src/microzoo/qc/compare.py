"""Put models and classical baselines side by side on the user's own annotated images.

``compare`` runs every model on every image, turns each output into what the task scores
(a restored image, a class map, an instance label image), optionally runs the matching
classical baseline, and evaluates them all against the truth with
:func:`microzoo.qc.evaluate.evaluate` (per-image figures, bootstrap intervals, paired differences).

How model outputs become predictions:
- restoration: the first output channel as it is (the report also shows figures after a
  per-image affine fit, for models whose output range differs from the truth's);
- semantic: foreground where the first output channel exceeds 0.5 (argmax over channels for a
  multi-channel softmax output); the truth's foreground is every non-zero pixel, or the value
  given as ``truth_foreground`` (ISBI 2012 marks membranes with 0);
- instances: with the instance settings a microzoo-trained package stores, its own
  post-processing; otherwise a seeded watershed on the foreground probability.

For segmentation the models' foreground probabilities (when their outputs lie in [0, 1]) are
passed on too: the report shows their calibration (:mod:`microzoo.qc.calibration`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from microzoo.errors import DataError
from microzoo.io.axes import to_grayscale
from microzoo.io.files import list_images, pair_by_stem
from microzoo.io.read import read_array, read_image
from microzoo.progress import ProgressCallback, no_progress
from microzoo.qc.baselines import baselines_for
from microzoo.qc.calibration import foreground_probability
from microzoo.qc.groups import groups_of
from microzoo.qc.tasks import QCTask, as_intensities, as_labels, get_task

if TYPE_CHECKING:
    from microzoo.qc.evaluate import Evaluation
    from microzoo.runtime.instances import InstanceSettings
    from microzoo.runtime.predict import Model


@dataclasses.dataclass(frozen=True)
class Comparison:
    evaluation: Evaluation
    paths: dict[str, Path]
    classical_params: dict[str, dict[str, float | str]]
    notices: tuple[str, ...]


def compare(
    models: Sequence[str],
    *,
    images_dir: Path,
    truth_dir: Path,
    task: str,
    out_dir: Path,
    classical: bool = False,
    axes: str | None = None,
    weights: str | None = None,
    truth_foreground: int | None = None,
    data_range: float | None = None,
    train_noisy: Path | None = None,
    train_clean: Path | None = None,
    progress: ProgressCallback | None = None,
) -> Comparison:
    """Run ``models`` (and the classical baseline) on ``images_dir``, score against ``truth_dir``.

    Images and truths are paired by file name without extension. For restoration with
    ``classical=True``, the baselines' parameters are tuned on ``train_noisy``/``train_clean``
    pairs when given (never on the evaluated images), else fixed defaults are used and said so.
    """
    from microzoo.qc.evaluate import evaluate, write_evaluation
    from microzoo.runtime.predict import Model

    definition = get_task(task, runnable=True)
    if not models and not classical:
        raise DataError("nothing to compare: give at least one model, or --classical")
    progress = progress or no_progress
    names, paired = pair_by_stem(
        {"images": list_images(images_dir, role="images"), "truth": list_images(truth_dir, role="truth")}, extra_ok=True
    )
    image_paths = paired["images"]
    images = [read_image(p, axes=axes) for p in image_paths]
    inputs = [np.asarray(image.data) for image in images]
    image_axes = [image.axes for image in images]
    truths = [_truth(read_array(path), task, truth_foreground, where=str(path)) for path in paired["truth"]]

    predictions: dict[str, list[np.ndarray]] = {}
    probabilities: dict[str, list[np.ndarray | None]] = {}  # segmentation: for the calibration
    notices: list[str] = []
    total = len(models) * len(inputs) + (len(inputs) if classical else 0)
    done = 0
    for source in models:
        model = Model.open(source, weights=weights)
        label = _unique(model.package.name, predictions)
        settings = _instance_settings(model)
        outputs = []
        for image, image_ax in zip(inputs, image_axes, strict=True):
            progress(done, total, f"{label}: predicting")
            result = model.predict_image(image, axes=image_ax)
            notices.extend(result.notices)
            first = model.output_ids[0]
            outputs.append(_as_prediction(result.outputs[first], result.axes[first], definition, settings))
            if task in ("semantic", "instances"):
                channels = _channels_first(result.outputs[first], result.axes[first])
                probabilities.setdefault(label, []).append(foreground_probability(channels))
            done += 1
        predictions[label] = outputs

    classical_params: dict[str, dict[str, float | str]] = {}
    if classical:
        classical_params, baseline, classical_notices = _run_classical(
            inputs,
            task,
            train_noisy=train_noisy,
            train_clean=train_clean,
            data_range=data_range,
            progress=lambda d, t, what: progress(done + d * len(inputs) // max(t, 1), total, what),
        )
        predictions.update(baseline)
        notices.extend(classical_notices)
    progress(total, total, "evaluating")
    gray_inputs = [_gray(x) for x in inputs]
    calibrated = {m: [x for x in p if x is not None] for m, p in probabilities.items()}
    calibrated = {m: p for m, p in calibrated.items() if len(p) == len(truths)}  # every output a probability
    groups = groups_of(inputs)  # figures per group too, when the images fall into distinct groups
    evaluation = evaluate(
        predictions,
        truths,
        task=task,
        names=names,
        data_range=data_range,
        probabilities=calibrated or None,
        groups=groups,
    )
    paths = write_evaluation(evaluation, out_dir, truths=truths, predictions=predictions, inputs=gray_inputs)
    return Comparison(evaluation, paths, classical_params, tuple(dict.fromkeys(notices)))


def _truth(array: np.ndarray, task: str, foreground: int | None, *, where: str) -> np.ndarray:
    if not get_task(task).labels:
        return as_intensities(array)
    labels = as_labels(array, task=task, where=where)  # the check evaluate applies too
    if task == "semantic":  # the model's foreground against the truth's
        return (labels == foreground if foreground is not None else labels != 0).astype(np.int64)
    return labels


def _gray(image: np.ndarray) -> np.ndarray:
    return to_grayscale(image) if image.ndim == 3 and image.shape[-1] in (3, 4) else np.squeeze(image)


def _channels_first(output: np.ndarray, axes: str) -> np.ndarray:
    return np.moveaxis(output, axes.index("c"), 0) if "c" in axes else output[np.newaxis]


def _as_prediction(output: np.ndarray, axes: str, task: QCTask, settings: InstanceSettings | None) -> np.ndarray:
    assert task.from_output is not None  # get_task(runnable=True) chose it
    return task.from_output(_channels_first(output, axes), settings)


def _instance_settings(model: Model) -> InstanceSettings | None:
    from microzoo.runtime.instances import instance_settings_of

    return instance_settings_of(model.descr)


def _run_classical(inputs: list[np.ndarray], task: str, *, train_noisy: Path | None, train_clean: Path | None,
                   data_range: float | None, progress: ProgressCallback
                   ) -> tuple[dict[str, dict[str, float | str]], dict[str, list[np.ndarray]], list[str]]:  # fmt: skip
    train_images, train_truths = (
        _pairs(train_noisy, train_clean) if task == "restoration" and train_noisy and train_clean else ([], [])
    )
    params: dict[str, dict[str, float | str]] = {}
    results: dict[str, list[np.ndarray]] = {}
    notices: list[str] = []
    for baseline in baselines_for(task, train_images=train_images, train_truths=train_truths, data_range=data_range):
        params[baseline.name] = dict(baseline.params)
        if baseline.notice:
            notices.append(baseline.notice + (" with --train-noisy/--train-clean" if task == "restoration" else ""))
        outputs = []
        for i, image in enumerate(inputs):
            progress(i, len(inputs), f"classical: {baseline.name}")
            outputs.append(baseline(image))
        results[baseline.name] = outputs
    return params, results, notices


def _pairs(noisy_dir: Path, clean_dir: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    _, paired = pair_by_stem(
        {
            "noisy training images": list_images(noisy_dir, role="noisy training images"),
            "clean training images": list_images(clean_dir, role="clean training images"),
        },
        extra_ok=True,
    )
    return (
        [read_array(p) for p in paired["noisy training images"]],
        [read_array(p) for p in paired["clean training images"]],
    )


def _unique(name: str, taken: dict[str, Any]) -> str:
    label, k = name, 2
    while label in taken:
        label, k = f"{name} ({k})", k + 1
    return label
