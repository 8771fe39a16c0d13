"""The four training tasks and the steps they share.

Each task module (``segmentation``, ``instances``, ``care``, ``n2v``) reads its data, builds a
U-Net, trains it with :func:`microzoo.train.loop.fit`, and hands the trained network to
:func:`finish`, which

1. scores the network against the task's classical baseline on the validation images
   (:func:`microzoo.qc.evaluate.evaluate`) and writes ``OUT/qc/`` (``metrics.json``,
   ``per_image.csv``, ``report.html``);
2. fingerprints the training images (:mod:`microzoo.trust.fingerprint`);
3. exports the zoo package into ``OUT/package/`` (:func:`microzoo.train.export.export_package`).

The helpers here are small: build the network with a seed, predict a whole image, and collect
what was written into a :class:`TrainingResult`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from microzoo.progress import ProgressCallback, no_progress

__all__ = ["TrainingResult", "build_network", "finish", "predict_image"]


@dataclass(frozen=True)
class TrainingResult:
    """Where a training run wrote its outputs, and its headline figures.

    Attributes
    ----------
    task : "semantic", "instances", "care" or "n2v".
    out_dir : the output folder; ``config`` is the YAML configuration saved in it.
    package : the package's ``bioimageio.yaml`` (None when export was switched off).
    report, metrics : the QC report (HTML) and its figures (JSON); None without ground truth.
    curves_csv, curves_png : loss and validation curves.
    best_checkpoint, last_checkpoint : ``best.pt`` (weights) and ``last.pt`` (resumable state).
    figures : QC figures, e.g. ``{"f1@0.5": 0.81, "baseline f1@0.5": 0.66}``.
    history : one row per epoch (loss, validation figures, learning rate, seconds).
    best_epoch, stopped : the epoch whose weights were kept, and why training stopped
        ("epochs", "early stopping" or "time limit").
    """

    task: str
    out_dir: Path
    config: Path
    package: Path | None
    report: Path | None
    metrics: Path | None
    curves_csv: Path
    curves_png: Path
    best_checkpoint: Path
    last_checkpoint: Path
    figures: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    stopped: str = "epochs"


def network_kwargs(config: Any, *, in_channels: int, out_channels: int) -> dict[str, Any]:
    """The keyword arguments of :class:`~microzoo.train.models.UNet` for a task config."""
    net = config.network
    return {"in_channels": in_channels, "out_channels": out_channels, "spatial_dims": config.data.spatial_dims,
            "depth": net.depth, "base_features": net.base_features, "batch_norm": net.batch_norm,
            "residual": net.residual, "n2v2": net.n2v2}  # fmt: skip


def build_network(config: Any, *, in_channels: int, out_channels: int) -> torch.nn.Module:
    """A U-Net whose initial weights depend only on ``config.training.seed``."""
    from microzoo.train.models import UNet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.training.seed)
        return UNet(**network_kwargs(config, in_channels=in_channels, out_channels=out_channels))


def load_best(network: torch.nn.Module, checkpoint: Path) -> torch.nn.Module:
    """Put the best checkpoint's weights into ``network`` (on the CPU, in eval mode)."""
    from microzoo.train.loop import load_checkpoint

    network.load_state_dict(load_checkpoint(checkpoint)["network"])
    return network.cpu().eval()


def predict_image(network: torch.nn.Module, image: np.ndarray, *, multiple: int) -> np.ndarray:
    """The raw network output for a whole normalised image ``(c, *spatial)``.

    The image is mirror-padded up to multiples of ``multiple`` (``2 ** depth``) and the
    output cropped back to the image's size.
    """
    spatial = image.shape[1:]
    pads = [(0, 0)] + [(0, -(-s // multiple) * multiple - s) for s in spatial]
    padded = np.pad(image, pads, mode="symmetric").astype(np.float32)
    device = next(network.parameters()).device
    network.eval()
    with torch.no_grad():
        output = network(torch.from_numpy(padded[None]).to(device))[0].float().cpu().numpy()
    return output[(slice(None), *(slice(0, s) for s in spatial))]


def _plane(raw: np.ndarray) -> np.ndarray:
    """A 2-D grey view of a raw image ``(c, *spatial)`` for the fingerprint and the report."""
    image = raw[0]
    return image[image.shape[0] // 2] if image.ndim == 3 else image


def fingerprint_or_none(raws: Sequence[np.ndarray]) -> Any:
    """The training fingerprint, or None when there are too few or too small images."""
    from microzoo.errors import MicrozooError
    from microzoo.trust.fingerprint import fingerprint_images

    try:
        return fingerprint_images([_plane(r) for r in raws])
    except MicrozooError:
        return None


def finish(
    config: Any,
    *,
    out_dir: Path,
    network: torch.nn.Module,
    loop_result: Any,
    config_path: Path,
    train_raws: Sequence[np.ndarray],
    test_input: np.ndarray,
    out_channels: int,
    postprocessing: str,
    qc_task: str | None,
    truths: Sequence[np.ndarray] = (),
    predictions: Mapping[str, Sequence[np.ndarray]] | None = None,
    inputs: Sequence[np.ndarray] | None = None,
    names: Sequence[str] | None = None,
    extra_training: Mapping[str, Any] | None = None,
    instance_settings: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
) -> TrainingResult:
    """QC against the baseline into ``OUT/qc``, fingerprint, and export into ``OUT/package``.

    ``predictions`` maps method names to outputs on the validation images; the first is the
    trained model, the second the classical baseline. ``qc_task`` None skips the QC (no ground
    truth, e.g. Noise2Void without clean images).
    """
    progress = progress or no_progress
    out_dir = Path(out_dir)
    figures: dict[str, float] = {}
    report = metrics = None
    if qc_task is not None and predictions:
        from microzoo.qc.evaluate import evaluate, write_evaluation

        evaluation = evaluate(predictions, truths, task=qc_task, names=names, n_bootstrap=500,
                              seed=config.training.seed, progress=progress)  # fmt: skip
        paths = write_evaluation(evaluation, out_dir / "qc", truths=truths, predictions=predictions, inputs=inputs)
        report, metrics = paths["report"], paths["metrics"]
        model, *others = evaluation.methods
        for metric in evaluation.headline:
            figures[metric] = evaluation.summary[model][metric].value
            if others:
                figures[f"baseline {metric}"] = evaluation.summary[others[0]][metric].value
    package = None
    if config.training.export:
        package = _export(config, out_dir=out_dir, network=network, loop_result=loop_result,
                          train_raws=train_raws, test_input=test_input, out_channels=out_channels,
                          postprocessing=postprocessing, figures=figures, report=report,
                          extra_training=extra_training, instance_settings=instance_settings,
                          progress=progress)  # fmt: skip
    return TrainingResult(
        task=config.task, out_dir=out_dir, config=config_path, package=package, report=report, metrics=metrics,
        curves_csv=loop_result.curves_csv, curves_png=loop_result.curves_png,
        best_checkpoint=loop_result.best_checkpoint, last_checkpoint=loop_result.last_checkpoint,
        figures=figures, history=loop_result.history, best_epoch=loop_result.best_epoch,
        stopped=loop_result.stopped,
    )  # fmt: skip


def _export(config: Any, *, out_dir: Path, network: torch.nn.Module, loop_result: Any, train_raws: Sequence[np.ndarray],
            test_input: np.ndarray, out_channels: int, postprocessing: str, figures: dict[str, float],
            report: Path | None, extra_training: Mapping[str, Any] | None,
            instance_settings: Mapping[str, Any] | None, progress: ProgressCallback) -> Path:  # fmt: skip
    from microzoo.train import models
    from microzoo.train.export import ExportSpec, export_package

    step = 2**config.network.depth
    halo = max(16, 2 * step)
    settings = config.training
    history = loop_result.history
    training = {
        "data": str(config.data.images), "images": len(train_raws), "epochs": len(history),
        "best_epoch": loop_result.best_epoch, "stopped": loop_result.stopped,
        "batch_size": settings.batch_size, "steps_per_epoch": settings.steps_per_epoch,
        "patch_size": list(config.data.patch_size), "learning_rate": settings.learning_rate,
        "optimizer": f"AdamW (weight decay {settings.weight_decay:g})", "schedule": settings.scheduler,
        "seconds": float(history[-1]["seconds"]) if history else 0.0, "seed": settings.seed,
        **dict(extra_training or {}),
    }  # fmt: skip
    in_channels = int(test_input.shape[0])
    spec = ExportSpec(
        name=config.name, description=config.description or f"{config.task} U-Net trained with microzoo",
        task=config.task, spatial_dims=config.data.spatial_dims, in_channels=in_channels,
        out_channels=out_channels, architecture_source=Path(models.__file__), architecture_callable="UNet",
        architecture_kwargs=network_kwargs(config, in_channels=in_channels, out_channels=out_channels),
        normalization_percentiles=tuple(config.data.normalization_percentiles), postprocessing=postprocessing,
        size_min=2 * halo + step, size_step=step, halo=halo,
        test_input=test_input[0] if in_channels == 1 else test_input,
        authors=list(config.authors), license=config.license, training=training, qc=figures,
        fingerprint=fingerprint_or_none(train_raws), instance_settings=dict(instance_settings) if instance_settings else None,
        qc_report=report,
    )  # fmt: skip
    return export_package(network, out_dir=out_dir / "package", spec=spec, progress=progress)
