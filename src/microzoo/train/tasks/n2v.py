"""Self-supervised denoising: Noise2Void, with the N2V2 variant by default.

Only noisy images are needed. In every training patch a few pixels (0.2% by default) are hidden
(:func:`microzoo.train.tasks.n2v_masking.blind_spot_mask`: the median of the neighbourhood for
N2V2, a random neighbour for N2V) and the network learns to predict their noisy values from
the surroundings (:func:`~microzoo.train.tasks.n2v_masking.n2v_loss`). N2V2 also changes the
network: blur pooling and no skip connection at full resolution.

Quality control needs clean images of the same fields (``data.targets``), used for nothing
else; without them the run still exports the package but writes no QC report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from microzoo.progress import ProgressCallback
from microzoo.train.config import N2VConfig
from microzoo.train.data import PatchSampler, Sample
from microzoo.train.loop import predict_batches
from microzoo.train.tasks.care import output_scale, restoration_qc
from microzoo.train.tasks.n2v_masking import blind_spot_mask, n2v_loss
from microzoo.train.tasks.skeleton import LoopSetup, TaskCheck

__all__ = ["check", "masked_batch", "setup"]


def masked_batch(patches: np.ndarray, *, config: N2VConfig, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``(masked inputs, original patches, masks as float32)`` for a stack of patches."""
    masked, masks = zip(*(
        blind_spot_mask(p, fraction=config.masked_fraction, rng=rng, variant=config.variant, radius=config.mask_radius)
        for p in patches
    ), strict=True)  # fmt: skip
    return np.stack(masked), patches.astype(np.float32), np.stack(masks).astype(np.float32)


def setup(config: N2VConfig, train: list[Sample], val: list[Sample]) -> LoopSetup:
    """Blind-spot masked patches, the masked MSE, validation loss on fixed masked patches."""
    data, settings = config.data, config.training
    sampler = PatchSampler([s.image for s in train], None, patch_size=data.patch_size, augmentation=data.augmentation)
    val_rng = np.random.default_rng(settings.seed + 1)
    val_patches = PatchSampler([s.image for s in val], None, patch_size=data.patch_size).sample_inputs(
        val_rng, data.validation_patches
    )
    val_x, val_y, val_mask = masked_batch(val_patches, config=config, rng=val_rng)

    def sample_batch(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        patches = sampler.sample_inputs(rng, settings.batch_size)
        return masked_batch(patches, config=config, rng=rng)

    def validate(net: torch.nn.Module) -> dict[str, float]:
        output = predict_batches(net, val_x, batch_size=settings.batch_size)
        tensors = (torch.from_numpy(a) for a in (output, val_y, val_mask))
        return {"val_loss": float(n2v_loss(*tensors))}

    pixels = np.concatenate([s.image.reshape(s.image.shape[0], -1) for s in train], axis=1)
    # the targets (the noisy patches) spread about 0.1-0.2 in percentile units: the output starts
    # on their scale, else the first few hundred steps go to shrinking the last layer
    statistics = (pixels.mean(axis=1).tolist(), np.maximum(pixels.std(axis=1), 1e-6).tolist())
    return LoopSetup(out_channels=train[0].image.shape[0], sample_batch=sample_batch, loss_fn=n2v_loss,
                     validate=validate, monitor="val_loss", mode="min", output_statistics=statistics)  # fmt: skip


def check(
    config: N2VConfig, network: torch.nn.Module, train: list[Sample], val: list[Sample], *, out_dir: Path,
    progress: ProgressCallback,
) -> TaskCheck:  # fmt: skip
    """With clean images (``data.targets``): the denoised validation images against the clean ones."""
    notes = {"loss": f"{config.variant.upper()} masked MSE ({config.masked_fraction:.2%} of pixels)"}
    percentiles = config.data.normalization_percentiles
    scale = output_scale(train, percentiles)
    if config.data.targets is None:
        return TaskCheck(postprocessing="none", notes=notes, output_scale=scale)
    truths, predictions, inputs = restoration_qc(
        network, train=train, val=val, multiple=2**config.network.depth, percentiles=percentiles,
        model_name=config.variant.upper(),
    )  # fmt: skip
    return TaskCheck(postprocessing="none", notes=notes, truths=truths, predictions=predictions, inputs=inputs,
                     output_scale=scale)  # fmt: skip
