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


def new_folder(parent: Path, name: str) -> Path:
    """A folder that does not exist yet: ``parent/NAME-YYYYmmdd-HHMMSS`` (a counter when taken)."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "data"
    base = parent / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder
