"""Training configuration: one pydantic tree, saved beside the model as YAML.

A task config (:class:`SemanticConfig`, :class:`InstancesConfig`, :class:`CareConfig`,
:class:`N2VConfig`) holds what to learn from (:class:`DataConfig`), the network
(:class:`NetworkConfig`) and how to optimise (:class:`TrainingConfig`). The factories
:func:`semantic_config`, :func:`instances_config`, :func:`care_config` and :func:`n2v_config`
give the defaults that work on typical microscopy without tuning::

    config = n2v_config(images="data/noisy")
    save_config(config, "n2v.yaml")
    config = load_config("n2v.yaml")

This module imports no torch and no network code: a config can be read, checked and
written anywhere.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from microzoo.errors import ConfigError

__all__ = [
    "AugmentationConfig", "CareConfig", "DataConfig", "InstancesConfig", "N2VConfig", "NetworkConfig",
    "SemanticConfig", "TaskConfig", "TrainingConfig", "care_config", "default_patch_size",
    "instances_config", "load_config", "n2v_config", "save_config", "semantic_config", "short_form_config",
]  # fmt: skip


class _Strict(BaseModel):
    """Unknown keys are errors (a typo in a YAML file must not be ignored silently)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentationConfig(_Strict):
    """Random changes to each training patch; they never change what is in it."""

    flips: bool = Field(default=True, description="mirror along y and x")
    rotations: bool = Field(default=True, description="90-degree rotations in the yx plane")
    intensity_jitter: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="random gain and offset, up to this fraction of the normalised range",
    )


class DataConfig(_Strict):
    """Where the images are and how patches are cut from them."""

    images: Path = Field(description="folder of input images (TIFF, PNG, Zarr)")
    labels: Path | None = Field(default=None, description="segmentation: label images named like the inputs")
    targets: Path | None = Field(
        default=None, description="CARE: clean images named like the inputs; N2V: clean images for QC only"
    )
    axes: str | None = Field(default=None, description="axes of the files when they do not say, e.g. 'zyx'")
    spatial_dims: Literal[2, 3] = 2
    patch_size: tuple[int, ...] = Field(default=(128, 128), description="(y, x) or (z, y, x)")
    validation_fraction: float = Field(default=0.15, gt=0.0, lt=1.0)
    normalization_percentiles: tuple[float, float] = Field(
        default=(1.0, 99.8), description="each image's low and high percentiles map to 0 and 1"
    )
    min_foreground_fraction: float = Field(
        default=0.01, ge=0.0, le=1.0, description="segmentation: patches with less foreground are redrawn"
    )
    validation_patches: int = Field(default=32, ge=1, description="fixed patches the loop validates on")
    validation_images: list[str] | None = Field(
        default=None,
        description="names (without suffix) of the images that validate; null: a seeded validation_fraction",
    )
    training_images: list[str] | None = Field(
        default=None, description="names (without suffix) of the images that train; null: all that do not validate"
    )
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig)
    colour: Literal["auto", "grey", "rgb"] = Field(
        default="auto",
        description="RGB(A) images: 'rgb' trains on 3 colour channels (alpha dropped, grey images repeated), "
        "'grey' converts them to grey, 'auto' keeps colour when some images are colour (their channels differ)",
    )

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if len(self.patch_size) != self.spatial_dims:
            raise ValueError(
                f"patch_size {tuple(self.patch_size)} has {len(self.patch_size)} sizes for "
                f"{self.spatial_dims}-D data; give one size per spatial axis"
            )
        if min(self.patch_size) < 8:
            raise ValueError(f"patch_size {tuple(self.patch_size)}: every size must be at least 8")
        low, high = self.normalization_percentiles
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"normalization_percentiles ({low}, {high}): need 0 <= low < high <= 100")
        return self


class NetworkConfig(_Strict):
    """The U-Net (see :class:`microzoo.train.models.UNet`)."""

    depth: int = Field(default=3, ge=1, le=5, description="number of poolings")
    base_features: int = Field(default=32, ge=2, le=256, description="features of the first level")
    batch_norm: bool = True
    residual: bool = Field(default=False, description="add the input to the output (CARE)")
    n2v2: bool = Field(default=False, description="blur-pool and no top skip connection (N2V2)")
    upsampling: Literal["transposed", "linear"] = Field(
        default="transposed",
        description="transposed convolutions, or linear interpolation with blocks that narrow their features",
    )


class TrainingConfig(_Strict):
    """How to optimise: common to every task."""

    epochs: int = Field(default=100, ge=1)
    steps_per_epoch: int = Field(default=50, ge=1, description="batches per epoch")
    batch_size: int = Field(default=8, ge=1)
    learning_rate: float = Field(default=4e-4, gt=0.0)
    weight_decay: float = Field(default=1e-4, ge=0.0)
    scheduler: Literal["plateau", "cosine", "none"] = "plateau"
    plateau_patience: int = Field(default=8, ge=1, description="epochs without progress before the rate halves")
    early_stopping_patience: int | None = Field(
        default=20, ge=1, description="epochs without progress before training stops; null: never"
    )
    max_minutes: float | None = Field(
        default=None, gt=0.0, description="stop cleanly after this many minutes of training"
    )
    keep: Literal["best", "last"] = Field(
        default="best",
        description="the weights QC and the package get: the epoch with the best validation figure, or the last",
    )
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(default=None, ge=1, description="CPU threads; null: every core")
    deterministic: bool = Field(default=True, description="same seed, same result (on the CPU)")
    export: bool = Field(default=True, description="write the zoo package at the end")
    init_from: str | None = Field(
        default=None,
        description="start from this package's weights (folder, zip, description or URL) instead of random ones",
    )


#: what the zoo format accepts as a model's name (bioimageio.spec 0.5: 5-128 of these characters)
NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+- ()")


def package_name(text: str) -> str:
    """A model name the zoo format accepts, made from ``text`` (a task and a folder's or layer's name).

    >>> package_name("n2v-noisy"), package_name("care-W2S.v1 [ch0]"), package_name("ab")
    ('n2v-noisy', 'care-W2S-v1 (ch0)', 'ab-model')
    """
    text = text.replace("[", "(").replace("]", ")")
    name = "".join(c if c in NAME_CHARACTERS else "-" for c in text).strip(" -")[:128]
    return name if len(name) >= 5 else f"{name}-model".lstrip("-")


class _TaskBase(_Strict):
    name: str = Field(default="microzoo-model", min_length=1)
    description: str = ""
    authors: list[str] = Field(default_factory=lambda: ["microzoo user"])
    license: str = "CC-BY-4.0"
    data: DataConfig
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)

    @field_validator("name")
    @classmethod
    def _name_fits_the_package(cls, name: str) -> str:
        """The exported package carries this name: refuse one the format refuses now, not after training."""
        bad = sorted(set(name) - NAME_CHARACTERS)
        if not 5 <= len(name) <= 128 or bad:
            why = f"characters {''.join(bad)!r} are not allowed" if bad else f"it has {len(name)} characters"
            raise ValueError(
                f"name {name!r}: {why}; the package's name needs 5 to 128 letters, digits, spaces or _+-() "
                "(the zoo format's rule), e.g. 'nuclei-unet'"
            )
        return name

    @model_validator(mode="after")
    def _patch_fits_network(self) -> _TaskBase:
        step = 2**self.network.depth
        if any(size % step for size in self.data.patch_size):
            raise ValueError(
                f"data.patch_size {tuple(self.data.patch_size)} must be multiples of {step} "
                f"(2 ** network.depth {self.network.depth}); "
                f"e.g. {tuple(-(-s // step) * step for s in self.data.patch_size)}"
            )
        return self


class SemanticConfig(_TaskBase):
    """Semantic segmentation: every pixel gets a class (label 0 is background)."""

    task: Literal["semantic"] = "semantic"
    n_classes: int = Field(default=2, ge=2, description="2: foreground against background")
    foreground: Literal["nonzero", "zero"] = Field(
        default="nonzero",
        description="two classes: the foreground is every label > 0 ('nonzero', objects on a 0 background) "
        "or the label 0 ('zero': structures drawn as 0, e.g. the membranes of ISBI 2012)",
    )
    loss: Literal["bce", "dice", "bce_dice", "weighted_bce"] = "bce_dice"

    @model_validator(mode="after")
    def _needs_labels(self) -> SemanticConfig:
        if self.data.labels is None:
            raise ValueError("data.labels: semantic segmentation needs a folder of label images")
        return self


class InstancesConfig(_TaskBase):
    """Instance segmentation of nuclei or cells from label images (0 = background)."""

    task: Literal["instances"] = "instances"

    @model_validator(mode="after")
    def _needs_labels(self) -> InstancesConfig:
        if self.data.labels is None:
            raise ValueError("data.labels: instance segmentation needs a folder of label images")
        return self


class CareConfig(_TaskBase):
    """Supervised restoration (CARE) from noisy/clean pairs matched by file name."""

    task: Literal["care"] = "care"
    loss: Literal["mse", "mae"] = "mae"

    @model_validator(mode="after")
    def _needs_targets(self) -> CareConfig:
        if self.data.targets is None:
            raise ValueError("data.targets: CARE needs a folder of clean images named like the inputs")
        return self


#: Noise2Void's training settings where they differ from every task's (a config that sets one keeps
#: it). Its validation figure, the masked loss on a few hundred pixels of noisy patches, is too noisy to
#: choose an epoch or to stop by: on W2S, 2,800 steps, the epoch it chose scored 28.4-31.3 dB against
#: the clean images where the last epoch scored 31.0-31.4 in every run (benchmarks/RESULTS.md, "N2V2
#: training: ... which epoch to keep"). So it keeps the last epoch, anneals the rate towards it (cosine,
#: to the time limit when that comes first) and does not stop early.
N2V_TRAINING_DEFAULTS: dict[str, Any] = {"keep": "last", "scheduler": "cosine", "early_stopping_patience": None}

#: Noise2Void's network, where the config does not say otherwise: linear upsampling, whose blocks
#: narrow the features (CAREamics' and the original N2V's U-Net; 82 instead of 115 thousand weights
#: at depth 2 and 16 features, with the same fitted PSNR on W2S and more steps per second:
#: benchmarks/RESULTS.md, "N2V2 against CAREamics"). ``n2v2`` follows the variant.
N2V_NETWORK_DEFAULTS: dict[str, Any] = {"upsampling": "linear"}


class N2VConfig(_TaskBase):
    """Self-supervised denoising (Noise2Void; N2V2 by default) from noisy images alone."""

    task: Literal["n2v"] = "n2v"
    variant: Literal["n2v", "n2v2"] = "n2v2"
    masked_fraction: float = Field(default=0.002, gt=0.0, le=0.2, description="pixels masked per patch")
    mask_radius: int = Field(default=2, ge=1, le=10, description="replacement values come from this radius")

    @model_validator(mode="before")
    @classmethod
    def _training_defaults(cls, data: Any) -> Any:
        """The settings of :data:`N2V_TRAINING_DEFAULTS` that the config does not give."""
        training = data.get("training") if isinstance(data, dict) else None
        if isinstance(data, dict) and (training is None or isinstance(training, dict)):
            data = {**data, "training": {**N2V_TRAINING_DEFAULTS, **(training or {})}}
        return data

    @model_validator(mode="before")
    @classmethod
    def _network_defaults(cls, data: Any) -> Any:
        """The settings of :data:`N2V_NETWORK_DEFAULTS` that the config does not give; ``network.n2v2``
        not given follows ``variant`` (N2V2's network for the n2v2 variant)."""
        network = data.get("network") if isinstance(data, dict) else None
        if isinstance(data, dict) and (network is None or isinstance(network, dict)):
            defaults = {**N2V_NETWORK_DEFAULTS, "n2v2": data.get("variant", "n2v2") == "n2v2"}
            data = {**data, "network": {**defaults, **(network or {})}}
        return data

    @model_validator(mode="after")
    def _match_variant(self) -> N2VConfig:
        if self.network.n2v2 != (self.variant == "n2v2"):
            raise ValueError(
                f"network.n2v2 is {self.network.n2v2} but variant is {self.variant!r}; "
                "set network.n2v2 true exactly for variant n2v2"
            )
        return self


#: any task's configuration (the tasks and their classes: :mod:`microzoo.train.tasks.registry`)
TaskConfig = SemanticConfig | InstancesConfig | CareConfig | N2VConfig


# ------------------------------------------------------------------ validation, YAML


def _error_message(error: ValidationError, source: str) -> str:
    """Name every failing field as a dotted path, with pydantic's reason."""
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        reason = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            reason = "unknown field; check its spelling (see docs/training.md)"
        lines.append(f"{location or 'config'}: {reason}")
    return f"invalid training configuration in {source}: " + "; ".join(lines)


def validate_config(data: dict[str, Any], *, source: str = "the configuration") -> Any:
    """Build a task config from a plain dict; a :class:`ConfigError` names each bad field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping of fields, got {type(data).__name__}")
    from microzoo.train.tasks.registry import get_task

    task = get_task(data.get("task"), source=source)
    try:
        return task.config_class.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_error_message(error, source)) from None


def load_config(path: str | os.PathLike[str]) -> Any:
    """Read a task config from YAML; relative data paths are taken from the file's folder."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read the training configuration {path}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}; fix the line it names") from None
    config = validate_config(data, source=str(path))
    for field in ("images", "labels", "targets"):
        value = getattr(config.data, field)
        if value is not None and not value.is_absolute():
            setattr(config.data, field, (path.parent / value).resolve())
    return config


def save_config(config: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``config`` as YAML (atomically) and return the path."""
    from microzoo.io.atomic import atomic_output

    path = Path(path)
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ factories


def default_patch_size(spatial_dims: int) -> tuple[int, ...]:
    """128x128 in 2-D, 32x64x64 in 3-D (as CARE, N2V and StarDist use)."""
    return (128, 128) if spatial_dims == 2 else (32, 64, 64)


def _common(
    *, images: str | Path, labels: str | Path | None = None, targets: str | Path | None = None, spatial_dims: int,
    patch_size: int | tuple[int, ...] | None, axes: str | None, epochs: int | None, steps_per_epoch: int | None,
    batch_size: int | None, seed: int, max_minutes: float | None, name: str | None, residual: bool = False,
    n2v2: bool = False,
) -> dict[str, Any]:  # fmt: skip
    if patch_size is None:
        patch_size = default_patch_size(spatial_dims)
    elif isinstance(patch_size, int):
        patch_size = (patch_size,) * spatial_dims
    training: dict[str, Any] = {"seed": seed, "max_minutes": max_minutes}
    if batch_size is None:
        batch_size = 8 if spatial_dims == 2 else 2
    training["batch_size"] = batch_size
    if epochs is not None:
        training["epochs"] = epochs
    if steps_per_epoch is not None:
        training["steps_per_epoch"] = steps_per_epoch
    data = {"images": images, "labels": labels, "targets": targets, "axes": axes,
            "spatial_dims": spatial_dims, "patch_size": tuple(patch_size)}  # fmt: skip
    config: dict[str, Any] = {"data": data, "training": training, "network": {"residual": residual, "n2v2": n2v2}}
    if name:
        config["name"] = name
    return config


def semantic_config(
    *, images: str | Path, labels: str | Path, spatial_dims: int = 2,
    patch_size: int | tuple[int, ...] | None = None, axes: str | None = None, epochs: int | None = None,
    steps_per_epoch: int | None = None, batch_size: int | None = None, seed: int = 0,
    max_minutes: float | None = None, name: str | None = None, loss: str = "bce_dice", n_classes: int = 2,
    foreground: str = "nonzero",
) -> SemanticConfig:  # fmt: skip
    """Semantic segmentation U-Net: depth 3, 32 features, BCE + Dice loss, 128x128 patches."""
    common = _common(images=images, labels=labels, spatial_dims=spatial_dims, patch_size=patch_size, axes=axes,
                     epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, seed=seed,
                     max_minutes=max_minutes, name=name)  # fmt: skip
    return validate_config({"task": "semantic", "loss": loss, "n_classes": n_classes, "foreground": foreground,
                            **common})  # fmt: skip


def instances_config(
    *, images: str | Path, labels: str | Path, spatial_dims: int = 2,
    patch_size: int | tuple[int, ...] | None = None, axes: str | None = None, epochs: int | None = None,
    steps_per_epoch: int | None = None, batch_size: int | None = None, seed: int = 0,
    max_minutes: float | None = None, name: str | None = None,
) -> InstancesConfig:  # fmt: skip
    """Instance segmentation of nuclei/cells: U-Net on foreground, boundary and distance targets."""
    common = _common(images=images, labels=labels, spatial_dims=spatial_dims, patch_size=patch_size, axes=axes,
                     epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, seed=seed,
                     max_minutes=max_minutes, name=name)  # fmt: skip
    return validate_config({"task": "instances", **common})


def care_config(
    *, images: str | Path, targets: str | Path, spatial_dims: int = 2,
    patch_size: int | tuple[int, ...] | None = None, axes: str | None = None, epochs: int | None = None,
    steps_per_epoch: int | None = None, batch_size: int | None = None, seed: int = 0,
    max_minutes: float | None = None, name: str | None = None,
) -> CareConfig:  # fmt: skip
    """CARE restoration: residual U-Net, mean absolute error, noisy/clean pairs by file name."""
    common = _common(images=images, targets=targets, spatial_dims=spatial_dims, patch_size=patch_size, axes=axes,
                     epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, seed=seed,
                     max_minutes=max_minutes, name=name, residual=True)  # fmt: skip
    return validate_config({"task": "care", **common})


def n2v_config(
    *, images: str | Path, targets: str | Path | None = None, spatial_dims: int = 2,
    patch_size: int | tuple[int, ...] | None = None, axes: str | None = None, epochs: int | None = None,
    steps_per_epoch: int | None = None, batch_size: int | None = None, seed: int = 0,
    max_minutes: float | None = None, name: str | None = None, variant: str = "n2v2",
) -> N2VConfig:  # fmt: skip
    """Noise2Void (N2V2 variant by default): 0.2% of pixels masked per patch; ``targets`` only for QC."""
    common = _common(images=images, targets=targets, spatial_dims=spatial_dims, patch_size=patch_size, axes=axes,
                     epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, seed=seed,
                     max_minutes=max_minutes, name=name, n2v2=variant == "n2v2")  # fmt: skip
    return validate_config({"task": "n2v", "variant": variant, **common})


_SHORT_FORM_ROLES = {
    "labels": "label images named like the inputs", "targets": "clean images named like the noisy ones",
    "foreground": "'nonzero' or 'zero'",
}  # fmt: skip


def short_form_config(
    task: str, *, images: str | Path, labels: str | Path | None = None, targets: str | Path | None = None,
    foreground: str | None = None, **options: Any,
) -> Any:  # fmt: skip
    """The config of ``microzoo train TASK --images ...``: the task's factory, with the options given.

    ``labels``, ``targets`` and ``foreground`` go to the factories that take them; one given
    to a task that does not take it, or one a task needs and lacks, is a :class:`ConfigError`
    naming the option. ``options`` are the keywords every factory takes (``epochs``, ...).
    """
    from microzoo.train.tasks.registry import get_task

    entry = get_task(task, source=f"`microzoo train {task}`")
    parameters = inspect.signature(entry.factory).parameters
    given = {"labels": labels, "targets": targets, "foreground": foreground}
    for key, value in given.items():
        if value is not None and key not in parameters:
            raise ConfigError(f"--{key} does not apply to `microzoo train {entry.name}`; leave it out")
        if value is None and key in parameters and parameters[key].default is inspect.Parameter.empty:
            raise ConfigError(f"`microzoo train {entry.name}` needs --{key} DIR: {_SHORT_FORM_ROLES[key]}")
    return entry.factory(images=images, **{k: v for k, v in given.items() if v is not None}, **options)
