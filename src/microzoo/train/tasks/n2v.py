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

from microzoo.progress import ProgressCallback, no_progress
from microzoo.train.config import N2VConfig
from microzoo.train.data import PatchSampler, load_samples, split_samples
from microzoo.train.loop import fit, predict_batches
from microzoo.train.tasks import TrainingResult, build_network, finish, load_best
from microzoo.train.tasks.care import restoration_qc
from microzoo.train.tasks.n2v_masking import blind_spot_mask, n2v_loss

__all__ = ["train_n2v"]


def masked_batch(patches: np.ndarray, *, config: N2VConfig, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``(masked inputs, original patches, masks as float32)`` for a stack of patches."""
    masked, masks = zip(*(
        blind_spot_mask(p, fraction=config.masked_fraction, rng=rng, variant=config.variant, radius=config.mask_radius)
        for p in patches
    ))  # fmt: skip
    return np.stack(masked), patches.astype(np.float32), np.stack(masks).astype(np.float32)


def train_n2v(
    config: N2VConfig, *, out_dir: Path, config_path: Path, resume: bool = False,
    progress: ProgressCallback | None = None,
) -> TrainingResult:  # fmt: skip
    """Train, check and export a Noise2Void U-Net (see :func:`microzoo.train.run.train`)."""
    progress = progress or no_progress
    data, settings = config.data, config.training
    samples = load_samples(data, truth="targets" if data.targets is not None else None, progress=progress)
    train, val = split_samples(samples, fraction=data.validation_fraction, seed=settings.seed)
    sampler = PatchSampler([s.image for s in train], None, patch_size=data.patch_size, augmentation=data.augmentation)
    val_rng = np.random.default_rng(settings.seed + 1)
    val_patches, _ = PatchSampler([s.image for s in val], None, patch_size=data.patch_size).sample(
        val_rng, data.validation_patches
    )
    val_x, val_y, val_mask = masked_batch(val_patches, config=config, rng=val_rng)
    channels = train[0].image.shape[0]
    network = build_network(config, in_channels=channels, out_channels=channels)

    def sample_batch(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        patches, _ = sampler.sample(rng, settings.batch_size)
        return masked_batch(patches, config=config, rng=rng)

    def validate(net: torch.nn.Module) -> dict[str, float]:
        output = predict_batches(net, val_x, batch_size=settings.batch_size)
        tensors = (torch.from_numpy(a) for a in (output, val_y, val_mask))
        return {"val_loss": float(n2v_loss(*tensors))}

    loop = fit(network, sample_batch=sample_batch, loss_fn=n2v_loss, validate=validate, monitor="val_loss",
               mode="min", settings=settings, out_dir=out_dir, resume=resume, progress=progress)  # fmt: skip
    network = load_best(network, loop.best_checkpoint)
    truths, predictions, inputs, qc_task = [], None, None, None
    if data.targets is not None:
        qc_task = "restoration"
        truths, predictions, inputs = restoration_qc(
            network, train=train, val=val, multiple=2**config.network.depth,
            percentiles=tuple(data.normalization_percentiles), model_name=config.variant.upper(),
        )  # fmt: skip
    return finish(
        config, out_dir=out_dir, network=network, loop_result=loop, config_path=config_path,
        train_raws=[s.raw for s in train], test_input=val[0].raw, out_channels=channels, postprocessing="none",
        qc_task=qc_task, truths=truths, predictions=predictions, inputs=inputs, names=[s.name for s in val],
        extra_training={"loss": f"{config.variant.upper()} masked MSE ({config.masked_fraction:.2%} of pixels)"},
        progress=progress,
    )  # fmt: skip
