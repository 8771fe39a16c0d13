"""Semantic segmentation: a U-Net gives every pixel a class.

With ``n_classes: 2`` (the default) the label images are read as foreground (label > 0, or
label 0 with ``foreground: zero``) against background, the network has one output channel and
a sigmoid; with more classes the labels must be the class numbers 0..n-1, the network has one
channel per class and a softmax. Losses: binary cross-entropy (cross-entropy for several classes), Dice, their sum
(default), or cross-entropy weighted by the inverse class frequencies of the training labels.

The classical baseline is an Otsu threshold of the grey image (multi-Otsu for several
classes), bright or dark objects as the training labels show (:func:`microzoo.qc.baselines.semantic_baseline`,
the one `compare --classical` runs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from microzoo.errors import DataError
from microzoo.progress import ProgressCallback
from microzoo.qc.baselines import semantic_baseline
from microzoo.qc.metrics import mean_class_iou
from microzoo.train.config import SemanticConfig
from microzoo.train.data import PatchSampler, Sample
from microzoo.train.loop import predict_batches
from microzoo.train.tasks.skeleton import LoopSetup, TaskCheck, predict_image

__all__ = ["check", "class_map", "segmentation_loss", "setup"]


def class_map(labels: np.ndarray, n_classes: int, *, name: str = "labels", foreground: str = "nonzero") -> np.ndarray:
    """Class numbers (int32) from a label image; for two classes 1 is the foreground (label > 0,
    or label 0 with ``foreground="zero"``), else the labels are the class numbers."""
    if n_classes == 2:
        return ((labels == 0) if foreground == "zero" else (labels > 0)).astype(np.int32)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise DataError(
            f"{name} holds values {int(labels.min())}..{int(labels.max())} but n_classes is {n_classes}; "
            f"give label images whose values are the class numbers 0..{n_classes - 1}"
        )
    return labels.astype(np.int32)


def _dice(probabilities: torch.Tensor, one_hot: torch.Tensor) -> torch.Tensor:
    dims = tuple(d for d in range(probabilities.ndim) if d != 1)
    overlap = (probabilities * one_hot).sum(dims)
    total = probabilities.sum(dims) + one_hot.sum(dims)
    return 1.0 - ((2 * overlap + 1.0) / (total + 1.0)).mean()


def segmentation_loss(
    output: torch.Tensor, target: torch.Tensor, *, kind: str, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """The loss between logits ``(b, k, ...)`` and class numbers ``(b, 1, ...)`` (float).

    ``kind``: ``"bce"``, ``"dice"``, ``"bce_dice"`` or ``"weighted_bce"`` (needs ``class_weights``).
    One output channel means two classes (sigmoid); several mean one per class (softmax).
    """
    if kind == "weighted_bce":
        if class_weights is None:
            raise ValueError("the loss 'weighted_bce' needs class_weights (one per class)")
        weights = class_weights.to(output.device)
        if output.shape[1] == 1:
            pixel_weights = weights[1] * target + weights[0] * (1 - target)
            return torch.nn.functional.binary_cross_entropy_with_logits(output, target, weight=pixel_weights)
        return torch.nn.functional.cross_entropy(output, target[:, 0].long(), weight=weights)
    if output.shape[1] == 1:
        probabilities = torch.sigmoid(output)
        one_hot = target
        cross_entropy = torch.nn.functional.binary_cross_entropy_with_logits(output, target)
    else:
        classes = target[:, 0].long()
        probabilities = torch.softmax(output, dim=1)
        one_hot = torch.nn.functional.one_hot(classes, output.shape[1]).movedim(-1, 1).to(output.dtype)
        cross_entropy = torch.nn.functional.cross_entropy(output, classes)
    if kind == "bce":
        return cross_entropy
    if kind == "dice":
        return _dice(probabilities, one_hot)
    return cross_entropy + _dice(probabilities, one_hot)


def predicted_classes(output: np.ndarray) -> np.ndarray:
    """Class numbers from raw outputs ``(k, ...)`` (or ``(b, k, ...)`` with ``axis``)."""
    if output.shape[0] == 1:
        return (output[0] > 0).astype(np.int32)
    return np.argmax(output, axis=0).astype(np.int32)


def setup(config: SemanticConfig, train: list[Sample], val: list[Sample]) -> LoopSetup:
    """Patches of class maps (redrawn without foreground), the chosen loss, validation IoU."""
    data, settings, n = config.data, config.training, config.n_classes
    train_classes = [class_map(s.require_truth(), n, name=s.name, foreground=config.foreground) for s in train]
    truths = [class_map(s.require_truth(), n, name=s.name, foreground=config.foreground) for s in val]
    sampler = PatchSampler(
        [s.image for s in train], [c[None].astype(np.float32) for c in train_classes], patch_size=data.patch_size,
        augmentation=data.augmentation, foreground=[c > 0 for c in train_classes],
        min_foreground=data.min_foreground_fraction,
    )  # fmt: skip
    val_sampler = PatchSampler(
        [s.image for s in val], [t[None].astype(np.float32) for t in truths], patch_size=data.patch_size,
        foreground=[t > 0 for t in truths], min_foreground=data.min_foreground_fraction,
    )  # fmt: skip
    val_x, val_y = val_sampler.sample(np.random.default_rng(settings.seed + 1), data.validation_patches)
    counts = np.bincount(np.concatenate([c.ravel() for c in train_classes]), minlength=n).astype(np.float64)
    class_weights = torch.tensor(counts.sum() / (n * np.maximum(counts, 1.0)), dtype=torch.float32)

    def loss_fn(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return segmentation_loss(output, target, kind=config.loss, class_weights=class_weights)

    def validate(net: torch.nn.Module) -> dict[str, float]:
        output = predict_batches(net, val_x, batch_size=settings.batch_size)
        loss = float(loss_fn(torch.from_numpy(output), torch.from_numpy(val_y)))
        truth = val_y[:, 0].astype(np.int32)
        pred = np.stack([predicted_classes(o) for o in output])
        return {"val_loss": loss, "val_iou": mean_class_iou(truth, pred, n_classes=n)}

    return LoopSetup(out_channels=1 if n == 2 else n, sample_batch=lambda rng: sampler.sample(rng, settings.batch_size),
                     loss_fn=loss_fn, validate=validate, monitor="val_iou", mode="max")  # fmt: skip


def check(
    config: SemanticConfig, network: torch.nn.Module, train: list[Sample], val: list[Sample], *, out_dir: Path,
    progress: ProgressCallback,
) -> TaskCheck:  # fmt: skip
    """Classes of the U-Net and of the Otsu baseline (polarity chosen on training images)."""
    n = config.n_classes
    multiple = 2**config.network.depth
    train_classes = [class_map(s.require_truth(), n, name=s.name, foreground=config.foreground) for s in train]
    otsu = semantic_baseline(train_images=[s.grey for s in train], train_classes=train_classes, n_classes=n)
    raw = [predict_image(network, s.image, multiple=multiple) for s in val]
    predictions = {
        "U-Net": [predicted_classes(o) for o in raw],
        otsu.name: [otsu(s.grey).astype(np.int32) for s in val],
    }
    notes: dict[str, object] = {"loss": config.loss, "classes": n}
    if n == 2:
        notes["foreground"] = "label 0" if config.foreground == "zero" else "label > 0"
    return TaskCheck(
        postprocessing="sigmoid" if n == 2 else "softmax", notes=notes, predictions=predictions,
        truths=[class_map(s.require_truth(), n, name=s.name, foreground=config.foreground) for s in val],
        inputs=[s.grey for s in val], probabilities={"U-Net": [foreground_of_logits(o) for o in raw]},
    )  # fmt: skip


def foreground_of_logits(output: np.ndarray) -> np.ndarray:
    """P(class > 0) from raw outputs ``(k, ...)``: the sigmoid of one channel, else 1 - softmax's class 0."""
    logits = torch.from_numpy(np.asarray(output, dtype=np.float32))
    if logits.shape[0] == 1:
        return torch.sigmoid(logits[0]).numpy()
    return (1.0 - torch.softmax(logits, dim=0)[0]).numpy()
