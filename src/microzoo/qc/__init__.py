"""Quality control: metrics, classical baselines, evaluation with confidence intervals, reports.

The verbs, importable from here (loaded on first use, so ``import microzoo.qc`` stays cheap)::

    evaluate(predictions, truths, task=...)        figures per image and pooled, with intervals
    evaluate_folders(pred_dirs, truth_dir, ...)    the same on folders, report written
    write_evaluation(evaluation, out_dir, ...)     metrics.json, per_image.csv, report.html
    read_evaluation(metrics_json)                  the evaluation read back from its metrics.json
    compare(models, images_dir=..., ...)           models and classical baselines side by side
    baseline_verdict(evaluation, model, baseline)  the one-line verdict against the classical baseline
    find_groups(images)                            groups of images that look alike (evaluate(groups=))
    baselines_for(task, ...)                       the classical baselines of a task
    denoise / segment / tune_denoiser              classical methods on one image
    run_classical_on_folder(method, in, out)       what `microzoo baseline` runs
    get_task(name)                                 the definition of a QC task (qc.tasks.TASKS)
"""

from __future__ import annotations

from microzoo._lazy import lazy_exports

#: public name -> the module that defines it
_EXPORTS = {
    "Baseline": "baselines", "baselines_for": "baselines",
    "Comparison": "compare", "compare": "compare",
    "denoise": "classical", "run_classical_on_folder": "classical", "segment": "classical",
    "tune_denoiser": "classical",
    "Difference": "evaluate", "Estimate": "evaluate", "Evaluation": "evaluate", "evaluate": "evaluate",
    "Verdict": "verdict", "baseline_verdict": "verdict",
    "read_evaluation": "evaluate", "write_evaluation": "evaluate",
    "evaluate_folders": "folders",
    "ImageGroups": "groups", "find_groups": "groups",
    "QCTask": "tasks", "TASKS": "tasks", "get_task": "tasks",
}  # fmt: skip
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
