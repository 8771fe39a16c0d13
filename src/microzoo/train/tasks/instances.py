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
from microzoo.progress import ProgressCallback
from microzoo.qc.baselines import instances_baseline
from microzoo.qc.metrics import instance_metrics_dataset, match_instances
from microzoo.runtime.instances import FOREGROUND, N_TARGET_CHANNELS, InstanceSettings, instances_from_output
from microzoo.train.config import InstancesConfig
from microzoo.train.data import PatchSampler, Sample
from microzoo.train.loop import predict_batches
from microzoo.train.tasks.instance_targets import instance_loss, optimize_instance_settings, targets_from_labels
from microzoo.train.tasks.skeleton import LoopSetup, TaskCheck, predict_image

__all__ = ["check", "setup"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def _f1(truths: list[np.ndarray], preds: list[np.ndarray]) -> float:
    matches = [match_instances(t, p, thresholds=(0.5,)) for t, p in zip(truths, preds, strict=True)]
    pooled = instance_metrics_dataset(matches)
    value = pooled.at(0.5)["f1"]
    return 0.0 if np.isnan(value) else float(value)


def setup(config: InstancesConfig, train: list[Sample], val: list[Sample]) -> LoopSetup:
    """Patches of the three target maps, their loss, validation F1 at IoU 0.5 with default settings."""
    data, settings = config.data, config.training
    train_labels, val_labels = [s.require_truth() for s in train], [s.require_truth() for s in val]
    sampler = PatchSampler(
        [s.image for s in train], [targets_from_labels(t) for t in train_labels], patch_size=data.patch_size,
        augmentation=data.augmentation, foreground=[t > 0 for t in train_labels],
        min_foreground=data.min_foreground_fraction,
    )  # fmt: skip
    # validation patches carry their label crop as a last channel, to score instances on them
    val_sampler = PatchSampler(
        [s.image for s in val], [np.concatenate([targets_from_labels(t), t[None]]) for t in val_labels],
        patch_size=data.patch_size, foreground=[t > 0 for t in val_labels], min_foreground=data.min_foreground_fraction,
    )  # fmt: skip
    val_x, val_both = val_sampler.sample(np.random.default_rng(settings.seed + 1), data.validation_patches)
    val_y, val_patch_labels = val_both[:, :N_TARGET_CHANNELS], list(val_both[:, N_TARGET_CHANNELS].astype(np.int32))

    def validate(net: torch.nn.Module) -> dict[str, float]:
        output = predict_batches(net, val_x, batch_size=settings.batch_size)
        loss = float(instance_loss(torch.from_numpy(output), torch.from_numpy(val_y)))
        preds = [instances_from_output(_sigmoid(o), settings=InstanceSettings()) for o in output]
        return {"val_loss": loss, "val_f1": _f1(val_patch_labels, preds)}

    return LoopSetup(out_channels=N_TARGET_CHANNELS, sample_batch=lambda rng: sampler.sample(rng, settings.batch_size),
                     loss_fn=instance_loss, validate=validate, monitor="val_loss", mode="min")  # fmt: skip


def check(
    config: InstancesConfig, network: torch.nn.Module, train: list[Sample], val: list[Sample], *, out_dir: Path,
    progress: ProgressCallback,
) -> TaskCheck:  # fmt: skip
    """Choose the instance thresholds on the validation images (saved in ``OUT/instance_settings.yaml``),
    then the U-Net's instances beside the watershed baseline's."""
    multiple = 2**config.network.depth
    progress(0, len(val), "choosing the instance thresholds on the validation images")
    outputs = [_sigmoid(predict_image(network, s.image, multiple=multiple)) for s in val]
    truths = [s.require_truth() for s in val]
    chosen, table = optimize_instance_settings(outputs, truths)
    with atomic_output(Path(out_dir) / "instance_settings.yaml") as tmp:
        tmp.write_text(yaml.safe_dump({"settings": chosen.model_dump(), "search": table}, sort_keys=False))
    watershed = instances_baseline()
    predictions = {
        "U-Net": [instances_from_output(o, settings=chosen) for o in outputs],
        watershed.name: [watershed(s.grey) for s in val],
    }
    return TaskCheck(
        postprocessing="sigmoid", notes={"loss": "binary cross-entropy on foreground, boundary and distance maps"},
        truths=truths, predictions=predictions, inputs=[s.grey for s in val],
        instance_settings=chosen.model_dump(), probabilities={"U-Net": [o[FOREGROUND] for o in outputs]},
    )  # fmt: skip
