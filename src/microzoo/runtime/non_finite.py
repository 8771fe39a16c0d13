"""NaN and infinite pixels: kept out of the network, and marked again in the outputs.

A few NaN or infinite pixels (a dead detector pixel, a stitching seam, a failed division in
an earlier step) would otherwise spread through every convolution and make the whole output
NaN. So before the forward each non-finite pixel of an input is replaced by the median of the
finite values of its channel (the statistics of the preprocessing ignore them anyway, see
:mod:`microzoo.runtime.ops`), and after it every output laid out like that input (same
spatial axes and sizes) gets NaN again at those pixels: the model's answer there is an
invention and is not passed off as data. Outputs that cannot hold NaN (integers, masks), or
whose grid differs from the input's, keep the model's values; the notice says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from microzoo.runtime.stats import StatRequest, finite_median


@dataclasses.dataclass(frozen=True)
class NonFinite:
    """Where an input had non-finite values: a boolean mask over its axes but ``channel``
    (a pixel counts when any of its channels is not finite), and the counts."""

    tensor_id: str
    axes: tuple[str, ...]
    mask: np.ndarray
    n_nan: int
    n_inf: int
    n_values: int

    @property
    def n_pixels(self) -> int:
        return int(self.mask.sum())


def fill_request(axes: Sequence[str], tensor_id: str) -> StatRequest:
    """The statistic :func:`fill_non_finite` fills with: the median of each channel's finite
    values (for :func:`~microzoo.runtime.stats.stream_statistics`; pass its value as ``fill``)."""
    return StatRequest(str(tensor_id), "median", tuple(str(a) for a in axes if str(a) != "channel"))


def fill_non_finite(
    data: np.ndarray, axes: Sequence[str], tensor_id: str, *, fill: np.ndarray | None = None
) -> tuple[np.ndarray, NonFinite | None]:
    """``data`` with each non-finite value replaced by the median of its channel's finite values
    (0 where a channel has none), and where they were; ``data`` itself when all are finite.

    ``fill``: the medians of the whole tensor (:func:`fill_request`, size 1 but on ``channel``),
    when ``data`` is a tile of it; then a tile is filled as the whole tensor would be.
    """
    if data.dtype.kind not in "fc":
        return data, None
    finite = np.isfinite(data)
    if finite.all():
        return data, None
    axes = tuple(axes)
    channel = axes.index("channel") if "channel" in axes else None
    others = tuple(i for i in range(data.ndim) if i != channel)
    median = finite_median(data, others) if fill is None else np.asarray(fill)
    median = np.nan_to_num(median, nan=0.0).astype(data.dtype)
    filled = np.where(finite, data, median)
    mask = ~finite.all(axis=channel) if channel is not None else ~finite
    n_nan = int(np.isnan(data).sum())
    return filled, NonFinite(
        tensor_id,
        tuple(a for a in axes if a != "channel"),
        mask,
        n_nan=n_nan,
        n_inf=int((~finite).sum()) - n_nan,
        n_values=int(data.size),
    )


def mark_non_finite(output: np.ndarray, axes: Sequence[str], where: NonFinite) -> bool:
    """Set NaN in ``output`` (in place) at the pixels ``where`` names; ``False`` when the output
    cannot hold NaN or is not laid out like the input (then it is left as it is)."""
    axes = tuple(axes)
    if output.dtype.kind not in "fc" or not output.flags.writeable:
        return False
    extra = [a for a in axes if a not in where.axes]
    if any(a not in axes for a in where.axes) or any(a not in ("channel",) for a in extra):
        return False
    sizes = dict(zip(axes, output.shape, strict=True))
    if any(sizes[a] != n for a, n in zip(where.axes, where.mask.shape, strict=True)):
        return False
    order = [a for a in axes if a in where.axes]
    mask = np.transpose(where.mask, [where.axes.index(a) for a in order])
    mask = np.expand_dims(mask, [axes.index(a) for a in extra]) if extra else mask
    output[np.broadcast_to(mask, output.shape)] = np.nan
    return True


def describe(where: NonFinite, marked: Sequence[str], unmarked: Sequence[str]) -> str:
    """The notice: how many pixels were not finite and what became of them."""
    kinds = " and ".join(f"{n} {what}" for n, what in ((where.n_nan, "NaN"), (where.n_inf, "infinite")) if n)
    text = (
        f"input '{where.tensor_id}': {where.n_pixels} of {where.mask.size} pixels were not finite "
        f"({kinds} value(s)); the model saw the median of their channel there, and the statistics "
        "of the preprocessing leave them out"
    )
    if marked:
        text += f"; they are NaN in the output(s) {', '.join(marked)}"
    if unmarked:
        text += (
            f"; the output(s) {', '.join(unmarked)} cannot show them (not a float image laid out "
            "like the input) and hold the model's guess there"
        )
    return text
