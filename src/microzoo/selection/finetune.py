"""``select --finetune``: fine-tune the best trainable candidate on part of the user's annotated images.

The annotated images are split once (seeded): a part to fine-tune on and a part every method is
ranked on, so the fine-tuned model is never scored on an image it was trained on. The parent is
the best-ranked model that can be trained from (:func:`microzoo.train.init_from.open_parent`:
``pytorch_state_dict`` weights of microzoo's U-Net); it is trained with ``train TASK --from``
(``training.init_from``) for a fixed number of steps and exported as a package.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from microzoo.errors import ConfigError, DataError
from microzoo.progress import ProgressCallback

#: QC task -> the training task that learns it
TRAIN_TASK = {"instances": "instances", "semantic": "semantic", "restoration": "care"}


@dataclass(frozen=True)
class Split:
    """The folders of the two parts: ``tune`` (images, truth) and ``rank`` (images, truth)."""

    tune: tuple[Path, Path]
    rank: tuple[Path, Path]
    tune_names: tuple[str, ...]
    rank_names: tuple[str, ...]


def split_annotated(images_dir: Path, truth_dir: Path, out_dir: Path, *, fraction: float = 0.5, seed: int = 0) -> Split:
    """Link (or copy) the paired images and truths into ``out_dir/{tune,rank}/{images,truth}``.

    ``fraction`` of the images (at least 2) fine-tune; the rest (at least 2) rank.
    """
    from microzoo.io.files import list_images, pair_by_stem

    names, paired = pair_by_stem(
        {"images": list_images(images_dir, role="images"), "truth": list_images(truth_dir, role="truth")},
        extra_ok=True,
    )
    n = len(names)
    n_tune = min(max(2, round(fraction * n)), n - 2)
    if n < 4 or n_tune < 2:
        raise DataError(f"--finetune needs 4 annotated images or more (2 to fine-tune on, 2 to rank on); found {n}")
    order = np.random.default_rng(seed).permutation(n)
    chosen = {"tune": sorted(int(i) for i in order[:n_tune]), "rank": sorted(int(i) for i in order[n_tune:])}
    folders = {}
    for part, indices in chosen.items():
        for role in ("images", "truth"):
            folder = out_dir / part / role
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            for i in indices:
                _link(paired[role][i], folder / paired[role][i].name)
        folders[part] = (out_dir / part / "images", out_dir / part / "truth")
    tune_names, rank_names = (tuple(names[i] for i in chosen[part]) for part in ("tune", "rank"))
    return Split(folders["tune"], folders["rank"], tune_names, rank_names)


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or no hard links: a copy
        shutil.copy2(source, target)


def trainable(sources: Sequence[str]) -> tuple[str | None, list[str]]:
    """The first of ``sources`` that training can start from, and why each one before it cannot."""
    from microzoo.train.init_from import untrainable_reason

    refused: list[str] = []
    for source in sources:
        reason = untrainable_reason(source)
        if reason is None:
            return source, refused
        refused.append(f"{source}: {reason}")
    return None, refused


def finetune(
    parent: str,
    *,
    task: str,
    images: Path,
    truth: Path,
    out_dir: Path,
    steps: int,
    name: str,
    truth_foreground: int | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """Train ``parent`` further on ``images``/``truth`` for ``steps`` steps
    (:func:`microzoo.train.init_from.fine_tune`); the exported package's path."""
    from microzoo.train.init_from import fine_tune

    if task not in TRAIN_TASK:
        raise ConfigError(f"--finetune has no training task for {task!r}; it fine-tunes {', '.join(TRAIN_TASK)}")
    train_task = TRAIN_TASK[task]
    given: dict[str, object] = {"targets": truth} if train_task == "care" else {"labels": truth}
    if train_task == "semantic" and truth_foreground == 0:
        given["foreground"] = "zero"
    per_epoch = min(steps, 50)
    result = fine_tune(
        parent, images=images, out_dir=out_dir, task=train_task, progress=progress, name=name,
        steps_per_epoch=per_epoch, epochs=max(1, -(-steps // per_epoch)), **given,
    )  # fmt: skip
    if result.package is None:
        raise DataError(f"fine-tuning {parent} exported no package; see {out_dir}")
    return Path(result.package)
