"""The exported package in a notebook: predict new images with it, test-run it, zip it.

Prediction goes through the package, as anyone else will run it
(:class:`microzoo.runtime.Model`); its output becomes what the task scores with the QC task's own
``from_output`` (a restored image, a class map, instance labels with the thresholds stored in
the package), and a figure against the truth comes from :func:`microzoo.qc.evaluate`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from microzoo.errors import ConfigError
from microzoo.notebook.data import ZOOM, display_view
from microzoo.notebook.display import Panel, Picture, Pictures, Table, row_of_images
from microzoo.qc.panels import stretch

if TYPE_CHECKING:
    from microzoo.qc.tasks import QCTask
    from microzoo.runtime.predict import Model

__all__ = ["check_package", "predict_images", "zip_package"]


def _folder(package: str | os.PathLike[str]) -> Path:
    """A package's folder, given the folder or its ``bioimageio.yaml`` (``TrainingResult.package``)."""
    path = Path(package)
    return path.parent if path.is_file() else path


def predict_images(
    package: str | os.PathLike[str],
    images: str | os.PathLike[str],
    *,
    task: str,
    out: str | os.PathLike[str],
    n: int = 3,
    truths: str | os.PathLike[str] | None = None,
) -> Pictures:
    """Predict the first ``n`` images of a folder with a package, save what the task scores as
    TIFF in ``out`` (restoration: the restored image, on the normalised scale of training;
    semantic: the class map; instances: the label image), and draw each beside its input.

    ``task`` is the training task (``semantic``, ``instances``, ``care``, ``n2v``; a
    :class:`~microzoo.train.TrainingResult`'s ``task``). With ``truths`` (a folder of label or
    clean images with the same names) each row also shows the truth and the main QC figure
    (restoration: before and after).
    """
    from microzoo.io.files import list_images, pair_by_stem
    from microzoo.qc.tasks import get_task
    from microzoo.runtime.predict import Model
    from microzoo.train import TASKS

    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    model = Model.open(_folder(package))
    paths = list_images(images, role="images")[:n]
    truth_paths: Sequence[Path | None] = [None] * len(paths)
    if truths is not None:
        _, paired = pair_by_stem({"images": paths, "truths": list_images(truths, role="truths")}, extra_ok=True)
        truth_paths = paired["truths"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [_predict_one(model, path, truth, qc_task=get_task(TASKS[task].qc_task), out=out)
            for path, truth in zip(paths, truth_paths, strict=True)]  # fmt: skip
    return Pictures(tuple(rows), (f"{model!r}", f"{len(rows)} image(s) of {images}, predictions in {out}"))


def _predict_one(model: Model, path: Path, truth_path: Path | None, *, qc_task: QCTask, out: Path) -> Picture:
    """Predict one image, save the prediction as ``out/<stem>.tif``, draw it (and its truth)."""
    from microzoo.io.axes import to_grayscale
    from microzoo.io.files import image_stem
    from microzoo.io.read import read_image
    from microzoo.io.write import write_image
    from microzoo.runtime.instances import instance_settings_of

    assert qc_task.from_output is not None  # every training task's QC task runs models
    image = read_image(path)
    prediction = model.predict_image(np.asarray(image.data), axes=image.axes)
    first = model.output_ids[0]  # the output the task scores (a microzoo package has one)
    output, axes = prediction.outputs[first], prediction.axes[first]
    channels = np.moveaxis(output, axes.index("c"), 0) if "c" in axes else output[np.newaxis]
    predicted = qc_task.from_output(channels, instance_settings_of(model.descr))
    target = write_image(out / f"{image_stem(path)}.tif", _saved(predicted, qc_task.name), "yx")
    view = display_view(image)
    panels = [("input", stretch(view), {}), *_output_panels(qc_task.name, channels, predicted)]
    lines = [f"{path.name}: saved as {target}", *prediction.notices]
    if truth_path is not None:
        truth = np.asarray(read_image(truth_path).data)
        truth = to_grayscale(truth) if qc_task.name == "restoration" else truth
        figure = _figure(qc_task.name, predicted, truth, to_grayscale(view), foreground=channels.shape[0] == 1)
        panels.append((f"truth ({figure})", *_truth_panel(qc_task.name, truth)))
        lines.append(f"against the truth: {figure}")
    if qc_task.name == "restoration":  # zoomed corners, where the noise shows
        panels += [(f"{name.split(' (')[0]}, zoom", array[:ZOOM, :ZOOM], options) for name, array, options in panels]
    return row_of_images(panels, path.name[:60], lines)


def _saved(predicted: np.ndarray, task: str) -> np.ndarray:
    if task == "restoration":
        return predicted.astype(np.float32)
    return predicted.astype(np.uint16 if task == "instances" else np.uint8)


def _output_panels(task: str, channels: np.ndarray, predicted: np.ndarray) -> list[Panel]:
    if task == "restoration":
        return [("restored", stretch(predicted), {})]
    if task == "semantic":
        shown = [("probability", channels[0], {"vmin": 0, "vmax": 1})] if channels.shape[0] == 1 else []
        return [*shown, ("prediction", predicted, {"cmap": "tab10", "vmin": 0, "vmax": 9})]
    from skimage.color import label2rgb

    return [("foreground", channels[0], {"vmin": 0, "vmax": 1}),
            (f"{int(predicted.max())} objects", label2rgb(predicted, bg_label=0), {})]  # fmt: skip


def _truth_panel(task: str, truth: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    if task == "restoration":
        return stretch(truth), {}
    if task == "semantic":
        return truth, {"cmap": "tab10", "vmin": 0, "vmax": 9}
    from skimage.color import label2rgb

    return label2rgb(truth.astype(np.int64), bg_label=0), {}


def _figure(task: str, predicted: np.ndarray, truth: np.ndarray, image: np.ndarray, *, foreground: bool) -> str:
    """The main QC figure of one prediction against its truth (restoration: the input's, then the model's)."""
    from microzoo.qc.evaluate import evaluate
    from microzoo.qc.report import format_figure

    if task == "semantic" and foreground:  # a foreground probability: the truth's foreground is non-zero
        truth = (truth > 0).astype(np.int64)
    predictions = {"input": [image], "model": [predicted]} if task == "restoration" else {"model": [predicted]}
    evaluation = evaluate(predictions, [truth], task=task, n_bootstrap=1)
    metric = evaluation.main_metric
    values = [format_figure(float(evaluation.per_image[m][metric][0]), metric) for m in predictions]
    return f"{metric} {' -> '.join(values)}"


def check_package(package: str | os.PathLike[str]) -> Table:
    """The package's files and weight formats, and its test run as ``microzoo test`` does it:
    every weight format must reproduce the package's test output within the spec's tolerances.
    The last line reads ``package test: PASSED`` (or ``FAILED``)."""
    from microzoo.package.load import open_package
    from microzoo.runtime.engines import available_formats
    from microzoo.runtime.reproduce import test_package

    folder = _folder(package)
    opened = open_package(folder)
    files = ", ".join(f"{p.name} ({p.stat().st_size / 1e3:.1f} kB)" for p in sorted(folder.iterdir()) if p.is_file())
    before = (f"package: {folder}", f"format {opened.descr.format_version}; weights: "
              f"{', '.join(available_formats(opened))}", f"files: {files}")  # fmt: skip
    comparisons = test_package(opened)
    rows = tuple(
        (c.weight_format, c.output_id, f"{c.max_abs_diff:.2g}",
         f"{c.mismatched_per_million:.0f} ({c.allowed_per_million:.0f})", "yes" if c.passed else f"NO: {c.error or ''}")
        for c in comparisons
    )  # fmt: skip
    passed = bool(comparisons) and all(c.passed for c in comparisons)
    return Table(("weights", "output", "max abs difference", "mismatched per million (allowed)", "passed"), rows,
                 before=before, after=(f"package test: {'PASSED' if passed else 'FAILED'}",))  # fmt: skip


def zip_package(package: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """A zip of the package (the form deepImageJ and the zoo's upload take), written atomically."""
    from microzoo.io.atomic import atomic_output
    from microzoo.zoo.storage import write_zip

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(target) as tmp:
        write_zip(_folder(package), tmp)
    return target
