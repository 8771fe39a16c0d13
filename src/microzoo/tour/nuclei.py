"""Step 2: the example model finds nuclei on DSB2018 test images, beside Otsu + watershed.

The images are a fixed subset of the DSB2018 test split: fluorescence images and some of its
colour histology (H&E) images, which a model trained on fluorescence nuclei has never seen.
``qc.compare.run_methods`` runs the model and the classical baseline, ``evaluate_runs`` scores
both against the ground truth (overall and per image group, with bootstrap intervals), as
``microzoo compare --classical`` does; the trust note (:func:`microzoo.trust.note.trust_note`)
judges each image from what the model saw and produced, without the truth.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.tour.common import Picture, StepResult, Table, TourContext, command, link_images
from microzoo.tour.zoo_steps import EXAMPLE

#: image sets (name prefixes of DSB2018 test images): fluorescence, and colour histology
QUICK_FLUORESCENCE = ("003cee89357d", "08151b19806e")
QUICK_HISTOLOGY = ("1e488c42eb1a",)
FLUORESCENCE = 14  # the full tour: this many fluorescence images (of at most 520x696 pixels) ...
HISTOLOGY = 6  # ... and this many histology images


def pick_images(folder: Path, quick: bool) -> tuple[list[Path], list[Path]]:
    """(fluorescence, histology) images of the DSB2018 test ``folder``, in file order: colour
    images are histology; grey ones with a dark background and at most 520x696 pixels are fluorescence."""
    import imageio.v3 as iio

    paths = sorted(folder.glob("*.png"))
    if quick:
        return ([p for p in paths if p.name.startswith(QUICK_FLUORESCENCE)],
                [p for p in paths if p.name.startswith(QUICK_HISTOLOGY)])  # fmt: skip
    fluorescence, histology = [], []
    for path in paths:
        rgb = iio.imread(path)[..., :3].astype(np.float32)
        if rgb.std(axis=-1).mean() > 1:
            histology.append(path)
        elif rgb.mean() < 60 and rgb.shape[0] * rgb.shape[1] <= 520 * 696:
            fluorescence.append(path)
    return fluorescence[:FLUORESCENCE], histology[:HISTOLOGY]


def step_nuclei(ctx: TourContext) -> StepResult:
    """Step 2: predict, compare with Otsu + watershed against the truth, and the trust note."""
    from microzoo.package.load import open_package
    from microzoo.qc.compare import evaluate_runs, run_methods
    from microzoo.qc.evaluate import write_evaluation
    from microzoo.qc.report import format_estimate, panel_figure, png_uri
    from microzoo.trust.note import trust_note, write_note

    start = time.perf_counter()
    test = ctx.data / "dsb2018" / "test"
    fluorescence, histology = pick_images(test / "images", ctx.quick)
    chosen = sorted(fluorescence + histology)
    folder = ctx.folder("nuclei")
    images = link_images(chosen, folder / "images")
    labels = link_images([test / "labels" / f"{p.stem}.tif" for p in chosen], folder / "labels")
    package = ctx.data / EXAMPLE
    seen: dict[str, tuple[np.ndarray, str, Any]] = {}  # image name -> (image, axes, outputs)
    models: list[Any] = []

    def keep(label: str, model: Any, name: str, image: np.ndarray, axes: str, result: Any) -> None:
        seen[name] = (image, axes, result.outputs)
        models[:] = [model]

    runs = run_methods([str(package)], images_dir=images, truth_dir=labels, task="instances", classical=True,
                       on_prediction=keep, progress=ctx.progress)  # fmt: skip
    evaluation = evaluate_runs(runs)
    assert runs.truths is not None
    paths = write_evaluation(evaluation, folder / "compare", truths=runs.truths, predictions=runs.predictions,
                             inputs=runs.gray_inputs)  # fmt: skip
    ctx.progress(0, 1, "the trust note: how far the images look like the model's")
    names = list(runs.names)
    note = trust_note(open_package(package), [seen[n][0] for n in names], names, [seen[n][1] for n in names],
                      outputs=[seen[n][2] for n in names], model=models[0])  # fmt: skip
    note_path = write_note(note, folder / "trust.json")
    metric = evaluation.main_metric
    model_name = next(iter(runs.sources))
    rows = []
    for group, figures in evaluation.by_group.items():
        rows.append((group, str(len(figures.images)),
                     *(format_estimate(e.value, e.low, e.high, metric) for e in
                       (figures.summary[m][metric] for m in evaluation.methods))))  # fmt: skip
    overall = {m: evaluation.summary[m][metric] for m in evaluation.methods}
    verdicts = {image.name: image.verdict for image in note.images}
    histology_names = {p.stem for p in histology}
    panels = []
    for name in [n for n in names if n in histology_names and verdicts.get(n) != "similar"][:2]:
        index = names.index(name)
        panels.append(Picture(
            f"{name[:12]}, a histology image the trust note calls `{verdicts[name]}`: the model, trained on "
            "fluorescence, marks stained tissue as nuclei (red: false positives, blue: missed nuclei, green: found).",
            png_uri(panel_figure(evaluation, index, truths=runs.truths, predictions=runs.predictions,
                                 inputs=runs.gray_inputs, reason="histology")),
        ))  # fmt: skip
    flagged = [i for i in note.images if i.verdict != "similar"]
    return StepResult(
        number=2,
        title="Find nuclei, and know when not to trust the result",
        what=(
            f"The example model segments nuclei on {len(chosen)} DSB2018 test images ({len(fluorescence)} "
            f"fluorescence, {len(histology)} colour histology) and is scored against the ground truth beside the "
            "classical Otsu threshold + watershed, over all images and per image group, with 95% intervals; the "
            "trust note judges each image without the truth."
        ),
        why=(
            "A model is only as good as the images it was trained on: on fluorescence it beats the classical method, "
            "on histology it fails, and a single average hides it; the trust note is what warns you on your own "
            "images, where no ground truth exists."
        ),
        commands=(
            command("compare", package, "--images", images, "--truth", labels, "--task", "instances", "--classical",
                    "-o", folder / "compare"),
            command("predict", package, images, "-o", folder / "predictions") + "   # writes trust.json",
        ),  # fmt: skip
        summary=(f"{metric} " + ", ".join(f"{m} {format_estimate(e.value, e.low, e.high, metric)}"
                                         for m, e in overall.items())
                 + f"; trust note: {note.headline.rstrip(':')}"),  # fmt: skip
        figures=tuple((f"{m}: {metric} (95% interval)", format_estimate(e.value, e.low, e.high, metric))
                      for m, e in overall.items()) + (("images", f"{len(chosen)}"),),  # fmt: skip
        lines=(f"Trust note: {note.headline}", *note.details[: len(flagged) + 2], *evaluation.group_notes),
        tables=(Table(f"{metric} per image group (95% interval)", ("group", "images", *evaluation.methods),
                      tuple(rows)),) if rows else (),  # fmt: skip
        pictures=tuple(panels),
        reports=(("comparison report", paths["report"]), ("its figures (JSON)", paths["metrics"]),
                 ("the trust note (JSON)", note_path)),  # fmt: skip
        seconds=time.perf_counter() - start,
        facts={"verdicts": verdicts, "histology": sorted(histology_names), "model": model_name,
               "fluorescence": sorted(p.stem for p in fluorescence), "groups": list(evaluation.by_group)},
    )  # fmt: skip
