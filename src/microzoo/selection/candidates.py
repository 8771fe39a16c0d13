"""The candidates of a selection: the models the user named, or those a zoo offers for the task.

A zoo is searched (:class:`microzoo.zoo.client.ZooClient`) for the zoo tasks that can serve the
QC task (instances: instance segmentation, and segmentation models whose foreground a seeded
watershed splits, as ``compare`` does; semantic: segmentation; restoration: denoising and
restoration), 2-D models only, with the user's words as the full-text query (tags, title,
description). A found model is kept when its first input can take the user's images: spatial
axes y and x and no z, and one channel (colour images are converted to grey for it) or as many
channels as the images have. Every model left out is listed with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microzoo.errors import DataError
from microzoo.progress import ProgressCallback

#: QC task -> the zoo's tasks (microzoo.zoo.summary.TASKS) whose models can serve it
ZOO_TASKS = {
    "instances": ("instance-segmentation", "segmentation"),
    "semantic": ("segmentation",),
    "restoration": ("denoising", "restoration"),
}


@dataclass(frozen=True)
class Candidate:
    """A model to run: ``source`` is what :meth:`microzoo.runtime.predict.Model.open` takes."""

    source: str
    origin: str  # "named", "zoo" or "fine-tuned"
    title: str = ""  # the zoo's NAME/VERSION, or the path given


@dataclass(frozen=True)
class CandidateSearch:
    """What a zoo offered: the candidates kept, and for every model left out, why."""

    candidates: tuple[Candidate, ...]
    left_out: tuple[str, ...]


def named_candidates(models: Sequence[str]) -> list[Candidate]:
    """The models the user named, in their order (duplicates once)."""
    return [Candidate(str(m), "named", str(m)) for m in dict.fromkeys(models)]


def zoo_candidates(
    url: str,
    task: str,
    *,
    image_channels: int,
    text: str = "",
    limit: int = 5,
    progress: ProgressCallback | None = None,
) -> CandidateSearch:
    """Search the zoo at ``url`` for models that can serve ``task`` on images of ``image_channels``
    channels (1 for grey); download (once, cached) at most ``limit`` of them, most downloaded first."""
    from microzoo.package.zoo_ref import fetch_zoo_package
    from microzoo.zoo.client import ZooClient

    if task not in ZOO_TASKS:
        raise DataError(f"select has no zoo candidates for the task {task!r}; choose one of {', '.join(ZOO_TASKS)}")
    found: dict[str, dict[str, Any]] = {}
    with ZooClient(url) as zoo:
        for zoo_task in ZOO_TASKS[task]:
            answer = zoo.search(text, task=zoo_task, dims="2d", sort="downloads", per_page=100)
            for item in answer.get("items", []):
                found.setdefault(f"{item['name']}/{item['version']}", item)
    kept: list[Candidate] = []
    left_out: list[str] = []
    for ref, item in found.items():
        reason = unfit_input(item.get("summary", {}), image_channels)
        if reason:
            left_out.append(f"{ref}: {reason}")
        elif len(kept) >= limit:
            left_out.append(f"{ref}: beyond the first {limit} candidates (raise --max-candidates)")
        else:
            if progress is not None:
                progress(len(kept), min(limit, len(found)), f"downloading {ref}")
            path = fetch_zoo_package(f"zoo:{ref}", zoo=url)
            kept.append(Candidate(str(path), "zoo", ref))
    if not kept:
        words = f" matching {text!r}" if text else ""
        raise DataError(
            f"the zoo at {url} has no published 2-D model{words} for {task} that takes these images"
            + (f" ({'; '.join(left_out)})" if left_out else "")
            + ": name models to compare instead, or search with other words"
        )
    return CandidateSearch(tuple(kept), tuple(left_out))


def unfit_input(summary: dict[str, Any], image_channels: int) -> str | None:
    """Why a model (its zoo summary) cannot take 2-D images of ``image_channels`` channels; None if it can.

    >>> unfit_input({"inputs": [{"axes": "bcyx", "sizes": ["b: any", "c: 1 (raw)", "y: 64", "x: 64"]}]}, 3)
    >>> unfit_input({"inputs": [{"axes": "bczyx", "sizes": []}]}, 1)
    'its input has a z axis (3-D)'
    """
    inputs = summary.get("inputs") or []
    if not inputs:
        return "its description names no input"
    if len(inputs) > 1:
        return f"it takes {len(inputs)} inputs"
    axes, sizes = str(inputs[0].get("axes", "")), list(inputs[0].get("sizes", []))
    if "z" in axes:
        return "its input has a z axis (3-D)"
    if not {"y", "x"} <= set(axes):
        return f"its input axes {axes!r} lack y and x"
    if "c" not in axes:
        return None
    index = axes.index("c")
    match = re.search(r":\s*(\d+)", sizes[index]) if index < len(sizes) else None
    channels = int(match.group(1)) if match else None
    if channels in (None, 1) or channels == image_channels:
        return None
    return f"it takes {channels} channels and the images have {image_channels}"


def image_channels(path: Path, *, axes: str | None = None) -> int:
    """Channels of one image as read (RGBA counts as 3: the alpha is dropped): 1 for grey."""
    from microzoo.io.read import read_image

    image = read_image(path, axes=axes)
    if "c" not in image.axes:
        return 1
    channels = int(image.data.shape[image.axes.index("c")])
    return 3 if channels == 4 else channels
