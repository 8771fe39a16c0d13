"""Instance stitching: one label per object when an instance network runs tile by tile.

An instance network's three output maps (foreground, boundary, distance;
:mod:`microzoo.runtime.instances`) are decoded into labels with :func:`instances_from_output`.
When the whole output does not fit in memory it is decoded tile by tile, and an object cut by a
tile edge must still get one label. The rules, each a function here:

1. **Decode each tile on its whole output**, halo included (:func:`tile_objects`), cropped to
   the part inside the image (the padding a tile reads beyond the image border mirrors objects).
2. **An object belongs to the tile that holds its centre**: the floor of its mean pixel
   coordinate, computed with integers in whole-output coordinates, lies in exactly one tile's
   kept region (``Tile.outputs``). Tiles that decode an object alike agree on its centre, so
   it is kept once.
3. **Ids by tile index, not completion order**: ``tile.index * 2**16 + local`` (local ids
   1..n in decoding order; a tile keeping 65536 objects or more is refused: use smaller tiles).
   Once all tiles are done, :func:`first_ids` makes the ids consecutive in (tile index, local
   id) order, so the labels are the same whatever order tiles completed in.
4. **Objects are stored, not pixels**: bounding boxes and bit-packed masks in whole-output
   coordinates, one ``.npz`` per tile written atomically (:func:`save_objects`).
5. **Paint any region** (an output chunk) from the objects of the tiles whose windows overlap
   it, in tile order (:func:`paint_region`, :class:`LabelPainter`); memory is the region plus
   those objects. A pixel two objects claim (only when two tiles decoded it differently) keeps
   the first one's label.

One tile along one axis (whole-output coordinates; ``+`` an object's centre)::

    window:   ├─── halo ───┼──────── kept ────────┼─── halo ───┤
    objects:    (-+-)   (---+--)  (-+-)   (--+--)   (--+-)  (+)
                 a         b        c        d        e      f
              the tile decodes all six and keeps b, c and d: their centres lie in its kept
              region, though b reaches into the halo; a belongs to the tile before, e and f
              to the tile after (which decodes e and f whole in its own window)

Stitched labels equal whole-image decoding (up to renumbering) when every kept object, with the
clump of touching objects it is part of, lies inside its tile's window without reaching its
outer edge: decoding is local to a clump (:mod:`microzoo.runtime.instances`), so the tile then
decodes it exactly as the whole image does. A kept object whose clump reaches the window's
outer edge (not the image border; within ``edge_band`` pixels of it, where a network's output
near the tile's edge may differ from the whole image's) may be cut, kept twice or split; such
objects are counted and reported (:func:`cut_objects_notice`): use larger tiles (a larger
halo) for large objects.

Label coordinates are the output tensor's axes without its channel axis: the batch axis (one
item per tile, never decoded across) and the spatial axes, in the tensor's order.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from microzoo.errors import DataError, OutputError, TilingError
from microzoo.io.atomic import atomic_output
from microzoo.runtime.geometry import TensorGeometry
from microzoo.runtime.instances import FOREGROUND, InstanceSettings, check_instance_output, instances_from_output
from microzoo.runtime.tiling import Tile, TilePlan

Region = tuple[slice, ...]

#: Ids of a tile's objects are ``tile.index * TILE_ID_BASE + local``, local in 1..TILE_ID_BASE - 1.
TILE_ID_BASE = 2**16
#: The largest label id the stitched labels (uint32) can hold.
MAX_LABEL = 2**32 - 1


@dataclass(frozen=True)
class TileWindow:
    """Where one tile's output lies, in label coordinates (the output's axes but the channel).

    ``raw`` is the tile's whole output (it may reach outside the image), ``kept`` the region
    the tile keeps, ``shape`` the whole label image; ``item_axes`` (the batch axis) hold one
    item per tile and are not decoded across.
    """

    index: int
    raw: Region
    kept: Region
    shape: tuple[int, ...]
    item_axes: tuple[int, ...] = ()

    @property
    def inside(self) -> Region:
        """``raw`` clipped to the image."""
        return tuple(slice(max(0, s.start), min(n, s.stop)) for s, n in zip(self.raw, self.shape, strict=True))

    @property
    def crop(self) -> Region:
        """``inside`` relative to ``raw``: the part of the tile's output to decode."""
        return tuple(slice(i.start - r.start, i.stop - r.start) for i, r in zip(self.inside, self.raw, strict=True))


@dataclass(frozen=True)
class TileObjects:
    """The objects one tile keeps: boxes ``(n, 2, ndim)`` ([start, stop) per axis, label
    coordinates), a boolean mask per box, and whether each may be cut (its clump of touching
    objects reaches an outer edge of the tile that is not the image border)."""

    index: int
    boxes: np.ndarray
    masks: tuple[np.ndarray, ...]
    may_be_cut: np.ndarray

    @property
    def ids(self) -> np.ndarray:
        """The objects' ids before renumbering: ``index * TILE_ID_BASE + 1..n``."""
        return self.index * TILE_ID_BASE + np.arange(1, len(self.masks) + 1, dtype=np.int64)


def tile_window(plan: TilePlan, tile: Tile, tensor: TensorGeometry) -> TileWindow:
    """The window of ``tile`` in the label image of output ``tensor`` (see :class:`TileWindow`)."""
    inner_in_tile, inner_in_output = tile.outputs[tensor.id]
    tile_shape, whole_shape = plan.output_tile_shapes[tensor.id], plan.output_shapes[tensor.id]
    raw, kept, shape = [], [], []
    for axis, in_tile, in_output in zip(tensor.axes, inner_in_tile, inner_in_output, strict=True):
        if axis.kind == "channel":
            continue
        if axis.kind == "batch":
            raw.append(in_output)
        else:
            start = in_output.start - in_tile.start
            raw.append(slice(start, start + tile_shape[axis.id]))
        kept.append(in_output)
        shape.append(whole_shape[axis.id])
    items = tuple(i for i, a in enumerate(a for a in tensor.axes if a.kind != "channel") if a.kind == "batch")
    return TileWindow(tile.index, tuple(raw), tuple(kept), tuple(shape), item_axes=items)


def instance_maps(output: np.ndarray, tensor: TensorGeometry, *, item: int = 0) -> np.ndarray:
    """The three maps ``(3, *spatial)`` of item ``item`` of a tile's output in ``tensor``'s axes."""
    kinds = [a.kind for a in tensor.axes]
    if kinds.count("channel") != 1:
        raise DataError(f"output {tensor.id!r} has no channel axis: it is not an instance output (3 maps)")
    index = tuple(item if k == "batch" else slice(None) for k in kinds)
    kept_kinds = [k for k in kinds if k != "batch"]
    return check_instance_output(np.moveaxis(np.asarray(output)[index], kept_kinds.index("channel"), 0))


def tile_objects(
    maps: np.ndarray, window: TileWindow, *, settings: InstanceSettings, edge_band: int = 1
) -> TileObjects:
    """Decode one tile's whole output ``maps`` and keep the objects whose centre lies in
    ``window.kept`` (module docstring).

    ``maps`` is ``(3, *spatial)``, of the spatial shape of ``window.raw`` (halo and any part
    beyond the image included: that part is cropped) or of ``window.inside`` (cropped already).
    A kept object may be cut when its clump reaches into the outer ``edge_band`` pixels of a
    cut edge: 1 for maps that are exact up to the edge, more where a network's output near
    the tile's edge differs from the whole image's (it saw padding there).
    """
    decoded = [i for i in range(len(window.raw)) if i not in window.item_axes]
    raw_shape = tuple(window.raw[i].stop - window.raw[i].start for i in decoded)
    inside_shape = tuple(window.inside[i].stop - window.inside[i].start for i in decoded)
    if tuple(maps.shape[1:]) == raw_shape:
        inside = maps[(slice(None), *(window.crop[i] for i in decoded))]
    elif tuple(maps.shape[1:]) == inside_shape:
        inside = maps
    else:
        raise DataError(
            f"tile {window.index}: its output maps have shape {maps.shape[1:]}, the plan says {raw_shape} "
            f"({inside_shape} inside the image)"
        )
    labels = instances_from_output(inside, settings=settings)
    at_edge = _clumps_at_cut_edges(inside[FOREGROUND] > settings.foreground_threshold, window, edge_band)
    objects = _kept_objects(np.expand_dims(labels, window.item_axes), np.expand_dims(at_edge, window.item_axes), window)
    if len(objects.masks) >= TILE_ID_BASE:
        raise TilingError(
            f"tile {window.index} keeps {len(objects.masks)} objects; at most {TILE_ID_BASE - 1} fit in one "
            "tile's ids: use smaller tiles (--tile)"
        )
    return objects


def _kept_objects(labels: np.ndarray, at_edge: np.ndarray, window: TileWindow) -> TileObjects:
    """The objects of ``labels`` (the window's part inside the image) whose centre lies in
    ``window.kept``; ``at_edge`` marks the pixels whose clump reaches a cut edge."""
    origin = np.array([s.start for s in window.inside], dtype=np.int64)
    kept_lo = np.array([s.start for s in window.kept], dtype=np.int64)
    kept_hi = np.array([s.stop for s in window.kept], dtype=np.int64)
    boxes, masks, may_be_cut = [], [], []
    for local, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        mask = labels[box] == local
        start = np.array([s.start for s in box], dtype=np.int64) + origin
        points = np.nonzero(mask)
        centre = np.array([int(p.sum()) for p in points], dtype=np.int64) // len(points[0]) + start  # exact
        if ((kept_lo <= centre) & (centre < kept_hi)).all():
            boxes.append(np.stack([start, start + mask.shape]))
            masks.append(mask)
            may_be_cut.append(bool(at_edge[box][mask].any()))
    boxes_array = np.array(boxes, dtype=np.int64).reshape(-1, 2, len(window.raw))
    return TileObjects(window.index, boxes_array, tuple(masks), np.array(may_be_cut, dtype=bool))


def _clumps_at_cut_edges(area: np.ndarray, window: TileWindow, band: int) -> np.ndarray:
    """The parts of ``area`` (the decoded axes) that reach into the outer ``band`` pixels of an
    edge of the window that is not the image border: objects there may be decoded differently
    than in the whole image."""
    clumps, _ = ndi.label(area)
    decoded = [i for i in range(len(window.raw)) if i not in window.item_axes]
    at_edge = []
    for axis, i in enumerate(decoded):
        inside, size = window.inside[i], window.shape[i]
        if inside.start > 0:
            at_edge.append(np.take(clumps, range(min(band, clumps.shape[axis])), axis=axis).ravel())
        if inside.stop < size:
            at_edge.append(
                np.take(clumps, range(max(0, clumps.shape[axis] - band), clumps.shape[axis]), axis=axis).ravel()
            )
    ids = np.unique(np.concatenate(at_edge)) if at_edge else np.zeros(0, dtype=clumps.dtype)
    return np.isin(clumps, ids[ids > 0])


def objects_path(folder: str | Path, index: int) -> Path:
    """The file that holds the objects of tile ``index`` in ``folder``."""
    return Path(folder) / f"tile-{index:08d}.npz"


def save_objects(folder: str | Path, objects: TileObjects) -> Path:
    """Write ``objects`` to ``folder`` atomically (boxes, bit-packed masks); return the file."""
    flat = np.concatenate([m.ravel() for m in objects.masks]) if objects.masks else np.zeros(0, dtype=bool)
    path = objects_path(folder, objects.index)
    with atomic_output(path) as tmp, open(tmp, "wb") as file:
        np.savez(file, index=np.int64(objects.index), boxes=objects.boxes, masks=np.packbits(flat),
                 may_be_cut=objects.may_be_cut)  # fmt: skip
    return path


def load_objects(folder: str | Path, index: int) -> TileObjects:
    """The objects of tile ``index`` that :func:`save_objects` wrote to ``folder``."""
    path = objects_path(folder, index)
    if not path.is_file():
        raise OutputError(
            f"{path} is missing: the job folder lost the objects of tile {index}; "
            "run the command again with --overwrite to start again"
        )
    with np.load(path) as data:
        boxes, packed, may_be_cut = data["boxes"], data["masks"], data["may_be_cut"]
    sizes = np.prod(boxes[:, 1] - boxes[:, 0], axis=1)
    flat = np.unpackbits(packed, count=int(sizes.sum())).astype(bool)
    ends = np.cumsum(sizes)
    masks = tuple(
        flat[end - size : end].reshape(tuple(box[1] - box[0]))
        for box, size, end in zip(boxes, sizes, ends, strict=True)
    )
    return TileObjects(index, boxes, masks, may_be_cut)


def first_ids(counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """The final id of each tile's first object: consecutive ids in (tile index, local id) order.

    ``counts[i]`` is the number of objects tile ``i`` keeps; an object with local id ``k`` of
    tile ``i`` gets ``first_ids(counts)[i] + k - 1``.

    >>> first_ids([2, 0, 3]).tolist()
    [1, 3, 3]
    """
    per_tile = np.asarray(counts, dtype=np.int64)
    if per_tile.sum() > MAX_LABEL:
        raise OutputError(f"{per_tile.sum()} objects do not fit in 32-bit labels (at most {MAX_LABEL})")
    return 1 + np.concatenate([[0], np.cumsum(per_tile)[:-1]]).astype(np.int64)


def paint_region(region: Region, objects: Iterable[TileObjects], ids: np.ndarray) -> np.ndarray:
    """The labels (uint32) of ``region`` (label coordinates) painted from ``objects``.

    ``ids`` is :func:`first_ids` over all tiles. Objects are painted in tile order; a pixel
    already painted keeps its label (module docstring, rule 5).
    """
    lo = np.array([s.start for s in region], dtype=np.int64)
    hi = np.array([s.stop for s in region], dtype=np.int64)
    out = np.zeros(tuple(hi - lo), dtype=np.uint32)
    for tile in sorted(objects, key=lambda o: o.index):
        starts, stops = np.maximum(tile.boxes[:, 0], lo), np.minimum(tile.boxes[:, 1], hi)
        for local in np.flatnonzero((starts < stops).all(axis=1)):  # the objects in the region
            box, start, stop = tile.boxes[local], starts[local], stops[local]
            part = tile.masks[local][tuple(slice(a, b) for a, b in zip(start - box[0], stop - box[0], strict=True))]
            target = out[tuple(slice(a, b) for a, b in zip(start - lo, stop - lo, strict=True))]
            target[part & (target == 0)] = ids[tile.index] + local
    return out


def cut_objects_notice(n_may_be_cut: int) -> str | None:
    """The notice for kept objects that may be cut (``None`` when there are none)."""
    if not n_may_be_cut:
        return None
    return (
        f"{n_may_be_cut} object(s), or the clump of touching objects they belong to, reach the outer "
        "edge of the tile that keeps them: the tile's halo is smaller than they are, so they may be "
        "cut or labelled twice; predict with larger tiles (--tile) for whole objects"
    )


class LabelPainter:
    """Paints stitched labels of any region from the objects a tiled job saved in ``folder``.

    ``windows`` are all tiles' windows (:func:`tile_window`). Reads every tile's counts once
    (``n_objects``, ``n_may_be_cut``), then loads objects as regions need them, keeping those
    of the most recent ``cache`` tiles (default: enough for painting regions in tile order,
    about three rows (2-D) or planes (3-D) of tiles).
    """

    def __init__(self, folder: str | Path, windows: Sequence[TileWindow], *, cache: int | None = None) -> None:
        self.folder = Path(folder)
        self.windows = tuple(windows)
        counts = np.zeros(max((w.index for w in self.windows), default=-1) + 1, dtype=np.int64)
        may_be_cut = 0
        for window in self.windows:
            path = objects_path(self.folder, window.index)
            if not path.is_file():
                load_objects(self.folder, window.index)  # raises the missing-file error
            with np.load(path) as data:
                counts[window.index] = len(data["boxes"])
                may_be_cut += int(data["may_be_cut"].sum())
        self.ids = first_ids(counts)
        self.n_objects = int(counts.sum())
        self.n_may_be_cut = may_be_cut
        inside = np.array([[(s.start, s.stop) for s in w.inside] for w in self.windows], dtype=np.int64)
        self._lo, self._hi = inside[..., 0], inside[..., 1]
        size = cache if cache is not None else _cache_size(self._lo)
        self._load = functools.lru_cache(maxsize=size)(functools.partial(load_objects, self.folder))

    def paint(self, region: Region) -> np.ndarray:
        """The labels (uint32) of ``region``, from the tiles whose windows overlap it."""
        lo = np.array([s.start for s in region], dtype=np.int64)
        hi = np.array([s.stop for s in region], dtype=np.int64)
        near = np.flatnonzero((np.maximum(self._lo, lo) < np.minimum(self._hi, hi)).all(axis=1))
        return paint_region(region, (self._load(self.windows[i].index) for i in near), self.ids)

    @property
    def notices(self) -> tuple[str, ...]:
        """The notice about objects that may be cut (empty when none may be)."""
        notice = cut_objects_notice(self.n_may_be_cut)
        return (notice,) if notice else ()


def _cache_size(starts: np.ndarray) -> int:
    """Tiles to keep loaded when regions are painted in tile order (C order over the grid):
    three slabs of the outermost tiled axis, so every neighbour of a region stays loaded."""
    per_axis = [len(np.unique(starts[:, i])) for i in range(starts.shape[1])] if len(starts) else [1]
    tiled = [i for i, n in enumerate(per_axis) if n > 1]
    slab = int(np.prod(per_axis[tiled[0] + 1 :])) if tiled else 1
    return 3 * slab + 8


@dataclass(frozen=True)
class StitchedLabels:
    """Labels stitched from tiles in memory, with how many objects and the notices."""

    labels: np.ndarray
    n_objects: int
    notices: tuple[str, ...]


def stitch_instances(tiles: Iterable[tuple[TileWindow, np.ndarray]], *, settings: InstanceSettings) -> StitchedLabels:
    """Stitch the labels of a tiled prediction in memory; ``tiles`` gives each tile's window and
    its whole output maps (:func:`instance_maps`) in any order. The same rules as the streaming
    job (module docstring), so the result does not depend on the order."""
    pieces = list(tiles)
    if not pieces:
        raise DataError("no tiles to stitch")
    shapes = {window.shape for window, _ in pieces}
    indices = [window.index for window, _ in pieces]
    if len(shapes) != 1 or len(set(indices)) != len(indices):
        raise DataError("the tiles to stitch must be distinct tiles of one image")
    objects = [tile_objects(maps, window, settings=settings) for window, maps in pieces]
    counts = np.zeros(max(indices) + 1, dtype=np.int64)
    counts[indices] = [len(o.masks) for o in objects]
    labels = paint_region(tuple(slice(0, n) for n in shapes.pop()), objects, first_ids(counts))
    notice = cut_objects_notice(int(sum(o.may_be_cut.sum() for o in objects)))
    return StitchedLabels(labels, int(counts.sum()), (notice,) if notice else ())
