"""Start training from a package's weights: ``training.init_from`` (`microzoo train TASK --from MODEL`).

The parent is any model package with ``pytorch_state_dict`` weights whose network is microzoo's
U-Net (every package microzoo exported; the check compares the state dict with the U-Net its
architecture kwargs build, without running the package's code). Packages with only
torchscript or onnx weights are refused: a network cannot be rebuilt from them to train.

1. :func:`open_parent` reads the parent: its state dict (``weights_only``), name, source,
   the weights' sha256 and its zoo id.
2. :func:`adopt_parent_network` makes the task's ``network`` settings the parent's (depth,
   features, batch norm, residual, N2V2), so that its weights fit.
3. :func:`load_parent_weights` copies every tensor whose shape matches into the network built
   for the task; the others (the first layer when the input channels differ, the head when the
   task's outputs do) keep their fresh values and are named in the notices it returns.

The exported package records its parent (:func:`parent_record`: ``config.microzoo.parent``,
and the description's ``parent`` field when the parent has a zoo id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from microzoo.errors import ConfigError, PackageError

__all__ = [
    "Parent", "adopt_parent_network", "fine_tune", "load_parent_weights", "open_parent", "parent_record",
    "untrainable_reason",
]  # fmt: skip

#: the U-Net's architecture kwargs that the task config's ``network`` section sets
NETWORK_FIELDS = ("depth", "base_features", "batch_norm", "residual", "n2v2", "upsampling")


@dataclass(frozen=True)
class Parent:
    """A package whose weights a training run starts from."""

    name: str
    source: str
    sha256: str  # of the parent's pytorch_state_dict file
    zoo_id: str | None
    kwargs: dict[str, Any]  # the U-Net's architecture kwargs
    task: str | None  # the training task microzoo recorded (config.microzoo.task), if any
    state: dict[str, Any] = field(repr=False)


def open_parent(source: str) -> Parent:
    """Open the package ``source`` (folder, zip, description or URL) as a parent to train from.

    Raises
    ------
    ConfigError : the package has no ``pytorch_state_dict`` weights, or its network is not
        microzoo's U-Net.
    PackageError : the package cannot be opened or its state dict cannot be read safely.
    """
    import torch

    from microzoo.package.load import open_package, sha256_of
    from microzoo.runtime.engines import available_formats

    package = open_package(source)
    entry = package.descr.weights.pytorch_state_dict
    if entry is None:
        present = ", ".join(available_formats(package)) or "none"
        raise ConfigError(
            f"cannot train from {source}: it has only {present} weights, from which no network can be rebuilt to "
            "train; give a package with pytorch_state_dict weights (every package microzoo exports has them), "
            "or train from scratch"
        )
    path = package.file(entry.source)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:  # torch raises UnpicklingError/RuntimeError variants
        raise PackageError(
            f"cannot load the state dict {path.name} of {source} safely (it holds more than tensors); "
            "ask its authors for a plain state dict, or train from scratch"
        ) from None
    kwargs = dict(entry.architecture.kwargs or {})
    _require_unet(state, kwargs, source=source, callable_name=str(entry.architecture.callable))
    zoo_id = getattr(package.descr, "id", None)
    recorded = (package.descr.config.model_extra or {}).get("microzoo") or {}
    task = recorded.get("task") if isinstance(recorded, dict) else None
    return Parent(name=package.name, source=_absolute(source), sha256=sha256_of(path),
                  zoo_id=str(zoo_id) if zoo_id else None, kwargs=kwargs, task=task, state=dict(state))  # fmt: skip


def untrainable_reason(source: str) -> str | None:
    """Why training cannot start from the package ``source`` (None: it can)."""
    try:
        open_parent(source)
    except (ConfigError, PackageError) as error:
        return str(error)
    return None


def fine_tune(
    source: str, *, images: Any, out_dir: Any, labels: Any = None, targets: Any = None, task: str | None = None,
    progress: Any = None, **options: Any,
) -> Any:  # fmt: skip
    """Train on ``images`` starting from the package ``source``; return the
    :class:`~microzoo.train.run.TrainingResult` (its package records the parent).

    ``task`` defaults to the one the parent was trained for (``config.microzoo.task``);
    ``options`` are the short form's (``epochs``, ``steps_per_epoch``, ``patch_size``,
    ``max_minutes``, ...: :func:`~microzoo.train.config.short_form_config`).
    """
    from microzoo.train.config import short_form_config
    from microzoo.train.run import train

    task = task or open_parent(source).task
    if task is None:
        raise ConfigError(f"{source} does not say which task it was trained for; give the task (e.g. 'instances')")
    config = short_form_config(task, images=images, labels=labels, targets=targets, **options)
    config.training.init_from = str(source)
    return train(config, out_dir=out_dir, progress=progress)


def _absolute(source: str) -> str:
    from pathlib import Path

    if "://" in str(source):
        return str(source)
    return str(Path(source).resolve())


def _require_unet(state: dict[str, Any], kwargs: dict[str, Any], *, source: str, callable_name: str) -> None:
    """The state dict must be the one microzoo's U-Net with these kwargs has (names and shapes)."""
    from microzoo.train.models import UNet

    reason = None
    try:
        expected = UNet(**kwargs).state_dict()
    except TypeError as error:
        reason = f"its architecture kwargs are not the U-Net's ({error})"
    else:
        if set(expected) != set(state):
            reason = "its layers are not the U-Net's"
        elif any(tuple(expected[k].shape) != tuple(state[k].shape) for k in expected):
            reason = "its layer shapes differ from the U-Net its kwargs describe"
    if reason:
        raise ConfigError(
            f"cannot train from {source}: its network ({callable_name}) is not microzoo's U-Net: {reason}. "
            "--from takes packages microzoo exported (pytorch_state_dict weights of its U-Net); "
            "train from scratch, or fine-tune that model with the tools of its authors"
        )


def adopt_parent_network(config: Any, parent: Parent) -> tuple[Any, list[str]]:
    """``config`` with its ``network`` settings set to the parent's; notices name what changed."""
    from microzoo.train.config import validate_config
    from microzoo.train.tasks.skeleton import unet_defaults

    data = config.model_dump(mode="json")
    changed = []
    defaults = unet_defaults()  # what a parent written before a setting existed was built with
    for name in NETWORK_FIELDS:
        value = parent.kwargs.get(name, defaults[name])
        if data["network"][name] != value:
            changed.append(f"{name} {data['network'][name]} -> {value}")
            data["network"][name] = value
    colour = {1: "grey", 3: "rgb"}.get(parent.kwargs.get("in_channels", 0))
    if data["data"].get("colour") == "auto" and colour is not None:
        # the first layer is kept only if the images reach it as the parent's did
        data["data"]["colour"] = colour
        changed.append(f"data.colour auto -> {colour} (the parent takes {parent.kwargs['in_channels']} channel(s))")
    try:
        adopted = validate_config(data, source=f"the configuration with the network of {parent.name}")
    except ConfigError as error:
        raise ConfigError(f"cannot train from {parent.source}: {error}") from None
    notices = [f"settings taken from the parent {parent.name}: {', '.join(changed)}"] if changed else []
    return adopted, notices


def load_parent_weights(network: Any, parent: Parent) -> list[str]:
    """Copy the parent's tensors into ``network`` where the shapes match; return the notices."""
    own = network.state_dict()
    fresh = sorted(k for k in own if k not in parent.state or tuple(parent.state[k].shape) != tuple(own[k].shape))
    network.load_state_dict({**own, **{k: v for k, v in parent.state.items() if k in own and k not in fresh}})
    if not fresh:
        return [f"started from the weights of {parent.name} (all {len(own)} tensors)"]
    return [
        f"started from the weights of {parent.name}; {len(fresh)} of {len(own)} tensors start fresh because "
        f"the task's inputs or outputs differ from the parent's: {', '.join(fresh)}"
    ]


def parent_record(parent: Parent) -> dict[str, Any]:
    """What the exported package records of its parent (``config.microzoo.parent``)."""
    record = {"name": parent.name, "source": parent.source, "sha256": parent.sha256,
              "sha256_of": "the parent's pytorch_state_dict weights"}  # fmt: skip
    if parent.zoo_id:
        record["id"] = parent.zoo_id
    return record
