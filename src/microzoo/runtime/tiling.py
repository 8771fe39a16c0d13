"""Tile planning: which part of the input each forward pass reads, and what it keeps.

A pure computation over shapes. :func:`plan_tiles` turns a model's size rules
(:mod:`microzoo.runtime.geometry`) and the whole input's shape into a :class:`TilePlan`;
the in-memory, streaming-Zarr and Dask predictors all follow the same plan.
:func:`extract_tile` is the only function that touches data.

Two neighbouring tiles along one axis, in whole-input coordinates::

    tile 0:  ├─ halo ─┼──────── inner ────────┼─ halo ─┤
    tile 1:                          ├─ halo ─┼──────── inner ────────┼─ halo ─┤
                      ┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━➔ image
                      0

    Tile 0 starts a halo before the image: that part is padding (``extract_tile``,
    reflect). Each tile keeps only its inner region of the output; inner regions meet.

Tiles overlap by twice the halo; the model's output halo is cropped from each tile and the
inner regions (``Tile.outputs[...]``) cover the whole output exactly once. Where the tile
would reach past the image, the outside part is padded (``extract_tile``), so the stitched
result equals the whole-image result wherever the model's receptive field fits the halo.
The last tile along an axis is shifted back inside the image (less padding; as in
bioimageio.core) and keeps its whole inner region; its neighbour keeps only the rest
(``last_keeps_inner=True``, the in-memory default, identical to core). Streaming plans with
``last_keeps_inner=False``: tile ``k`` keeps exactly ``[k*d, (k+1)*d)`` of each tiled output
axis (``d`` the stride, ``TilePlan.output_chunks``) and the last tile the rest, so every chunk
of that grid is written by one tile only (concurrent writers never share a chunk).

Coordinates: a tile reading input ``[a, a + T)`` of an axis gives an output whose element
``i`` is element ``a * ratio + i`` of the whole output, where ``ratio`` is output pixels per
input pixel (``input scale / output scale``); a size ``offset`` only changes how many
elements there are (as for a model that crops its own border).

Memory estimate (bytes per forward, used to pick tile sizes and the batch size)::

    batch_size * (input tile elements + output tile elements) * 4 bytes * ACTIVATION_FACTOR

summed over all input and output tensors; ``ACTIVATION_FACTOR = 64`` stands for the
network's intermediate activations (a 2D U-Net with 32 base features keeps about that many
full-resolution feature maps per input plus output channel). The default budget is
:func:`microzoo.runtime.resources.memory_budget` (a quarter of the available memory, at most
8 GiB), the same as for prediction.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TypeGuard, get_args

import numpy as np

from microzoo.errors import TilingError
from microzoo.runtime._tile_grid import Group, Key, make_groups
from microzoo.runtime._tile_sizes import (
    ACTIVATION_FACTOR,
    BYTES_PER_ELEMENT,
    Shapes,
    batch_allowed,
    check_shapes,
    choose_tile_sizes,
    estimate_forward_bytes,
    freeze,
    output_shapes,
    tile_shapes,
)
from microzoo.runtime.geometry import ModelGeometry, geometry_from_descr
from microzoo.runtime.resources import memory_budget as memory_budget_or_default

__all__ = [
    "ACTIVATION_FACTOR",
    "BYTES_PER_ELEMENT",
    "Tile",
    "TilePlan",
    "estimate_forward_bytes",
    "extract_tile",
    "geometry_from_descr",
    "plan_tiles",
]

PadMode = Literal["reflect", "symmetric", "edge", "constant"]
PAD_MODES: tuple[PadMode, ...] = get_args(PadMode)

Region = tuple[slice, ...]


@dataclass(frozen=True)
class Tile:
    """One forward pass's worth of one sample.

    Attributes
    ----------
    index
        Position in ``TilePlan.tiles``.
    sample
        The batch index of the input sample this tile reads.
    inputs
        Per input tensor, the region to read (slices in the tensor's axis order, whole-input
        coordinates, possibly reaching outside the image: ``extract_tile`` pads there).
    outputs
        Per output tensor, ``(inner_in_tile, inner_in_output)``: the part of this tile's raw
        model output to keep (halo cropped) and where it goes in the whole output.
    """

    index: int
    sample: int
    inputs: Mapping[str, Region]
    outputs: Mapping[str, tuple[Region, Region]]


@dataclass(frozen=True)
class TilePlan:
    """How to cut the inputs into equally shaped tiles and stitch the outputs.

    Shapes are per tensor id, per axis id; ``-1`` marks a data-dependent output size.
    """

    geometry: ModelGeometry
    input_shapes: Shapes
    input_tile_shapes: Shapes
    input_halos: Shapes
    output_tile_shapes: Shapes
    output_shapes: Shapes
    tiles: tuple[Tile, ...]
    batch_size: int
    output_chunks: Shapes = field(default_factory=lambda: MappingProxyType({}))
    """Per output tensor and axis: the stride one tile keeps along a tiled axis (the whole
    size where one tile covers it), 1 for the batch axis, the whole size for other axes. Only
    with ``last_keeps_inner=False`` does every tile write whole chunks of this grid."""

    @property
    def n_tiles(self) -> int:
        """The number of tiles (forward passes of one sample)."""
        return len(self.tiles)

    @property
    def bytes_per_forward(self) -> int:
        """Estimated memory of one forward pass of ``batch_size`` tiles (module docstring)."""
        return estimate_forward_bytes(self.input_tile_shapes, self.output_tile_shapes, batch_size=self.batch_size)

    def batches(self) -> Iterator[tuple[Tile, ...]]:
        """The tiles in groups of ``batch_size`` (the last group may be smaller)."""
        for start in range(0, self.n_tiles, self.batch_size):
            yield self.tiles[start : start + self.batch_size]


def plan_tiles(
    geometry: ModelGeometry,
    input_shapes: Shapes,
    *,
    tile: Mapping[str, int] | None = None,
    memory_budget: int | None = None,
    batch_size: int | None = None,
    last_keeps_inner: bool = True,
) -> TilePlan:
    """Plan the tiles for inputs of the given whole shapes.

    Parameters
    ----------
    geometry
        The model's size rules (:func:`geometry_from_descr`).
    input_shapes
        ``input_shapes[tensor_id][axis_id]``: the whole, unpadded input size per axis.
    tile
        Wanted tile size per axis id (e.g. ``{"y": 256, "x": 256}``), rounded up to the
        nearest size the model accepts. Default: the largest tile within the budget.
    memory_budget
        Bytes one forward pass may use (estimate in the module docstring); default 2 GiB.
        When given, a plan whose smallest forward exceeds it is refused.
    batch_size
        Tiles per forward pass. Default: as many as fit the budget if the model's batch
        axis allows it, else 1.
    last_keeps_inner
        True (in memory): the last tile keeps its whole inner region, as bioimageio.core's
        blocks do. False (streaming): kept regions lie on the grid of ``output_chunks``.

    Returns
    -------
    TilePlan

    Raises
    ------
    TilingError
        The shapes do not fit the model, a requested tile or batch size is invalid, or no
        tile fits the budget.
    """
    shapes, n_samples = check_shapes(geometry, input_shapes)
    groups = make_groups(geometry, shapes)
    for g in groups:
        g.chunk_aligned = not last_keeps_inner
    budget = memory_budget_or_default(memory_budget)
    can_batch = batch_allowed(geometry, shapes)
    if batch_size is not None:
        if batch_size < 1:
            raise TilingError(f"batch_size must be at least 1, not {batch_size}")
        if batch_size > 1 and not can_batch:
            raise TilingError(
                f"this model takes one sample per forward pass (its batch axis has size 1 "
                f"or it has none); batch_size={batch_size} is not possible: use 1"
            )
    ks = choose_tile_sizes(
        geometry,
        shapes,
        groups,
        tile or {},
        budget=budget,
        strict=memory_budget is not None,
        batch_size=batch_size or 1,
    )
    sizes = {g.key: g.size(k) for g, k in zip(groups, ks, strict=True)}
    in_tiles, out_tiles = tile_shapes(geometry, shapes, groups, sizes)
    tiles = _make_tiles(geometry, shapes, groups, sizes, in_tiles, out_tiles, n_samples)

    per_tile = estimate_forward_bytes(in_tiles, out_tiles)
    if batch_size is None:
        batch_size = max(1, min(len(tiles), budget // per_tile)) if can_batch else 1
    batch_size = max(1, min(batch_size, len(tiles)))
    return TilePlan(
        geometry=geometry,
        input_shapes=freeze(shapes),
        input_tile_shapes=in_tiles,
        input_halos=freeze({t: {k[1]: g.halo_of(k) for g in groups for k in g.members if k[0] == t} for t in shapes}),
        output_tile_shapes=out_tiles,
        output_shapes=output_shapes(geometry, shapes, groups, n_samples),
        tiles=tuple(tiles),
        batch_size=batch_size,
        output_chunks=_output_chunks(geometry, shapes, groups, sizes),
    )


def _output_chunks(
    geometry: ModelGeometry, shapes: dict[str, dict[str, int]], groups: list[Group], sizes: dict[str, int]
) -> Shapes:
    whole = output_shapes(geometry, shapes, groups, 1)
    chunks = {t.id: dict(whole[t.id]) for t in geometry.outputs}
    for g in groups:
        for target in g.targets:
            chunks[target.key[0]][target.key[1]] = g.chunk(target, sizes[g.key])
    return freeze(chunks)


def _is_pad_mode(mode: str) -> TypeGuard[PadMode]:
    return mode in PAD_MODES


def extract_tile(array: Any, region: tuple[slice, ...], *, pad_mode: str = "reflect") -> np.ndarray:
    """Read ``region`` of ``array``, padding where it reaches outside.

    Parameters
    ----------
    array
        The whole input (anything sliceable to a NumPy array: Zarr, Dask, memmap).
    region
        One slice per axis with explicit start and stop (``Tile.inputs[tensor_id]``);
        starts may be negative and stops past the end.
    pad_mode
        ``"reflect"`` (mirror without repeating the edge, as ``numpy.pad``), ``"symmetric"``,
        ``"edge"`` or ``"constant"`` (zeros). Padding mirrors the whole image, not just the
        part read, so a tile equals the same region of the padded whole image.
        (bioimageio.core 0.11 uses the input's ``pad`` from the description,
        ``TensorGeometry.pad_mode``, else ``"symmetric"``; pass that to match it.)

    Returns
    -------
    numpy.ndarray
        An array of the region's shape.
    """
    if not _is_pad_mode(pad_mode):
        raise TilingError(f"unknown pad_mode {pad_mode!r}: use one of {', '.join(PAD_MODES)}")
    if len(region) != array.ndim:
        raise TilingError(
            f"the tile region has {len(region)} axes but the array has {array.ndim}: "
            "pass an array with the tensor's axes in the model's order"
        )
    read: list[slice] = []
    pads: list[tuple[int, int]] = []
    for sl, size in zip(region, array.shape, strict=True):
        start, stop = sl.start, sl.stop
        left, right = max(0, -start), max(0, stop - size)
        lo, hi = max(0, start), min(size, stop)
        if left:  # reflection needs the pixels mirrored into the padding
            hi = max(hi, min(size, left + 1))
        if right:
            lo = min(lo, max(0, size - right - 1))
        if hi <= lo:
            raise TilingError(f"tile region {start}:{stop} lies outside an axis of size {size}")
        read.append(slice(lo, hi))
        pads.append((left, right))
    part = np.asarray(array[tuple(read)])
    if any(p != (0, 0) for p in pads):
        part = np.pad(part, pads, mode=pad_mode)
    crop = tuple(
        slice(sl.start - (r.start - p[0]), sl.stop - (r.start - p[0]))
        for sl, r, p in zip(region, read, pads, strict=True)
    )
    return part[crop]


def _make_tiles(
    geometry: ModelGeometry,
    shapes: dict[str, dict[str, int]],
    groups: list[Group],
    sizes: dict[str, int],
    in_tiles: Shapes,
    out_tiles: Shapes,
    n_samples: int,
) -> list[Tile]:
    placements = [g.place(sizes[g.key]) for g in groups]
    where: dict[Key, tuple[int, Group]] = {k: (i, g) for i, g in enumerate(groups) for k in g.members}
    kept: dict[Key, int] = {t.key: i for i, g in enumerate(groups) for t in g.targets}
    tiles: list[Tile] = []
    grid = list(itertools.product(*(range(len(p[0])) for p in placements)))
    for sample, pos in itertools.product(range(n_samples), grid):
        inputs: dict[str, Region] = {}
        for t in geometry.inputs:
            if t.id not in shapes:
                continue
            region = []
            for a in t.axes:
                size = in_tiles[t.id][a.id]
                if (t.id, a.id) in where:
                    i, g = where[(t.id, a.id)]
                    start = int(placements[i][0][pos[i]] * g.members[(t.id, a.id)].ratio)
                    region.append(slice(start, start + size))
                elif a.kind == "batch":
                    region.append(slice(sample, sample + 1))
                else:
                    region.append(slice(0, size))
            inputs[t.id] = tuple(region)
        outputs: dict[str, tuple[Region, Region]] = {}
        for t in geometry.outputs:
            inner, whole = [], []
            for a in t.axes:
                if (t.id, a.id) in kept:
                    i = kept[(t.id, a.id)]
                    origin, lo, hi = placements[i][1][(t.id, a.id)][pos[i]]
                    inner.append(slice(lo - origin, hi - origin))
                    whole.append(slice(lo, hi))
                elif a.kind == "batch":
                    inner.append(slice(0, 1))
                    whole.append(slice(sample, sample + 1))
                else:
                    size = out_tiles[t.id][a.id]
                    inner.append(slice(0, None if size < 0 else size))
                    whole.append(slice(0, None if size < 0 else size))
            outputs[t.id] = (tuple(inner), tuple(whole))
        tiles.append(Tile(len(tiles), sample, MappingProxyType(inputs), MappingProxyType(outputs)))
    return tiles
