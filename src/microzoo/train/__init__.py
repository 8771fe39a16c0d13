"""Train a model on your images, check it against a classical baseline, export a zoo package.

Example::

    from microzoo.train import n2v_config, train

    config = n2v_config(images="noisy/", epochs=50)
    result = train(config, out_dir="n2v-model")

The configuration verbs (``*_config``, :func:`load_config`, :func:`save_config`) import no
torch; :func:`train` and :func:`export_package` load it when first used.
"""

from __future__ import annotations

from microzoo._lazy import lazy_exports
from microzoo.train.config import (
    care_config,
    instances_config,
    load_config,
    n2v_config,
    package_name,
    save_config,
    semantic_config,
    short_form_config,
)
from microzoo.train.tasks.registry import TASKS

__all__ = [
    "TASKS", "ExportSpec", "TrainingResult", "care_config", "export_package", "instances_config", "load_config",
    "n2v_config", "package_name", "predict_image", "save_config", "semantic_config", "short_form_config", "train",
]  # fmt: skip

#: the verbs that need torch, imported on first use
_LAZY = {"train": "run", "TrainingResult": "run", "export_package": "export", "ExportSpec": "export",
         "predict_image": "tasks.skeleton"}  # fmt: skip

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
