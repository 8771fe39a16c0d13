"""Instance segmentation of nuclei and cells.

The U-Net learns three maps from the label images (foreground, boundary, distance to the
object's edge; :mod:`microzoo.train.tasks.instance_targets`). After training, the thresholds
that turn the maps into labels are chosen on the validation images (best F1 at IoU 0.5), stored
in ``OUT/instance_settings.yaml`` and in the package, so no hand tuning is needed.

The classical baseline is Otsu + distance-transform seeded watershed
(:func:`microzoo.qc.baselines.instances_baseline`, the one `compare --classical` runs; in 3-D, Otsu
and connected components).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from microzoo.io.atomic import atomic_output
from microzoo.progress import ProgressCallback, no_progress
from microzoo.qc.baselines import instances_baseline
from microzoo.qc.metrics import instance_metrics_dataset, match_instances
from microzoo.train.config import InstancesConfig
from microzoo.train.data import PatchSampler, load_samples, split_samples
from microzoo.train.loop import fit, predict_batches
from microzoo.train.tasks import TrainingResult, build_network, finish, load_best, predict_image
from microzoo.train.tasks.instance_targets import (
    N_TARGET_CHANNELS,
    InstanceSettings,
    instance_loss,
    instances_from_output,
    optimize_instance_settings,
    targets_from_labels,
)

__all__ = ["train_instances"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def _f1(truths: list[np.ndarray], preds: list[np.ndarray]) -> float:
    pooled = instance_metrics_dataset([match_instances(t, p, thresholds=(0.5,)) for t, p in zip(truths, preds)])
    value = pooled.at(0.5)["f1"]
    return 0.0 if np.isnan(value) else float(value)


def train_instances(
    config: InstancesConfig, *, out_dir: Path, config_path: Path, resume: bool = False,
    progress: ProgressCallback | None = None,
) -> TrainingResult:  # fmt: skip
    """Train, check and export an instance segmentation U-Net (see :func:`microzoo.train.run.train`)."""
    progress = progress or no_progress
    data, settings = config.data, config.training
    samples = load_samples(data, truth="labels", progress=progress)
    train, val = split_samples(samples, fraction=data.validation_fraction, seed=settings.seed)
    sampler = PatchSampler(
        [s.image for s in train], [targets_from_labels(s.truth) for s in train], patch_size=data.patch_size,
        augmentation=data.augmentation, foreground=[s.truth > 0 for s in train],
        min_foreground=data.min_foreground_fraction,
    )  # fmt: skip
    # validation patches carry their label crop as a last channel, to score instances on them
    val_sampler = PatchSampler(
        [s.image for s in val], [np.concatenate([targets_from_labels(s.truth), s.truth[None]]) for s in val],
        patch_size=data.patch_size, foreground=[s.truth > 0 for s in val], min_foreground=data.min_foreground_fraction,
    )  # fmt: skip
    val_x, val_both = val_sampler.sample(np.random.default_rng(settings.seed + 1), data.validation_patches)
    val_y, val_labels = val_both[:, :N_TARGET_CHANNELS], list(val_both[:, N_TARGET_CHANNELS].astype(np.int32))
    network = build_network(config, in_channels=train[0].image.shape[0], out_channels=N_TARGET_CHANNELS)

    def validate(net: torch.nn.Module) -> dict[str, float]:
        output = predict_batches(net, val_x, batch_size=settings.batch_size)
        loss = float(instance_loss(torch.from_numpy(output), torch.from_numpy(val_y)))
        preds = [instances_from_output(_sigmoid(o), settings=InstanceSettings()) for o in output]
        return {"val_loss": loss, "val_f1": _f1(val_labels, preds)}

    loop = fit(network, sample_batch=lambda rng: sampler.sample(rng, settings.batch_size), loss_fn=instance_loss,
               validate=validate, monitor="val_loss", mode="min", settings=settings, out_dir=out_dir,
               resume=resume, progress=progress)  # fmt: skip
    network = load_best(network, loop.best_checkpoint)
    multiple = 2**config.network.depth
    progress(0, len(val), "choosing the instance thresholds on the validation images")
    outputs = [_sigmoid(predict_image(network, s.image, multiple=multiple)) for s in val]
    truths = [s.truth for s in val]
    chosen, table = optimize_instance_settings(outputs, truths)
    with atomic_output(out_dir / "instance_settings.yaml") as tmp:
        tmp.write_text(yaml.safe_dump({"settings": chosen.model_dump(), "search": table}, sort_keys=False))
    watershed = instances_baseline()
    predictions = {
        "U-Net": [instances_from_output(o, settings=chosen) for o in outputs],
        watershed.name: [watershed(s.raw[0]) for s in val],
    }
    return finish(
        config, out_dir=out_dir, network=network, loop_result=loop, config_path=config_path,
        train_raws=[s.raw for s in train], test_input=val[0].raw, out_channels=N_TARGET_CHANNELS,
        postprocessing="sigmoid", qc_task="instances", truths=truths, predictions=predictions,
        inputs=[s.raw[0] for s in val], names=[s.name for s in val],
        extra_training={"loss": "binary cross-entropy on foreground, boundary and distance maps"},
        instance_settings=chosen.model_dump(), progress=progress,
    )  # fmt: skip
