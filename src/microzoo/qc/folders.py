"""Evaluate folders of files: pair predictions, truths and inputs by name, read them, evaluate, write.

What ``microzoo evaluate`` runs: :func:`evaluate_folders` pairs the files with
:func:`microzoo.io.files.pair_by_stem`, reads them (label images through the one check,
:func:`microzoo.qc.tasks.as_labels`), and hands them to :func:`microzoo.qc.evaluate.evaluate`
and :func:`~microzoo.qc.evaluate.write_evaluation`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from microzoo.errors import DataError
from microzoo.io.files import list_images, pair_by_stem
from microzoo.progress import ProgressCallback, no_progress
from microzoo.qc import metrics
from microzoo.qc.evaluate import Evaluation, evaluate, write_evaluation
from microzoo.qc.groups import groups_of
from microzoo.qc.tasks import as_labels, get_task


def _pair_files(
    pred_dirs: Mapping[str, str | Path], truth_dir: str | Path, images_dir: str | Path | None
) -> tuple[list[str], dict[str, list[Path]]]:
    """Stems and, per role (``"truth"``, :func:`_predictions` of each method, ``"input images"``),
    the files in that order."""
    groups = {"truth": list_images(truth_dir, role="truth", extra_suffixes=(".csv",))}
    for method, folder in pred_dirs.items():
        groups[_predictions(method)] = list_images(folder, role=_predictions(method), extra_suffixes=(".csv",))
    if images_dir is not None:
        groups["input images"] = list_images(images_dir, role="input images")
    return pair_by_stem(groups)


def _predictions(method: str) -> str:
    """The role of a method's prediction folder, as error messages name it."""
    return f"predictions ({method})"


def _read_points(path: Path) -> np.ndarray:
    import csv

    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = [h.strip().lower() for h in rows[0]], [r for r in rows[1:] if r]
    wanted: list[str] = [h for h in ("z", "y", "x") if h in header] or [h for h in header if h.startswith("axis-")]
    if not wanted:
        raise DataError(f"{path} has no coordinate columns; name them z, y, x (or axis-0, axis-1, ...)")
    columns = [header.index(h) for h in wanted]
    return np.array([[float(r[c]) for c in columns] for r in body]).reshape(-1, len(columns))


def _read_one(path: Path, *, task: str, role: str) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        if task != "detection":
            raise DataError(f"{path} is a CSV file; only detection reads point lists")
        return _read_points(path)
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            array = tifffile.imread(path)
        elif suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            import imageio.v3 as iio

            array = iio.imread(path)
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {path}: {error}; give a TIFF, PNG, JPEG or .npy file") from None
    if role == "input":
        return array
    array = np.squeeze(array)
    if get_task(task).labels:
        array = as_labels(array, task=task, where=str(path))
    if task == "detection":
        from skimage.measure import regionprops

        array = np.array([r.centroid for r in regionprops(array)]).reshape(-1, array.ndim)
    return array


def _read_images(paths: Sequence[Path], *, task: str, role: str, progress: ProgressCallback) -> list[np.ndarray]:
    arrays = []
    for done, path in enumerate(paths, start=1):
        arrays.append(_read_one(path, task=task, role=role))
        progress(done, len(paths), f"reading {role}")
    return arrays


def evaluate_folders(
    pred_dirs: Mapping[str, str | Path],
    truth_dir: str | Path,
    *,
    task: str,
    out_dir: str | Path,
    images_dir: str | Path | None = None,
    data_range: float | None = None,
    thresholds: Sequence[float] = metrics.DEFAULT_THRESHOLDS,
    tolerance: float | None = None,
    main_metric: str | None = None,
    n_bootstrap: int = 2000,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> Evaluation:
    """Evaluate folders of predictions (one per method) against a folder of truths.

    Files are paired by name without extension (``a.tif`` with ``a.png``); a name missing
    from any folder is a :class:`~microzoo.errors.DataError` that lists them. ``images_dir``
    holds the inputs, shown in the report's panels; when they fall into groups
    (:func:`microzoo.qc.groups.find_groups`), the figures are split by group too. Detection
    truths and predictions are CSV files of coordinates (columns ``z``/``y``/``x`` or
    ``axis-0``, ...) or label images whose object centroids are used. All images are held in
    memory. Writes ``metrics.json``, ``per_image.csv`` and ``report.html`` into ``out_dir``;
    the other options are those of
    :func:`evaluate`.
    """
    get_task(task)
    progress = progress or no_progress
    stems, paths = _pair_files(pred_dirs, truth_dir, images_dir)
    truths = _read_images(paths["truth"], task=task, role="truth", progress=progress)
    predictions = {
        method: _read_images(paths[_predictions(method)], task=task, role=method, progress=progress)
        for method in pred_dirs
    }
    inputs = _read_images(paths["input images"], task=task, role="input", progress=progress) if images_dir else None
    evaluation = evaluate(
        predictions,
        truths,
        task=task,
        names=stems,
        data_range=data_range,
        thresholds=thresholds,
        tolerance=tolerance,
        main_metric=main_metric,
        n_bootstrap=n_bootstrap,
        seed=seed,
        groups=groups_of(inputs) if inputs is not None else None,
        progress=progress,
    )
    progress(0, 1, "writing the report")
    write_evaluation(evaluation, out_dir, truths=truths, predictions=predictions, inputs=inputs)
    progress(1, 1, "writing the report")
    return evaluation
