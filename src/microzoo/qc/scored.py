"""Score predictions already made (``microzoo predict --truth DIR``) against ground truth.

:func:`score_predictions` takes what :func:`microzoo.runtime.batch.predict_files` returned, pairs
each input with the truth file of the same name (without extension), turns the model's first
output into what the task scores exactly as ``microzoo compare`` does, runs the task's classical
baseline on the same inputs, and evaluates both (figures, intervals, the report, the verdict).
The model is not run again; each input image is read again for the baseline and the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from microzoo.errors import DataError
from microzoo.io.files import list_images, pair_by_stem
from microzoo.io.read import read_array, read_image
from microzoo.progress import ProgressCallback, no_progress
from microzoo.qc.compare import Comparison, _as_prediction, _gray, _instance_settings, _run_classical, _truth
from microzoo.qc.groups import groups_of
from microzoo.qc.tasks import get_task

if TYPE_CHECKING:
    from microzoo.runtime.batch import FileResult
    from microzoo.runtime.predict import Model

__all__ = ["qc_task_of", "score_predictions"]

#: package tags -> the QC task that scores the model's output, most specific first
_TAG_TASKS = (("instance-segmentation", "instances"), ("segmentation", "semantic"),
              ("denoising", "restoration"), ("restoration", "restoration"))  # fmt: skip


def qc_task_of(model: Model) -> str | None:
    """The QC task of a package: instances when it stores instance settings, else from its tags."""
    if _instance_settings(model) is not None:
        return "instances"
    tags = {str(t).lower() for t in (getattr(model.descr, "tags", None) or ())}
    return next((task for tag, task in _TAG_TASKS if tag in tags), None)


def score_predictions(
    model: Model,
    results: Sequence[FileResult],
    *,
    truth_dir: Path,
    out_dir: Path,
    task: str | None = None,
    axes: str | None = None,
    truth_foreground: int | None = None,
    data_range: float | None = None,
    progress: ProgressCallback | None = None,
) -> Comparison:
    """Evaluate ``model``'s predictions and the classical baseline against ``truth_dir``; report in ``out_dir``.

    ``task`` defaults to :func:`qc_task_of` the model. Inputs without a truth file are left out
    (said in a notice); none paired at all is an error.
    """
    from microzoo.qc.evaluate import evaluate, write_evaluation

    progress = progress or no_progress
    task = task or qc_task_of(model)
    if task is None:
        raise DataError(
            f"cannot tell which task {model.package.name!r} does from its description; "
            "give --task restoration, semantic or instances"
        )
    definition = get_task(task, runnable=True)
    by_input = {r.input: r for r in results}
    kept, paired = pair_by_stem(
        {"truth": list_images(truth_dir, role="truth"), "predicted images": list(by_input)}, extra_ok=True
    )
    skipped = len(results) - len(kept)
    notices = [f"{skipped} predicted image(s) have no truth file in {truth_dir} and are not scored"] * (skipped > 0)
    settings, first = _instance_settings(model), model.output_ids[0]
    inputs, truths, outputs = [], [], []
    for i in range(len(kept)):
        progress(i, len(kept), "reading truths and outputs")
        result, truth_path = by_input[paired["predicted images"][i]], paired["truth"][i]
        inputs.append(np.asarray(read_image(result.input, axes=axes).data))
        truths.append(_truth(read_array(truth_path), task, truth_foreground, where=str(truth_path)))
        outputs.append(_as_prediction(_output(result, first), result.prediction.axes[first], definition, settings))
    params, baseline, classical_notices = _run_classical(
        inputs, task, train_noisy=None, train_clean=None, data_range=data_range, progress=progress
    )
    predictions = {model.package.name: outputs, **baseline}
    evaluation = evaluate(predictions, truths, task=task, names=kept, data_range=data_range, groups=groups_of(inputs))
    gray_inputs = [_gray(x) for x in inputs]
    paths = write_evaluation(evaluation, out_dir, truths=truths, predictions=predictions, inputs=gray_inputs)
    return Comparison(evaluation, paths, params, tuple(dict.fromkeys([*notices, *classical_notices])))


def _output(result: FileResult, output_id: str) -> np.ndarray:
    """The output in memory, else as written (predictions run on Dask workers keep none)."""
    if output_id in result.prediction.outputs:
        return np.asarray(result.prediction.outputs[output_id])
    array = read_array(result.outputs[output_id])
    if array.ndim != len(result.prediction.axes[output_id]):
        raise DataError(f"{result.outputs[output_id]}: cannot read the output back with axes "
                        f"{result.prediction.axes[output_id]!r}; write .tif outputs to score them")  # fmt: skip
    return array
