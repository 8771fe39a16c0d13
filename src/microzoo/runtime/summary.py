"""A readable summary of a model package (what ``microzoo info`` shows).

It lives in ``runtime`` because it names what the runtime can do with the package: the weight
formats it runs and the processing ops in words.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from microzoo.package.load import ModelPackage
from microzoo.runtime.engines import available_formats
from microzoo.runtime.ops import describe_op


@dataclasses.dataclass(frozen=True)
class TensorSummary:
    id: str
    axes: str  # e.g. "batch, channel[1], y: 512, x: 512"
    size_rules: tuple[str, ...]
    processing: tuple[str, ...]
    description: str


@dataclasses.dataclass(frozen=True)
class PackageSummary:
    name: str
    description: str
    format_version: str
    tags: tuple[str, ...]
    task: str
    license: str
    authors: tuple[str, ...]
    citations: tuple[str, ...]
    weight_formats: tuple[str, ...]
    inputs: tuple[TensorSummary, ...]
    outputs: tuple[TensorSummary, ...]


def summarize(package: ModelPackage) -> PackageSummary:
    """Summarize a package's description for people (the weight formats listed are those microzoo runs)."""
    d = package.descr
    tags = tuple(str(t) for t in d.tags)
    task = str(getattr(d.config.bioimageio, "task", "") or "") or _task_from_tags(tags)
    return PackageSummary(
        name=str(d.name),
        description=str(d.description),
        format_version=package.original_format,
        tags=tags,
        task=task,
        license=str(d.license),
        authors=tuple(str(a.name) for a in d.authors),
        citations=tuple(str(c.text) + (f" (doi:{c.doi})" if c.doi else "") for c in d.cite),
        weight_formats=tuple(available_formats(package)),
        inputs=tuple(_tensor(t, t.preprocessing, describe_op) for t in d.inputs),
        outputs=tuple(_tensor(t, t.postprocessing, describe_op) for t in d.outputs),
    )


def _tensor(tensor: Any, ops: Any, describe_op: Any) -> TensorSummary:
    return TensorSummary(
        id=str(tensor.id),
        axes=", ".join(str(a.id) for a in tensor.axes),
        size_rules=tuple(describe_axis(a) for a in tensor.axes),
        processing=tuple(describe_op(op) for op in ops),
        description=str(tensor.description or ""),
    )


def describe_axis(axis: Any) -> str:
    """One axis and its size rule in words, e.g. ``y: 64 + n*16 (halo 8)``."""
    kind = str(axis.type)
    if kind == "channel":
        return f"{axis.id}: {len(axis.channel_names)} ({', '.join(map(str, axis.channel_names))})"
    size = getattr(axis, "size", None)
    if size is None:
        rule = "any"
    elif isinstance(size, int):
        rule = str(size)
    elif hasattr(size, "min") and hasattr(size, "step"):
        rule = f"{size.min} + n*{size.step}"
    elif hasattr(size, "tensor_id"):
        rule = f"size of {size.tensor_id}.{size.axis_id}"
        if getattr(size, "offset", 0):
            rule += f" {size.offset:+d}"
    else:
        rule = type(size).__name__
    scale = getattr(axis, "scale", 1.0)
    extras = []
    if scale not in (None, 1.0):
        extras.append(f"scale {scale}")
    if getattr(axis, "halo", 0):
        extras.append(f"halo {axis.halo}")
    return f"{axis.id}: {rule}" + (f" ({', '.join(extras)})" if extras else "")


def _task_from_tags(tags: tuple[str, ...]) -> str:
    known = (
        "segmentation",
        "instance-segmentation",
        "denoising",
        "restoration",
        "classification",
        "detection",
        "super-resolution",
        "deconvolution",
    )
    lowered = [t.lower() for t in tags]
    return ", ".join(t for t in known if t in lowered)
