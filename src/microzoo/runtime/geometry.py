"""A model's size rules as plain data: what :mod:`microzoo.runtime.tiling` plans from.

:func:`geometry_from_descr` reads a format 0.5 model description once; the planner then
works on these small frozen objects only, so it can be tested without a model package.
Per tensor and axis id it keeps the axis kind, the size rule, the scale and the halo:

- :class:`FixedSize` -- exactly ``size`` (``int`` in the description);
- :class:`ParameterizedSize` -- ``min + n * step`` for ``n = 0, 1, 2, ...``;
- :class:`SizeReference` -- ``floor(ref_size * ref_scale / scale) + offset``;
- :class:`DataDependentSize` -- an output size only known after running the model;
- ``None`` -- a batch axis of any size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "AxisGeometry",
    "DataDependentSize",
    "FixedSize",
    "ModelGeometry",
    "ParameterizedSize",
    "SizeReference",
    "SizeRule",
    "TensorGeometry",
    "geometry_from_descr",
]

AxisKind = Literal["batch", "channel", "index", "time", "space"]


@dataclass(frozen=True)
class FixedSize:
    """An axis of exactly ``size`` elements."""

    size: int


@dataclass(frozen=True)
class ParameterizedSize:
    """An axis of ``min + n * step`` elements, ``n = 0, 1, 2, ...``."""

    min: int
    step: int

    def is_valid(self, size: int) -> bool:
        """Whether ``size`` is one of ``min + n * step``."""
        return size >= self.min and (size - self.min) % self.step == 0

    def at_least(self, size: int) -> int:
        """The smallest valid size that is ``>= size``."""
        n = max(0, -(-(size - self.min) // self.step))
        return self.min + n * self.step


@dataclass(frozen=True)
class SizeReference:
    """``floor(size of tensor_id.axis_id * its scale / this scale) + offset``."""

    tensor_id: str
    axis_id: str
    offset: int = 0


@dataclass(frozen=True)
class DataDependentSize:
    """An output axis whose size the model decides (between ``min`` and ``max``)."""

    min: int = 1
    max: int | None = None


SizeRule = FixedSize | ParameterizedSize | SizeReference | DataDependentSize | None


@dataclass(frozen=True)
class AxisGeometry:
    """One axis of a tensor: its id, kind, size rule, scale and (output) halo."""

    id: str
    kind: AxisKind
    size: SizeRule
    scale: float = 1.0
    halo: int = 0


@dataclass(frozen=True)
class TensorGeometry:
    """One tensor: its id and axes in the description's order."""

    id: str
    axes: tuple[AxisGeometry, ...]
    optional: bool = False
    pad_mode: str | None = None
    """An input's padding mode from the description (``pad``), None where it gives none."""

    @property
    def axis_ids(self) -> tuple[str, ...]:
        """The axis ids in order, e.g. ``("batch", "channel", "y", "x")``."""
        return tuple(a.id for a in self.axes)

    def axis(self, axis_id: str) -> AxisGeometry:
        """The axis with id ``axis_id`` (``KeyError`` if there is none)."""
        for a in self.axes:
            if a.id == axis_id:
                return a
        raise KeyError(f"tensor {self.id!r} has no axis {axis_id!r}")


@dataclass(frozen=True)
class ModelGeometry:
    """The size rules of all input and output tensors of a model."""

    inputs: tuple[TensorGeometry, ...]
    outputs: tuple[TensorGeometry, ...]

    def tensor(self, tensor_id: str) -> TensorGeometry:
        """The input or output tensor ``tensor_id`` (``KeyError`` if there is none)."""
        for t in self.inputs + self.outputs:
            if t.id == tensor_id:
                return t
        raise KeyError(f"model has no tensor {tensor_id!r}")


def geometry_from_descr(descr: Any) -> ModelGeometry:
    """Read the size rules of a format 0.5 model description.

    Parameters
    ----------
    descr
        A ``bioimageio.spec.model.v0_5.ModelDescr``.

    Returns
    -------
    ModelGeometry
        Pure data, independent of bioimageio.spec.
    """
    return ModelGeometry(
        inputs=tuple(_tensor(t) for t in descr.inputs),
        outputs=tuple(_tensor(t) for t in descr.outputs),
    )


def _tensor(t: Any) -> TensorGeometry:
    pad = getattr(t, "pad", None)
    return TensorGeometry(
        id=str(t.id),
        axes=tuple(_axis(a) for a in t.axes),
        optional=bool(getattr(t, "optional", False)),
        pad_mode=None if pad is None else str(pad.mode),
    )


def _axis(a: Any) -> AxisGeometry:
    from bioimageio.spec.model import v0_5

    kind: AxisKind = a.type
    if kind == "channel":
        rule: SizeRule = FixedSize(len(a.channel_names))
    else:
        rule = _rule(a.size, v0_5)
    return AxisGeometry(
        id=str(a.id),
        kind=kind,
        size=rule,
        scale=float(getattr(a, "scale", 1.0)),
        halo=int(getattr(a, "halo", 0) or 0),
    )


def _rule(size: Any, v0_5: Any) -> SizeRule:
    if size is None:
        return None
    if isinstance(size, int):
        return FixedSize(size)
    if isinstance(size, v0_5.ParameterizedSize):
        return ParameterizedSize(min=size.min, step=size.step)
    if isinstance(size, v0_5.SizeReference):
        return SizeReference(str(size.tensor_id), str(size.axis_id), int(size.offset))
    if isinstance(size, v0_5.DataDependentSize):
        return DataDependentSize(min=size.min, max=size.max)
    raise TypeError(f"unknown axis size rule {size!r}")
