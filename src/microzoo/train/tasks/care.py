"""Supervised restoration (CARE): learn clean images from noisy ones, pairs matched by name.

Inputs and clean targets are each normalised by their own percentiles; the U-Net is residual
(it learns what to add to the input) and trained with the mean absolute error by default.

Quality control works in the images' own units: the network's output is mapped back with the
input's percentiles and compared with the clean image, beside a Gaussian filter whose width
was tuned on training pairs (:func:`microzoo.qc.baselines.restoration_baselines`) and beside the noisy
input itself. Read the ``*_fitted`` figures (after a per-image ``a * pred + b`` fit) when the
clean images were stretched differently from the noisy ones (as in W2S).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from microzoo.progress import ProgressCallback
from microzoo.qc.baselines import restoration_baselines
from microzoo.train.config import CareConfig
from microzoo.train.data import PatchSampler, Sample, normalize_percentiles
from microzoo.train.loop import predict_batches
from microzoo.train.tasks.skeleton import LoopSetup, TaskCheck, predict_image

__all__ = ["check", "output_scale", "restoration_qc", "setup"]


def to_raw_units(output: np.ndarray, raw: np.ndarray, *, low: float, high: float) -> np.ndarray:
    """Undo the input's percentile normalisation on a network output ``(c, *spatial)``."""
    axes = tuple(range(1, raw.ndim))
    p_low = np.percentile(raw, low, axis=axes, keepdims=True)
    p_high = np.percentile(raw, high, axis=axes, keepdims=True)
    return (output * (p_high - p_low + 1e-6) + p_low).astype(np.float32)


def output_scale(train: Sequence[Sample], percentiles: tuple[float, float]) -> tuple[list[float], list[float]]:
    """Gain and offset per channel that map a normalised output back to intensity units.

    The medians over the training images of each image's ``low`` and ``high`` percentiles
    (the values the normalisation sends to 0 and 1): ``gain = p_high - p_low``, ``offset = p_low``.
    The package applies them as ``scale_linear`` postprocessing, so every zoo tool answers in
    the input's units (for images exposed like the training images).
    """
    low, high = percentiles
    ranges = np.array([np.percentile(s.raw.reshape(s.raw.shape[0], -1), [low, high], axis=1) for s in train])
    p_low, p_high = np.median(ranges, axis=0)  # (channels,) each
    return [float(g) for g in p_high - p_low + 1e-6], [float(o) for o in p_low]


def restoration_qc(
    network: torch.nn.Module, *, train: Sequence[Sample], val: Sequence[Sample], multiple: int,
    percentiles: tuple[float, float], model_name: str,
) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]], list[np.ndarray]]:  # fmt: skip
    """Truths, predictions (model, tuned Gaussian, noisy input) and inputs on the validation images."""
    low, high = percentiles
    (gaussian,) = restoration_baselines(
        train_noisy=[s.raw[0] for s in train], train_clean=[s.require_truth()[0] for s in train]
    )

    def first(array: np.ndarray) -> np.ndarray:
        return array[0] if array.shape[0] == 1 else array

    model = [first(to_raw_units(predict_image(network, s.image, multiple=multiple), s.raw, low=low, high=high))
             for s in val]  # fmt: skip
    predictions = {
        model_name: model,
        gaussian.name: [first(np.stack([gaussian(channel) for channel in s.raw])) for s in val],
        "noisy input": [first(s.raw) for s in val],
    }
    return [first(s.require_truth()) for s in val], predictions, [first(s.raw) for s in val]


def psnr_normalised(output: np.ndarray, target: np.ndarray) -> float:
    """PSNR on the normalised scale (range 1) over a stack of patches."""
    mse = float(np.mean((output - target) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def setup(config: CareConfig, train: list[Sample], val: list[Sample]) -> LoopSetup:
    """Patch pairs (noisy, clean; each normalised by its own percentiles), MAE or MSE, validation loss."""
    data, settings = config.data, config.training
    low, high = data.normalization_percentiles

    def clean(group: Sequence[Sample]) -> list[np.ndarray]:
        return [normalize_percentiles(s.require_truth(), low=low, high=high) for s in group]

    sampler = PatchSampler([s.image for s in train], clean(train), patch_size=data.patch_size,
                           augmentation=data.augmentation, jitter_targets=True)  # fmt: skip
    val_sampler = PatchSampler([s.image for s in val], clean(val), patch_size=data.patch_size)
    val_x, val_y = val_sampler.sample(np.random.default_rng(settings.seed + 1), data.validation_patches)
    loss_fn = torch.nn.functional.l1_loss if config.loss == "mae" else torch.nn.functional.mse_loss

    def validate(net: torch.nn.Module) -> dict[str, float]:
        output = predict_batches(net, val_x, batch_size=settings.batch_size)
        loss = float(loss_fn(torch.from_numpy(output), torch.from_numpy(val_y)))
        return {"val_loss": loss, "val_psnr": psnr_normalised(output, val_y)}

    return LoopSetup(out_channels=train[0].image.shape[0], loss_fn=loss_fn, validate=validate, monitor="val_loss",
                     mode="min", sample_batch=lambda rng: sampler.sample(rng, settings.batch_size))  # fmt: skip


def check(
    config: CareConfig, network: torch.nn.Module, train: list[Sample], val: list[Sample], *, out_dir: Path,
    progress: ProgressCallback,
) -> TaskCheck:  # fmt: skip
    """The restored validation images in their own units, beside a tuned Gaussian and the input."""
    percentiles = config.data.normalization_percentiles
    truths, predictions, inputs = restoration_qc(network, train=train, val=val, multiple=2**config.network.depth,
                                                 percentiles=percentiles, model_name="CARE")  # fmt: skip
    return TaskCheck(postprocessing="none", notes={"loss": config.loss}, truths=truths, predictions=predictions,
                     inputs=inputs, output_scale=output_scale(train, percentiles))  # fmt: skip
