"""One entry point for every training task: :func:`train`.

Example::

    from microzoo.train import n2v_config, train

    config = n2v_config(images="noisy/", epochs=50)
    result = train(config, out_dir="n2v-model")
    result.package, result.report, result.curves_png  # the package, QC report, loss curves

The output folder then holds::

    config.yaml            the configuration, to train again or resume
    checkpoints/best.pt    best weights;  checkpoints/last.pt  everything to resume
    curves/loss.csv        loss and validation figures per epoch;  curves/loss.png  the same drawn
    qc/report.html         the model against the classical baseline on the validation images
    qc/metrics.json        the figures with 95% intervals;  qc/per_image.csv  per image
    package/               the BioImage Model Zoo package (bioimageio.yaml, weights, README)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from microzoo.errors import ConfigError
from microzoo.progress import ProgressCallback
from microzoo.train.config import load_config, save_config
from microzoo.train.tasks.skeleton import TrainingResult, run_task

__all__ = ["TrainingResult", "train"]


def train(
    config: Any,
    *,
    out_dir: str | os.PathLike[str],
    progress: ProgressCallback | None = None,
    resume: bool = False,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainingResult:
    """Train the model a task config describes, check it, and export it.

    With ``config.training.init_from`` (a package microzoo exported, or any package with the
    pytorch_state_dict weights of microzoo's U-Net) training starts from its weights, the
    network settings become the parent's, and the package records its parent
    (:mod:`microzoo.train.init_from`); ``TrainingResult.notices`` says what started fresh.

    Parameters
    ----------
    config : a task config (:func:`~microzoo.train.config.semantic_config`, ...) or the path of
        its YAML file.
    out_dir : the folder for the configuration, checkpoints, curves, QC report and package.
    progress : called as ``progress(done, total, description)``; while training the
        description reads ``"epoch 3/100 loss 0.1234 val_iou 0.8123"``.
    resume : continue an interrupted run in ``out_dir`` (with the same configuration).
    on_epoch : called with each epoch's row of the history (``epoch``, ``train_loss``, the
        validation figures such as ``val_loss``, ``learning_rate``, ``seconds``), in the training
        thread: a front end's live loss curve.
    should_stop : checked after every training step; when it returns True the epoch ends there
        and training stops as if its epochs were done: the best weights are checked and exported
        (``TrainingResult.stopped`` is "stopped by the user"). To abandon a run instead, raise
        :class:`~microzoo.errors.Cancelled` from ``progress``.

    Raises
    ------
    ConfigError : the configuration is invalid, or ``out_dir`` holds another run.
    DataError : the images cannot be used (missing partners, mismatched sizes, ...).
    """
    if isinstance(config, (str, os.PathLike)):
        config = load_config(config)
    parent, notices = None, list[str]()
    if config.training.init_from:
        from microzoo.train.init_from import adopt_parent_network, open_parent

        parent = open_parent(config.training.init_from)
        config, notices = adopt_parent_network(config, parent)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / "config.yaml"
    if resume and config_path.exists():
        saved = load_config(config_path)
        if _comparable(saved) != _comparable(config):
            raise ConfigError(
                f"{config_path} holds a different configuration from the one given; resume with the "
                "same configuration (e.g. microzoo train "
                f"{config_path} --resume) or train into a new folder"
            )
    if not (resume and config_path.exists()):
        if (out_dir / "checkpoints" / "last.pt").exists():
            raise ConfigError(
                f"{out_dir} already holds a training run; resume it (--resume) or choose another output folder"
            )
        save_config(config, config_path)
    return run_task(config, out_dir=out_dir, config_path=config_path, resume=resume, progress=progress,
                    parent=parent, notices=notices, on_epoch=on_epoch, should_stop=should_stop)  # fmt: skip


def _comparable(config: Any) -> dict[str, Any]:
    """The config as plain data, except settings that may change on resume (time budget, device)."""
    data = config.model_dump(mode="json")
    for key in ("max_minutes", "device", "threads", "export"):
        data["training"].pop(key, None)
    for key in ("images", "labels", "targets"):
        value = data["data"].get(key)
        data["data"][key] = str(Path(value).resolve()) if value else None
    return data
