"""Read TIFF, OME-TIFF and BigTIFF files: whole, or lazily by tile or strip.

Lazily (``lazy=True``): an uncompressed, contiguous image is memory-mapped; any other is opened
through tifffile's Zarr store (``aszarr``), so a region read decodes only the tiles or strips it
covers (a file stored as one strip per plane decodes whole planes). The OME-TIFFs microzoo
writes (axes order and singleton axes in their description) are given back in their own axes
order, lazily too (:class:`LazyArray` transposes each region it reads). Pyramids (OME-TIFF
sub-resolutions) have their levels; ``level`` picks one.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.errors import AxesError, ImageError
from microzoo.io.axes import check_axes
from microzoo.io.read import _TIME_TO_SECONDS, OME_AXES_TAG, Read, no_level_message, normalize_unit

__all__ = ["LazyArray", "read_tiff"]

# tifffile's axes codes; S (samples) is a channel axis, others (I, Q, ...) are unknown
_TIFF_LETTERS = {"T": "t", "C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x"}
Shape = tuple[int, ...]


class LazyArray:
    """A read-only array that reads only the region asked for.

    Wraps a lazy array (a ``zarr.Array`` over a TIFF, ...) and can show it without some of its
    length-1 axes (``drop``) and with its other axes reordered (``order``: the wrapped array's
    axis for each axis shown). ``self[region]`` (slices, integers, ``...``) returns a NumPy array;
    ``np.asarray(self)`` reads everything. ``close()`` (or garbage collection) closes the file.
    """

    def __init__(self, array: Any, *, drop: Sequence[int] = (), order: Sequence[int] | None = None,
                 close: Callable[[], None] | None = None) -> None:  # fmt: skip
        self._array = array
        kept = [i for i in range(len(array.shape)) if i not in set(drop)]
        self._drop = tuple(drop)
        self._order = tuple(kept if order is None else order)
        if sorted(self._order) != kept or any(array.shape[i] != 1 for i in self._drop):
            raise ValueError(f"drop {drop} and order {order} do not fit shape {array.shape}")
        self.shape: Shape = tuple(int(array.shape[i]) for i in self._order)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        chunks = getattr(array, "chunks", None)
        self.chunks: Shape | None = None if chunks is None else tuple(int(chunks[i]) for i in self._order)
        self._finalizer = weakref.finalize(self, close) if close is not None else None

    def __getitem__(self, key: Any) -> np.ndarray:
        key = _full_key(key, self.ndim)
        base: list[Any] = [0 if i in self._drop else slice(None) for i in range(len(self._array.shape))]
        for axis, item in zip(self._order, key, strict=True):
            base[axis] = item
        block = np.asarray(self._array[tuple(base)])
        remaining = [i for i, item in enumerate(base) if not isinstance(item, int)]
        wanted = [axis for axis, item in zip(self._order, key, strict=True) if not isinstance(item, int)]
        return block.transpose([remaining.index(axis) for axis in wanted])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype, copy=False)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyArray(shape={self.shape}, dtype={self.dtype}, chunks={self.chunks})"

    def close(self) -> None:
        """Close the file it reads (idempotent)."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> LazyArray:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _full_key(key: Any, ndim: int) -> tuple[Any, ...]:
    """``key`` as one slice or integer per axis (``...`` expanded, integers made non-negative)."""
    key = key if isinstance(key, tuple) else (key,)
    if sum(item is Ellipsis for item in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if Ellipsis in key:
        at = key.index(Ellipsis)
        key = key[:at] + (slice(None),) * (ndim - len(key) + 1) + key[at + 1 :]
    key = key + (slice(None),) * (ndim - len(key))
    if len(key) != ndim or not all(isinstance(item, (slice, int, np.integer)) for item in key):
        raise IndexError(f"index {key} does not fit {ndim} dimensions: give slices or integers")
    return tuple(int(item) if isinstance(item, (int, np.integer)) else item for item in key)


def read_tiff(path: Path, *, level: int = 0, lazy: bool = False) -> Read:
    """``(data, axes or None, pixel_size or None, unit or None, levels)`` of the file's first series."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        if not 0 <= level < len(series.levels):
            raise ImageError(no_level_message(path, level, len(series.levels)))
        layout, axes = None, _tiff_axes(series.axes)
        if tif.is_ome and tif.ome_metadata:
            pixels, description = _ome_pixels(tif.ome_metadata)
            pixel_size, unit = _ome_pixel_size(pixels)
            if description.startswith(OME_AXES_TAG):
                layout = _own_ome_layout(series, description.removeprefix(OME_AXES_TAG))
        else:
            pixel_size, unit = _tiff_pixel_size(tif)
        chosen = series.levels[level]
        if layout is not None:
            drop, order, axes = layout
            levels = tuple(tuple(int(s.get_shape(False)[i]) for i in order) for s in series.levels)
        else:
            levels = tuple(tuple(int(n) for n in s.shape) for s in series.levels)
        if lazy:
            data = _lazy_series(path, chosen, tif.byteorder, squeeze=layout is None)
            if layout is not None:
                data = LazyArray(data, drop=drop, order=order, close=getattr(data, "close", None))
        elif layout is not None:
            data = chosen.asarray(squeeze=False).squeeze(axis=drop)
            data = data.transpose([sorted(order).index(i) for i in order])
        else:
            data = chosen.asarray()
        return data, axes, pixel_size, unit, levels


def _lazy_series(path: Path, series: Any, byteorder: str, *, squeeze: bool) -> Any:
    """A memory map of an uncompressed contiguous series, else a :class:`LazyArray` over its Zarr store."""
    import zarr

    shape = series.get_shape(squeeze)
    offset = series.dataoffset
    if offset is not None and byteorder == "<" and sys.byteorder == "little":  # native order only
        return np.memmap(path, dtype=np.dtype(byteorder + series.dtype.char), mode="r", offset=offset, shape=shape)
    store = series.aszarr(squeeze=squeeze)
    return LazyArray(zarr.open_array(store, mode="r"), close=store.close)


def _tiff_axes(codes: str) -> str | None:
    """Our letters for tifffile's axes codes, or None if any is unknown (I, Q, ...)."""
    if any(c not in _TIFF_LETTERS for c in codes):
        return None
    letters = [_TIFF_LETTERS[c] for c in codes]
    return "".join(letters) if len(set(letters)) == len(letters) else None


def _own_ome_layout(series: Any, axes: str) -> tuple[tuple[int, ...], tuple[int, ...], str] | None:
    """How to restore the axes order and singleton axes of an OME-TIFF that microzoo wrote:
    ``(length-1 axes to drop, the stored axis for each axis of ``axes``, axes)``, in the
    unsqueezed stored layout; None when the file does not fit its description."""
    try:
        axes = check_axes(axes)
    except AxesError:
        return None
    shape = series.get_shape(False)
    codes = series.get_axes(False)
    modulo = next((a for a in axes if a in "bi"), None)
    letters = [_TIFF_LETTERS.get(c, modulo) if c != "S" else "s" for c in codes]
    if any(letter is None for letter in letters):  # an axis code of tifffile's the description does not explain
        return None
    found = [str(letter) for letter in letters]
    keep = [i for i, a in enumerate(found) if a in axes]
    drop = tuple(i for i, a in enumerate(found) if a not in axes)
    if sorted(found[i] for i in keep) != sorted(axes) or any(shape[i] != 1 for i in drop):
        return None
    return drop, tuple(keep[[found[i] for i in keep].index(a)] for a in axes), axes


def _ome_pixels(xml: str) -> tuple[dict[str, Any], str]:
    import tifffile

    ome = tifffile.xml2dict(xml).get("OME", {})
    image = ome.get("Image", {})
    if isinstance(image, list):
        image = image[0]
    return image.get("Pixels", {}), str(image.get("Description") or "")


def _ome_pixel_size(pixels: Mapping[str, Any]) -> tuple[dict[str, float] | None, str | None]:
    sizes: dict[str, float] = {}
    unit = None
    for letter in "zyx":
        value = pixels.get(f"PhysicalSize{letter.upper()}")
        if value is not None:
            sizes[letter] = float(value)
            unit = normalize_unit(pixels.get(f"PhysicalSize{letter.upper()}Unit", "µm"))
    step = pixels.get("TimeIncrement")
    factor = _TIME_TO_SECONDS.get(str(pixels.get("TimeIncrementUnit", "s")).lower())
    if step is not None and factor is not None:
        sizes["t"] = float(step) * factor
    return sizes or None, unit


def _tiff_pixel_size(tif: Any) -> tuple[dict[str, float] | None, str | None]:
    """Pixel size from ImageJ metadata and resolution tags, or centimeter resolution tags."""
    page = tif.pages.first
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None, None
    res = [tags[n].value for n in ("YResolution", "XResolution")]
    per_unit = [num / den if den else 0.0 for num, den in res]
    if min(per_unit) <= 0:
        return None, None
    sizes = {"y": 1.0 / per_unit[0], "x": 1.0 / per_unit[1]}
    meta = tif.imagej_metadata
    if meta is not None:
        unit = normalize_unit(meta.get("unit"))
        if unit is None:
            return None, None
        if meta.get("spacing"):
            sizes["z"] = float(meta["spacing"])
        if meta.get("finterval"):
            sizes["t"] = float(meta["finterval"])
        return sizes, unit
    if int(getattr(page, "resolutionunit", 0)) == 3:  # centimeter
        return {a: v * 1e4 for a, v in sizes.items()}, "micrometer"
    return None, None  # inches: a screen resolution (e.g. 72 dpi), not a pixel size
