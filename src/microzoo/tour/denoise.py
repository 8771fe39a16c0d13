"""Step 3: Noise2Void trains on W2S noisy images and is compared with BM3D and a Gaussian.

The network trains with the library's :func:`microzoo.train.train` from a configuration the
step writes (``n2v.yaml``: W2S training fields, a small U-Net, a time limit), and exports a
package. ``qc.compare.run_methods`` / ``evaluate_runs`` then score it and the classical
baselines (a Gaussian and BM3D, with fixed parameters) against the clean images of a few W2S
test fields (their central crops: BM3D takes seconds per field), as ``microzoo compare
--classical`` does. The hallucination check (:mod:`microzoo.trust.hallucination`) asks of
each method whether what it removed is noise; the uncertainty map is the spread of the
model's output under flips and rotations (:func:`microzoo.runtime.uncertainty.predict_with_uncertainty`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.tour.common import Picture, StepResult, Table, TourContext, command

#: training and test fields of W2S, the crop of the test fields, the training budget
FULL = {"train": 24, "validation": 4, "test": 5, "crop": 256, "minutes": 1.5, "epochs": 100, "steps": 25,
        "patch": 64, "batch": 8}  # fmt: skip
QUICK = {"train": 3, "validation": 1, "test": 2, "crop": 128, "minutes": 0.15, "epochs": 2, "steps": 8,
         "patch": 32, "batch": 4}  # fmt: skip
#: the network: the U-Net depth of Noise2Void's paper with a quarter of its features: it trains and
#: predicts fast on a CPU (step 6 runs it over 67 megapixels twice)
DEPTH, FEATURES = 2, 8


def _stems(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.tif"))


def write_crops(sources: list[Path], folder: Path, side: int) -> Path:
    """The central ``side`` x ``side`` crop of each image, as a TIFF of the same name in ``folder``."""
    import tifffile

    from microzoo.io.atomic import atomic_output
    from microzoo.io.read import read_array

    folder.mkdir(parents=True, exist_ok=True)
    for source in sources:
        image = read_array(source)
        y, x = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        with atomic_output(folder / source.name) as tmp:
            tifffile.imwrite(tmp, np.ascontiguousarray(image[y : y + side, x : x + side]))
    return folder


def n2v_configuration(ctx: TourContext, folder: Path) -> tuple[Any, Path]:
    """The Noise2Void configuration of the tour, saved as ``folder/n2v.yaml``."""
    from microzoo.train import n2v_config, save_config
    from microzoo.train.config import validate_config

    sizes = QUICK if ctx.quick else FULL
    noisy, clean = ctx.data / "w2s" / "train" / "noisy", ctx.data / "w2s" / "train" / "clean"
    stems = _stems(noisy)
    n_train, n_val = int(sizes["train"]), int(sizes["validation"])
    base = n2v_config(images=noisy, targets=clean, patch_size=int(sizes["patch"]), epochs=int(sizes["epochs"]),
                      steps_per_epoch=int(sizes["steps"]), batch_size=int(sizes["batch"]),
                      max_minutes=float(sizes["minutes"]), name="tour-noise2void-w2s")  # fmt: skip
    data = base.model_dump(mode="json")
    data["description"] = "Noise2Void (N2V2) for widefield fluorescence, trained by the microzoo tour on W2S fields."
    data["data"]["training_images"] = stems[:n_train]
    data["data"]["validation_images"] = stems[n_train : n_train + n_val]
    data["network"].update(depth=DEPTH, base_features=FEATURES)
    config = validate_config(data, source="the tour's Noise2Void configuration")
    path = save_config(config, folder / "n2v.yaml")
    return config, path


def step_denoise(ctx: TourContext) -> StepResult:
    """Step 3: train Noise2Void, compare with BM3D and a Gaussian, the hallucination check and uncertainty."""
    from microzoo.package.load import open_package
    from microzoo.qc.compare import evaluate_runs, run_methods
    from microzoo.qc.evaluate import write_evaluation
    from microzoo.qc.report import format_estimate, format_figure
    from microzoo.runtime.predict import Model
    from microzoo.runtime.uncertainty import predict_with_uncertainty
    from microzoo.train import train
    from microzoo.trust.hallucination import hallucination_reasons, residual_structure
    from microzoo.trust.reference import package_reference

    start = time.perf_counter()
    sizes = QUICK if ctx.quick else FULL
    folder = ctx.folder("denoise")
    config, config_path = n2v_configuration(ctx, folder)
    trained = train(config, out_dir=folder / "n2v", progress=ctx.progress)
    if trained.package is None:
        from microzoo.tour.zoo_steps import TourError

        raise TourError("the Noise2Void run exported no package")
    package = ctx.trained = trained.package.parent
    train_seconds = trained.history[-1].get("seconds", 0.0) if trained.history else 0.0  # cumulative

    test = ctx.data / "w2s" / "test"
    stems = _stems(test / "noisy")[: int(sizes["test"])]
    side = int(sizes["crop"])
    noisy = write_crops([test / "noisy" / f"{s}.tif" for s in stems], folder / "test" / "noisy", side)
    clean = write_crops([test / "clean" / f"{s}.tif" for s in stems], folder / "test" / "clean", side)
    ctx.progress(0, 1, "Noise2Void, BM3D and a Gaussian on the test fields")
    runs = run_methods([str(package)], images_dir=noisy, truth_dir=clean, task="restoration", classical=True,
                       progress=ctx.progress)  # fmt: skip
    evaluation = evaluate_runs(runs, data_range=255.0)
    assert runs.truths is not None
    paths = write_evaluation(evaluation, folder / "compare", truths=runs.truths, predictions=runs.predictions,
                             inputs=runs.gray_inputs)  # fmt: skip
    metric = "psnr_fitted" if "psnr_fitted" in evaluation.summary[evaluation.methods[0]] else evaluation.main_metric
    overall = {m: evaluation.summary[m][metric] for m in evaluation.methods}
    raw = {m: evaluation.summary[m].get("psnr") for m in evaluation.methods}

    ctx.progress(0, 1, "the hallucination check and the uncertainty map")
    model_label = next(iter(runs.sources))
    reference = package_reference(open_package(package)).residuals
    expected = next(iter(reference.values()), None)
    rows, scores = [], {}
    for method in evaluation.methods:
        found = [residual_structure(image, output) for image, output in zip(runs.inputs, runs.predictions[method],
                                                                              strict=True)]  # fmt: skip
        found_ok = [f for f in found if f is not None]
        judged = [hallucination_reasons(f, expected if method == model_label else None, "output")[0] for f in found_ok]
        scores[method] = max(judged) if judged else float("nan")
        excess, removed = np.mean([f.excess for f in found_ok]), np.mean([f.removed for f in found_ok])
        verdict = "structure removed: check" if scores[method] > 1 else "noise only"
        rows.append((method, f"{excess:.2f}", f"{removed:.2f}", f"{scores[method]:.2f}", verdict))
    model = Model.open(str(package))
    first = runs.inputs[0]
    uncertain = predict_with_uncertainty(model, first, axes=runs.image_axes[0], method="tta")
    output_id = model.output_ids[0]
    spread = np.squeeze(uncertain.spread[output_id])
    pictures = (
        Picture(f"Field {stems[0]} ({side}x{side} centre): the noisy input, each method's output and the clean "
                "image (the average of 400 captures).", _strip(runs, stems[0], evaluation, metric)),
        Picture("The uncertainty map: how much Noise2Void's output varies under the 8 flips and rotations of "
                "its input (bright: the output depends on how the image is turned; trust fine detail there less).",
                _uncertainty_figure(first, np.squeeze(np.asarray(uncertain.prediction.outputs[output_id])), spread)),
    )  # fmt: skip
    best = max(overall, key=lambda m: overall[m].value)
    return StepResult(
        number=3,
        title="Train a denoiser, and compare it with the classical ones",
        what=(
            f"Noise2Void learns to denoise from the noisy images alone ({len(config.data.training_images)} W2S "
            f"widefield fields, {train_seconds / 60:.1f} minutes on this machine), then is scored with BM3D and a "
            f"Gaussian blur against clean images of {len(stems)} test fields it never saw; the hallucination check "
            "asks whether what each method removed is only noise, and the uncertainty map where the output is fragile."
        ),
        why=(
            "A denoiser always returns a plausible-looking image, so you judge it by figures against clean data and "
            "against the classical methods you could use instead; a network can also remove or invent real "
            "structure, which the figures alone do not show."
        ),
        commands=(
            command("train", config_path, "--out", folder / "n2v"),
            command("compare", package, "--images", noisy, "--truth", clean, "--task", "restoration", "--classical",
                    "--data-range", "255", "-o", folder / "compare"),
            command("predict", package, noisy, "-o", folder / "uncertainty", "--uncertainty", "tta"),
        ),  # fmt: skip
        summary=(f"{metric}: " + ", ".join(f"{m} {format_figure(e.value, metric)}" for m, e in overall.items())
                 + f" dB; best {best}"),  # fmt: skip
        figures=(
            ("training", f"{len(trained.history)} epochs in {train_seconds / 60:.1f} min ({trained.stopped}); "
                         f"network: U-Net depth {DEPTH}, {FEATURES} features"),
            *((f"{m}: {metric} dB (95% interval)", format_estimate(e.value, e.low, e.high, metric))
              for m, e in overall.items()),
            *((f"{m}: raw psnr dB", format_figure(e.value if e else None, "psnr")) for m, e in raw.items()),
        ),  # fmt: skip
        lines=(
            f"Best on these {len(stems)} fields by {metric}: {best}. Noise2Void trained {train_seconds / 60:.1f} "
            "minutes on this machine's CPU; its figure grows with training (see its training curves), the "
            "classical methods' do not, and they were not tuned on training pairs either (fixed parameters).",
            "W2S images were each stretched to 0..255 on their own, so the figure to compare is PSNR after a "
            "per-image affine fit (psnr_fitted); raw PSNR mostly measures the scale mismatch.",
            *(d for d in runs.notices),
        ),
        tables=(Table("The hallucination check: at the scale of objects, how much more power the removed part "
                      "holds than the image's noise (about 1 for noise alone; score above 1: structure was removed)",
                      ("method", "excess", "removed / input std", "score", "verdict"), tuple(rows)),),  # fmt: skip
        pictures=pictures,
        reports=(("comparison report", paths["report"]), ("its figures (JSON)", paths["metrics"]),
                 *((("training QC report", trained.report),) if trained.report else ()),
                 ("training curves", trained.curves_png),
                 ("the exported package", package / "bioimageio.yaml")),  # fmt: skip
        seconds=time.perf_counter() - start,
        facts={"package": str(package), "figures": {m: e.value for m, e in overall.items()}, "metric": metric,
               "hallucination": scores, "spread_mean": float(np.mean(spread)), "train_seconds": train_seconds},
    )  # fmt: skip


def _strip(runs: Any, name: str, evaluation: Any, metric: str) -> str:
    from matplotlib.figure import Figure

    from microzoo.qc.panels import stretch
    from microzoo.qc.report import format_figure, png_uri

    index = list(runs.names).index(name)
    assert runs.truths is not None
    columns = [("noisy input", runs.gray_inputs[index])]
    columns += [(f"{m}\n{metric} {format_figure(evaluation.per_image[m][metric][index], metric)}",
                 np.squeeze(runs.predictions[m][index])) for m in evaluation.methods]  # fmt: skip
    columns.append(("clean", np.squeeze(runs.truths[index])))
    figure = Figure(figsize=(2.6 * len(columns), 3.0))
    for ax, (title, image) in zip(figure.subplots(1, len(columns)), columns, strict=True):
        ax.imshow(stretch(np.asarray(image, dtype=np.float32)), cmap="gray")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    figure.tight_layout()
    return png_uri(figure)


def _uncertainty_figure(image: np.ndarray, output: np.ndarray, spread: np.ndarray) -> str:
    from matplotlib.figure import Figure

    from microzoo.qc.panels import stretch
    from microzoo.qc.report import png_uri

    figure = Figure(figsize=(9.0, 3.2))
    axes = figure.subplots(1, 3)
    panels = (("noisy input", image, "gray"), ("Noise2Void (mean of 8)", output, "gray"),
              ("spread (std over 8)", spread, "magma"))  # fmt: skip
    for ax, (title, picture, cmap) in zip(axes, panels, strict=True):
        shown = ax.imshow(stretch(np.asarray(np.squeeze(picture), dtype=np.float32)), cmap=cmap)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    figure.colorbar(shown, ax=axes[2], fraction=0.046, label="relative spread")
    return png_uri(figure)
