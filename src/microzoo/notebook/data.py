"""The data of a training notebook: its folders, a quick subset, and a look at the images.

Files pair by name as everywhere in microzoo (:func:`microzoo.io.files.pair_by_stem`), and a
folder left as ``None`` is the project's shared data (:func:`microzoo.io.files.shared_data_dir`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from microzoo.errors import ConfigError, DataError
from microzoo.io.files import image_stem, list_images, pair_by_stem, shared_data_dir
from microzoo.io.read import Image, read_image
from microzoo.notebook.display import Panel, Pictures, Table, row_of_images
from microzoo.qc.panels import plane, stretch

__all__ = [
    "check_config",
    "data_folder",
    "describe",
    "display_view",
    "first_images",
    "output_folder",
    "quick_config",
    "show_data",
]

Config = TypeVar("Config")

#: how each training task's partner images look: labels (classes), objects, or clean images
_PARTNER = {"semantic": "labels", "instances": "objects", "care": "clean", "n2v": "clean (QC only)"}
#: the side of the zoomed corner shown for restoration, where the noise shows
ZOOM = 96


def data_folder(value: str | os.PathLike[str] | None, *, default: str, optional: bool = False) -> Path | None:
    """A folder given in a notebook's parameters cell, resolved.

    ``None`` is ``default`` inside the shared data (e.g. ``"isbi2012/train/images"``); with
    ``optional``, an empty string means no folder (returns None). Raises DataError when the
    folder does not exist.
    """
    if optional and value == "":
        return None
    path = Path(value).expanduser().resolve() if value else shared_data_dir() / default
    if not path.is_dir():
        raise DataError(f"{path} is not a folder; check the folders in the parameters cell")
    return path


def output_folder(value: str | os.PathLike[str]) -> Path:
    """The output folder, resolved (relative to the folder Jupyter runs in) and created."""
    path = Path(value).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def first_images(folders: Mapping[str, Path], n: int, *, into: Path) -> dict[str, Path]:
    """Copy the first ``n`` images of the first folder, and their partners (same name) in the
    others, into ``into/<role>``; returns role -> the new folder. What was there is replaced."""
    roles = list(folders)
    reference = list_images(folders[roles[0]], role=roles[0])[:n]
    groups = {roles[0]: reference, **{r: list_images(folders[r], role=r) for r in roles[1:]}}
    _, paired = pair_by_stem(groups, extra_ok=True)
    copies = {}
    for role, paths in paired.items():
        target = into / role
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for path in paths:
            (shutil.copytree if path.is_dir() else shutil.copy2)(path, target / path.name)
        copies[role] = target
    return copies


def quick_config(config: Config, *, n_images: int, into: Path) -> Config:
    """A smoke-test version of a training configuration: the first ``n_images`` images (copied
    into ``into``), a tiny network (depth 2, 8 features), at most 2 epochs of 4 steps, 4
    validation patches. Its model is useless; it shows in a minute that everything runs."""
    c: Any = config
    data = c.data
    folders = {"images": data.images, **{role: getattr(data, role) for role in ("labels", "targets")
                                          if getattr(data, role) is not None}}  # fmt: skip
    copies = first_images(folders, n_images, into=into)
    dumped = c.model_dump()
    dumped["data"].update({role: copies[role] for role in folders}, validation_patches=4)
    dumped["network"].update(depth=2, base_features=8)
    training = dumped["training"]
    training.update(epochs=min(training["epochs"], 2), steps_per_epoch=min(training["steps_per_epoch"], 4))
    result: Config = type(c).model_validate(dumped)
    return result


def check_config(config: Any) -> Table:
    """Check an edited training configuration as a whole (a patch size that fits the network's
    depth, ...) and show it as the YAML that ``OUTPUT/config.yaml`` will hold; ``microzoo train
    config.yaml`` trains from that file without a notebook."""
    import yaml

    checked = type(config).model_validate(config.model_dump())
    text = yaml.safe_dump(checked.model_dump(mode="json"), sort_keys=False)
    return Table((), (), before=(f"```yaml\n{text}```",))


def describe(name: str, image: Image) -> str:
    """One line on an image: shape, axes, data type and range of values."""
    data = np.asarray(image.data)
    return f"{name}: shape {data.shape}, axes {image.axes!r}, {data.dtype}, values {data.min():g}..{data.max():g}"


def display_view(image: Image) -> np.ndarray:
    """A 2-D view to draw: channels last (RGB kept as colour, other channels: the first), middle plane."""
    data, axes = np.asarray(image.data), image.axes
    if "c" in axes:
        data = np.moveaxis(data, axes.index("c"), -1)
        data = data[..., :3] if data.shape[-1] in (3, 4) else data[..., 0]
    return plane(data, colour=True)


def show_data(
    images: str | os.PathLike[str], partners: str | os.PathLike[str] | None = None, *, task: str, n: int = 3
) -> Pictures:
    """The first ``n`` images of a folder beside their partners, one row each, with a line on each.

    ``task`` is the training task (``semantic``, ``instances``, ``care``, ``n2v``); it says how
    the partner is drawn: the foreground of a label image and its outline on the image, each
    object in its own colour, or the clean image with zoomed corners where the noise shows.
    """
    if task not in _PARTNER:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(_PARTNER)}")
    paths = list_images(images, role="images")
    partner_of: dict[str, Path] = {}
    if partners is not None:
        _, paired = pair_by_stem({"images": paths[:n], "partners": list_images(partners)}, extra_ok=True)
        partner_of = {image_stem(a): b for a, b in zip(paired["images"], paired["partners"], strict=True)}
    rows = []
    for path in paths[:n]:
        image = read_image(path)
        view = display_view(image)
        panels: list[Panel] = [("noisy" if task in ("care", "n2v") else "image", stretch(view), {})]
        lines = [describe(path.name, image)]
        if path_ := partner_of.get(image_stem(path)):
            other = read_image(path_)
            lines.append(describe(f"{_PARTNER[task]} {path_.name}", other))
            panels += _partner_panels(task, stretch(view), display_view(other))
        if task in ("care", "n2v"):
            panels += [(f"{name}, zoom", array[:ZOOM, :ZOOM], options) for name, array, options in list(panels)]
        rows.append(row_of_images(panels, path.name[:60], lines))
    return Pictures(tuple(rows), (f"{len(paths)} images in {images}",))


def _partner_panels(task: str, image: np.ndarray, other: np.ndarray) -> list[Panel]:
    if task == "semantic":
        foreground = other > 0
        grey = image.mean(axis=-1) if image.ndim == 3 else image
        return [("labels (foreground)", foreground, {}),
                ("background over the image", np.where(foreground, grey, 1.0), {"vmin": 0, "vmax": 1})]  # fmt: skip
    if task == "instances":
        from skimage.color import label2rgb

        count = len(np.unique(other)) - (1 if (other == 0).any() else 0)
        return [(f"labels ({count} objects)", label2rgb(other.astype(np.int64), bg_label=0), {})]
    return [(_PARTNER[task], stretch(other), {})]
