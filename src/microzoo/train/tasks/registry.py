"""The training tasks: one entry each, read by the CLI, the configuration, training and export.

A task has one name everywhere: ``microzoo train NAME``, ``task: NAME`` in a configuration,
``config.microzoo.task`` in the exported package, and the docs. :data:`TASKS` maps each name
to a :class:`TrainingTask`: its configuration class, the module that trains it (see
:mod:`microzoo.train.tasks`), the QC task that scores it, and what its exported package says
about it. Names the task had before are kept in ``former_names`` only to refuse them with the
new name.

This module imports no torch: the CLI and the configuration read it cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from microzoo.errors import ConfigError
from microzoo.train.config import (
    CareConfig,
    InstancesConfig,
    N2VConfig,
    SemanticConfig,
    care_config,
    instances_config,
    n2v_config,
    semantic_config,
)

__all__ = ["TASKS", "TrainingTask", "get_task"]

_HALLUCINATION = (
    "**Do not use the restored images for intensity quantification.** The network predicts what "
    "the image most plausibly looks like from what it learnt: it can invent structures that are "
    "not in the sample (hallucination) or remove faint real ones, most of all on images unlike its "
    "training data. Use the output for looking at the data and for segmentation that is itself "
    "validated; measure intensities on the raw images. Output values are in the input's intensity "
    "units: the package maps the network's normalised output back with the training images' percentiles."
)


@dataclass(frozen=True)
class TrainingTask:
    """One training task.

    Attributes
    ----------
    name : the task's one name (CLI, ``task:`` of a configuration, export, docs).
    config_class, factory : its pydantic configuration class and the function that gives its
        defaults (:mod:`microzoo.train.config`; the short form ``microzoo train NAME`` calls it).
    module : the module that trains it; it defines ``setup`` and ``check`` (see
        :func:`microzoo.train.tasks.run_task`).
    summary : one line: what it learns from what.
    qc_task : the :mod:`microzoo.qc` task that scores its predictions.
    bioimageio_task, tags, channel_prefix : what the exported description says (the task in
        ``config.bioimageio``, tags, names of the output channels ``prefix0``, ``prefix1``, ...).
    does, limits : the README's "what the model does" and "intended use and limits".
    former_names : names of earlier versions, refused with a message naming ``name``.
    """

    name: str
    config_class: type[BaseModel]
    factory: Callable[..., Any]
    module: str
    summary: str
    qc_task: str
    bioimageio_task: str
    tags: tuple[str, ...]
    channel_prefix: str
    does: str
    limits: str
    former_names: tuple[str, ...] = ()


TASKS: dict[str, TrainingTask] = {task.name: task for task in (
    TrainingTask(
        name="semantic", config_class=SemanticConfig, factory=semantic_config,
        module="microzoo.train.tasks.semantic",
        summary="semantic segmentation: a class for every pixel, from label images",
        qc_task="semantic", bioimageio_task="semantic segmentation",
        tags=("segmentation", "semantic-segmentation"), channel_prefix="class",
        does="Semantic segmentation: for every pixel, a score for each class (one output channel per "
        "class). Threshold the single channel, or take the arg-max over the channels, to get a mask.",
        limits="Intended for images like the training data (same modality, magnification, staining and "
        "noise). It does not separate touching objects of one class: to count or measure single "
        "objects, use an instance segmentation model. Check it on a few annotated images of your own "
        "before relying on it (see Validation).",
        former_names=("unet", "segmentation"),
    ),
    TrainingTask(
        name="instances", config_class=InstancesConfig, factory=instances_config,
        module="microzoo.train.tasks.instances",
        summary="instance segmentation of nuclei or cells, from label images",
        qc_task="instances", bioimageio_task="instance segmentation",
        tags=("segmentation", "instance-segmentation"), channel_prefix="map",
        does="Instance segmentation: the network predicts maps (for example foreground and boundaries or "
        "distances) from which single objects are separated. The outputs are not labels yet: see "
        "'Turning the outputs into labels'.",
        limits="Intended for images like the training data. Objects much larger or smaller than those seen "
        "in training, or packed more densely, are split or merged wrongly; counts and sizes should be "
        "checked on a few annotated images of your own (see Validation).",
    ),
    TrainingTask(
        name="care", config_class=CareConfig, factory=care_config,
        module="microzoo.train.tasks.care",
        summary="supervised restoration (CARE), from pairs of noisy and clean images",
        qc_task="restoration", bioimageio_task="image restoration",
        tags=("restoration", "denoising", "care"), channel_prefix="restored",
        does="Content-aware image restoration (CARE): trained on pairs of low- and high-quality images of "
        "the same fields, it predicts a restored (denoised, sharper) version of the input.",
        limits=_HALLUCINATION,
    ),
    TrainingTask(
        name="n2v", config_class=N2VConfig, factory=n2v_config,
        module="microzoo.train.tasks.n2v",
        summary="self-supervised denoising (Noise2Void, N2V2), from noisy images alone",
        qc_task="restoration", bioimageio_task="denoising",
        tags=("denoising", "restoration", "noise2void", "self-supervised"), channel_prefix="denoised",
        does="Noise2Void denoising: trained self-supervised on the noisy images themselves, it predicts "
        "each pixel from its neighbours and so removes noise that is independent from pixel to pixel.",
        limits=_HALLUCINATION + " Noise correlated between neighbouring pixels (structured noise from some "
        "cameras or from scanning) is not removed and can be turned into patterns.",
    ),
)}  # fmt: skip


def get_task(name: object, *, source: str = "the configuration") -> TrainingTask:
    """The task called ``name``; a :class:`ConfigError` names the choices, or the new name of an old one."""
    if isinstance(name, str) and name in TASKS:
        return TASKS[name]
    for task in TASKS.values():
        if name in task.former_names:
            raise ConfigError(
                f"{source}: the task {name!r} is now called {task.name!r}; write `task: {task.name}` in a "
                f"configuration file, or `microzoo train {task.name}`"
            )
    raise ConfigError(f"{source}: unknown task {name!r}; choose one of {', '.join(TASKS)}")
