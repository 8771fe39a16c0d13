"""Shared pieces of the issue-11 DSB2018 benchmarks (fine-tuning and the learning curve).

Every run trains the instance U-Net for a fixed number of STEPS (not minutes: fair on a loaded
machine), patch 96, batch 8, depth 3 with 16 base features, AdamW lr 1e-3 with a cosine schedule
over the steps, no early stopping; a fixed set of train images that no run trains on validates
(epoch choice and decoding thresholds). Each trained network is then scored on the 100 images of
the DSB2018 test split: F1 at IoU 0.5 pooled over the images (the scorer `microzoo evaluate` uses).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _training_common import DATA, OUT, StepLogger, log, predict  # noqa: E402
from train_dsb2018 import grey  # noqa: E402

ROOT = DATA / "dsb2018"
PATCH, BATCH, FEATURES, DEPTH, LR = 96, 8, 16, 3, 1e-3


def train_names() -> list[str]:
    """The DSB2018 train split's image names in a seeded random order (seed 0)."""
    from microzoo.io.files import image_stem, list_images

    names = sorted(image_stem(p) for p in list_images(ROOT / "train" / "images"))
    return [names[i] for i in np.random.default_rng(0).permutation(len(names))]


def budget_config(name: str, *, training: list[str], validation: list[str], steps: int, steps_per_epoch: int,
                  init_from: str | None = None, seed: int = 0) -> Any:  # fmt: skip
    """The instances config of one benchmark run: ``steps`` steps on the named train images."""
    from microzoo.train.config import instances_config

    config = instances_config(
        images=ROOT / "train" / "images", labels=ROOT / "train" / "labels", patch_size=PATCH, batch_size=BATCH,
        steps_per_epoch=steps_per_epoch, epochs=max(1, steps // steps_per_epoch), seed=seed, name=name,
    )  # fmt: skip
    config.network.base_features, config.network.depth = FEATURES, DEPTH
    config.training.learning_rate, config.training.scheduler = LR, "cosine"
    config.training.early_stopping_patience = None
    config.data.training_images, config.data.validation_images = list(training), list(validation)
    config.data.colour = "grey"  # the recorded recipe: every modality made grey (test_vectors feeds grey)
    config.training.init_from = init_from
    return config


def train_budget(config: Any, out_dir: Path, *, export: bool = False) -> dict[str, Any]:
    """Train ``config`` into ``out_dir`` (reused when it finished before); a summary with the wall time."""
    from microzoo.train.run import train

    summary_path = out_dir / "summary.json"
    if summary_path.exists():
        log(f"{out_dir.name}: already trained, reused")
        return json.loads(summary_path.read_text())
    if out_dir.exists():
        import shutil

        shutil.rmtree(out_dir)
    config.training.export = export
    start = time.monotonic()
    log(f"training {out_dir.name}: {config.training.epochs * config.training.steps_per_epoch} steps on "
        f"{len(config.data.training_images)} images")  # fmt: skip
    result = train(config, out_dir=out_dir, progress=StepLogger())
    summary = {"wall_s": time.monotonic() - start, "train_s": result.history[-1]["seconds"],
               "steps": len(result.history) * config.training.steps_per_epoch, "best_epoch": result.best_epoch,
               "images": len(config.data.training_images), "package": str(result.package) if result.package else None,
               "notices": list(getattr(result, "notices", ()))}  # fmt: skip
    summary_path.write_text(json.dumps(summary, indent=1))
    log(f"{out_dir.name}: {summary}")
    return summary


def test_vectors(config: Any, out_dir: Path) -> tuple[np.ndarray, Any]:
    """Per test image, the additive instance counts (the `evaluate` scorer's) of the run's best
    network, decoded with its chosen settings; and the scorer (``scorer.aggregate``)."""
    import tifffile

    from microzoo.io.files import list_images
    from microzoo.io.read import read_array
    from microzoo.qc.tasks import get_task
    from microzoo.runtime.instances import InstanceSettings, instances_from_output
    from microzoo.train.tasks.skeleton import build_network, load_best

    cache = out_dir / "test_vectors.npy"
    files = list_images(ROOT / "test" / "images")
    truths = [tifffile.imread(ROOT / "test" / "labels" / f"{f.stem}.tif") for f in files]
    if cache.exists():
        preds = None
    else:
        network = load_best(build_network(config, in_channels=1, out_channels=3), out_dir / "checkpoints" / "best.pt")
        chosen = InstanceSettings(**yaml.safe_load((out_dir / "instance_settings.yaml").read_text())["settings"])
        preds = []
        for f in files:
            output = 1.0 / (1.0 + np.exp(-np.clip(predict(network, grey(read_array(f)), depth=DEPTH), -60, 60)))
            preds.append(instances_from_output(output, settings=chosen))
    scorer, _ = get_task("instances").scorer(truths, {"model": preds or truths}, data_range=None,
                                              thresholds=(0.5,), tolerance=None)  # fmt: skip
    if preds is not None:
        np.save(cache, np.stack([scorer.vectorize(t, p) for t, p in zip(truths, preds, strict=True)]))
    return np.load(cache), scorer


def f1(vectors: np.ndarray, scorer: Any) -> float:
    return float(scorer.aggregate(vectors.sum(axis=0))["f1@0.5"])


__all__ = ["OUT", "budget_config", "f1", "log", "test_vectors", "train_budget", "train_names"]
