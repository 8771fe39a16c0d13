"""What the Train widget hands the library: the task's defaults and partner, and layers written as training folders.

The library trains from folders (:func:`microzoo.train.run.train`), so layers are written as
TIFF images (:func:`microzoo.io.write.write_image`) into a new folder under the plugin's cache
folder, the partner layer's images named like the input's.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.errors import DataError
from microzoo.train.tasks.registry import get_task

#: the partner folder each task's factory takes: the layer kind and what the user reads
PARTNERS = {"labels": ("Labels", "Label layer", "Label images"), "targets": ("Image", "Clean layer", "Clean images")}


def task_partner(task: str) -> tuple[str | None, bool]:
    """The partner a task trains with ("labels", "targets" or None) and whether it is required
    (read from the task's factory, as ``microzoo train`` does)."""
    parameters = inspect.signature(get_task(task).factory).parameters
    for role in ("labels", "targets"):
        if role in parameters:
            return role, parameters[role].default is inspect.Parameter.empty
    return None, False


def default_config(task: str, spatial_dims: int) -> Any:
    """The task's configuration with the library's defaults (placeholder folders)."""
    role, _ = task_partner(task)
    return get_task(task).factory(images=Path("."), **({role: Path(".")} if role else {}), spatial_dims=spatial_dims)


def layer_images(data: Any, *, rgb: bool, spatial_dims: int, name: str) -> list[tuple[np.ndarray, str]]:
    """A layer's data as training images with their axes: a colour image ``yxc``; in 2-D a plane
    ``yx`` or each plane of a stack; in 3-D a stack ``zyx`` or each stack of a time series."""
    array = np.asarray(data)
    if rgb:
        if spatial_dims == 3 or array.ndim != 3:
            raise DataError(f"layer {name!r}: train on a 2-D colour image (y, x, colour); this one is {array.shape}")
        return [(array, "yxc")]
    if array.ndim < spatial_dims:
        raise DataError(
            f"layer {name!r} has {array.ndim} dimensions: a 3-D model needs z stacks; untick '3-D' to train in 2-D"
        )
    shape = array.shape[-spatial_dims:]
    return [(plane, "zyx"[-spatial_dims:]) for plane in array.reshape(-1, *shape)]


def write_training_layers(folder: Path, image: tuple[str, Any, bool], partner: tuple[str, str, Any] | None,
                          spatial_dims: int) -> dict[str, Path]:  # fmt: skip
    """Write an image layer (name, data, rgb) and its partner layer (role, name, data) as TIFF
    images named alike in ``folder/images`` and ``folder/ROLE``; returns the folders by role."""
    from microzoo.io.write import write_image

    images = layer_images(image[1], rgb=image[2], spatial_dims=spatial_dims, name=image[0])
    folders = {"images": folder / "images"}
    pairs: list[tuple[str, list[tuple[np.ndarray, str]]]] = [("images", images)]
    if partner is not None:
        role, name, data = partner
        partners = layer_images(data, rgb=False, spatial_dims=spatial_dims, name=name)
        spatial = [a.shape[: len(axes.replace("c", ""))] for a, axes in images]
        if [a.shape for a, _ in partners] != spatial:
            raise DataError(f"layers {image[0]!r} and {name!r} differ in size: pick a partner layer of the same shape")
        folders[role] = folder / role
        pairs.append((role, partners))
    for role, arrays in pairs:
        for i, (array, axes) in enumerate(arrays):
            write_image(folders[role] / f"{i:03d}.tif", array, axes)
    return folders


def new_folder(parent: Path, name: str) -> Path:
    """A folder that does not exist yet: ``parent/NAME-YYYYmmdd-HHMMSS`` (a counter when taken)."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "data"
    base = parent / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder
