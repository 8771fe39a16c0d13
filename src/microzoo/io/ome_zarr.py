"""Write OME-Zarr images chunk by chunk: level 0, labels and a pyramid (OME-NGFF 0.4).

The layout, Zarr format 2 with ``/`` chunk keys, is what napari-ome-zarr, Fiji/MoBIE and
ome-zarr-py read::

    out.ome.zarr/
      .zgroup  .zattrs        "multiscales": axes (name, type, unit), one dataset per level
                              with its scale (level 0: the pixel size; level k: times 2**k)
      0/.zarray  0/0/3/7 ...  level 0 (dimension_separator "/")
      1/  2/ ...              the pyramid (build_pyramid), same chunk shape
      labels/.zattrs          {"labels": ["instances"]}
      labels/instances/       the same layout, with "image-label" metadata

Concurrency: each chunk is its own file, written whole (zarr's LocalStore writes a temporary and
renames it, so a killed writer leaves a chunk old or new, never half written; a chunk that is
all zeros is not stored). Threads and processes may write at the same time as long as no two
writers touch the same chunk: a region that covers part of a chunk
reads, changes and rewrites that chunk, so writers must not share chunks (give each writer
regions aligned with :attr:`OmeZarrWriter.chunks`). Only ``create``, ``create_labels`` and
``build_pyramid`` write metadata. The bytes are deterministic (Blosc-zstd level 1, byte
shuffle: the same data gives the same files on every run).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from microzoo.errors import OutputError
from microzoo.io.read import normalize_unit
from microzoo.progress import ProgressCallback

__all__ = ["NGFF_ORDER", "OmeZarrWriter"]

#: the order OME-NGFF stores axes in (time, the non-spatial b and i, channel, space)
NGFF_ORDER = "tbiczyx"
_NGFF_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
_CHUNKS_PER_WRITE = 8  # pyramid chunks computed together along the last axis (fewer, larger reads)
Region = Sequence[slice]


def _compressor() -> Any:
    import numcodecs

    # zstd level 1: ~250 MB/s per core here and ratio 2.8 on float32 nuclei (level 5: 13 MB/s, ratio 3.4)
    return numcodecs.Blosc(cname="zstd", clevel=1, shuffle=numcodecs.Blosc.SHUFFLE)


class OmeZarrWriter:
    """An OME-Zarr image (OME-NGFF 0.4) being written region by region.

    Make one with :meth:`create` (a new image) or :meth:`open` (an existing one, to resume);
    write with :meth:`write`, read back with :meth:`read`, add labels with
    :meth:`create_labels`, and make the pyramid with :meth:`build_pyramid` at the end.

    Attributes
    ----------
    path
        The OME-Zarr folder.
    axes
        Its axes letters in NGFF order (a subset of ``t b i c z y x`` in that order).
    array
        Level 0, a ``zarr.Array``.
    """

    def __init__(self, path: Path, group: Any) -> None:
        self.path = path
        self._group = group
        multiscale = group.attrs["multiscales"][0]
        self.axes = "".join(str(axis["name"]) for axis in multiscale["axes"])
        self.array = group[multiscale["datasets"][0]["path"]]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.array.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @property
    def chunks(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.array.chunks)

    @property
    def levels(self) -> tuple[tuple[int, ...], ...]:
        """The shape of each resolution level written so far."""
        datasets = self._group.attrs["multiscales"][0]["datasets"]
        return tuple(tuple(int(n) for n in self._group[d["path"]].shape) for d in datasets)

    @property
    def pixel_size(self) -> dict[str, float] | None:
        """Level 0's pixel size per axis letter (``t`` in seconds), or None when none was given."""
        multiscale = self._group.attrs["multiscales"][0]
        scale = _scale_of(multiscale["datasets"][0])
        sizes = {axis["name"]: s for axis, s in zip(multiscale["axes"], scale, strict=True)
                 if "unit" in axis and axis["name"] in "tzyx"}  # fmt: skip
        return sizes or None

    @property
    def unit(self) -> str | None:
        axes = self._group.attrs["multiscales"][0]["axes"]
        return next((axis["unit"] for axis in axes if "unit" in axis and axis["name"] in "zyx"), None)

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        shape: Sequence[int],
        dtype: DTypeLike,
        axes: str,
        chunks: Sequence[int],
        pixel_size: Mapping[str, float] | None = None,
        unit: str | None = None,
        name: str | None = None,
    ) -> OmeZarrWriter:
        """Create a new OME-Zarr image at ``path`` (which must not exist) with its level 0.

        ``axes`` are letters in NGFF order (e.g. ``"tczyx"``, ``"cyx"``, ``"zyx"``); ``chunks``
        one size per axis (cut to the shape); ``pixel_size`` per spatial letter in ``unit``
        (default micrometer) and ``t`` in seconds. The pixels start as 0 (chunks not written).
        """
        import zarr

        path = Path(path)
        shape = tuple(int(n) for n in shape)
        _check_layout(path, shape, axes, chunks)
        if path.exists():
            raise OutputError(f"{path} exists; open it to continue writing it, or remove it to start again")
        sizes = {a: float(v) for a, v in (pixel_size or {}).items() if a in axes}
        unit = normalize_unit(unit) or "micrometer"
        group = zarr.open_group(str(path), mode="w-", zarr_format=2)
        _create_level(group, "0", shape, dtype, _clip(chunks, shape))
        group.attrs["multiscales"] = [{
            "version": "0.4",
            "name": name if name is not None else path.name.split(".")[0],
            "axes": _ngff_axes(axes, sizes, unit),
            "datasets": [_dataset("0", [sizes.get(a, 1.0) for a in axes])],
        }]  # fmt: skip
        return cls(path, group)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> OmeZarrWriter:
        """Open an OME-Zarr image (or one of its labels, ``path/labels/NAME``) to write more of it."""
        import zarr

        path = Path(path)
        try:
            group = zarr.open_group(str(path), mode="r+", zarr_format=2)
            multiscale: Any = group.attrs["multiscales"][0]  # type: ignore[index]
            if multiscale.get("version") != "0.4":
                raise ValueError(f"multiscales version {multiscale.get('version')!r}, not 0.4")
            return cls(path, group)
        except Exception as exc:  # noqa: BLE001 - any failure means it is not ours to continue
            raise OutputError(
                f"cannot continue writing {path}: it is not an OME-Zarr 0.4 image in Zarr format 2 "
                f"({exc}); remove it to start again"
            ) from exc

    def write(self, region: Region, block: ArrayLike) -> None:
        """Write ``block`` into ``region`` (one slice per axis) of level 0."""
        self.array[tuple(region)] = np.asarray(block)

    def read(self, region: Region | None = None) -> np.ndarray:
        """Read ``region`` (one slice per axis; everything when None) of level 0."""
        return np.asarray(self.array[tuple(region) if region is not None else ...])

    def create_labels(self, name: str, *, dtype: DTypeLike, chunks: Sequence[int] | None = None) -> OmeZarrWriter:
        """Add a label image ``labels/NAME`` (NGFF ``image-label``) with the image's axes, pixel
        size and shape, its channel axis of length 1; listed in ``labels/.zattrs``."""
        import zarr

        if not name or "/" in name or name.startswith("."):
            raise OutputError(f"label name {name!r} must be a plain folder name, e.g. 'instances'")
        shape = tuple(1 if a == "c" else n for a, n in zip(self.axes, self.shape, strict=True))
        chunks = tuple(chunks) if chunks is not None else self.chunks
        chunks = tuple(1 if a == "c" else c for a, c in zip(self.axes, chunks, strict=True))
        labels = zarr.open_group(str(self.path / "labels"), mode="a", zarr_format=2)
        listed: list[Any] = list(labels.attrs.get("labels", []))  # type: ignore[arg-type]
        if name in listed or (self.path / "labels" / name).exists():
            raise OutputError(f"{self.path} already has labels {name!r}; open them with OmeZarrWriter.open")
        writer = OmeZarrWriter.create(self.path / "labels" / name, shape=shape, dtype=dtype, axes=self.axes,
                                      chunks=chunks, pixel_size=self.pixel_size, unit=self.unit, name=name)  # fmt: skip
        writer._group.attrs["image-label"] = {"version": "0.4", "source": {"image": "../../"}}
        labels.attrs["labels"] = [*listed, name]
        return writer

    def build_pyramid(
        self, *, method: str = "mean", min_size: int = 256, progress: ProgressCallback | None = None
    ) -> tuple[tuple[int, ...], ...]:
        """Write levels 1, 2, ... by halving y and x (and z when it is at least as large as the
        smaller of y and x) until y and x are at most ``min_size``; return every level's shape.

        ``method``: ``"mean"`` (intensities: the mean of each 2x2(x2) block, in level 0's dtype,
        rounded for integers) or ``"nearest"`` (labels: every second pixel). Each level is
        computed chunk by chunk from the level below (memory: a few chunks). Levels a previous
        call wrote are replaced; the result is the same bytes every time.
        """
        if method not in ("mean", "nearest"):
            raise ValueError(f"method must be 'mean' or 'nearest', not {method!r}")
        multiscale = dict(self._group.attrs["multiscales"][0])
        for dataset in multiscale["datasets"][1:]:
            del self._group[dataset["path"]]
        plan = _pyramid_plan(self.axes, self.shape, min_size)
        total = sum(_count_blocks(shape, _clip(self.chunks, shape)) for shape, _ in plan)
        done, below, factor = 0, self.array, np.ones(len(self.axes))
        datasets = [multiscale["datasets"][0]]
        for level, (shape, step) in enumerate(plan, start=1):
            target = _create_level(self._group, str(level), shape, self.dtype, _clip(self.chunks, shape))
            for region in _blocks(shape, _clip(self.chunks, shape)):
                source = tuple(slice(r.start * s, min(r.stop * s, n)) for r, s, n in zip(region, step, below.shape,
                                                                                          strict=True))  # fmt: skip
                target[region] = _downsample(np.asarray(below[source]), step, method, self.dtype)
                done += 1
                if progress:
                    progress(done, total, f"pyramid level {level}")
            factor = factor * np.asarray(step)
            datasets.append(_dataset(str(level), list(np.asarray(_scale_of(datasets[0])) * factor)))
            below = target
        multiscale["datasets"] = datasets
        multiscale["type"] = method
        self._group.attrs["multiscales"] = [multiscale]
        return self.levels


def _check_layout(path: Path, shape: tuple[int, ...], axes: str, chunks: Sequence[int]) -> None:
    order = "".join(a for a in NGFF_ORDER if a in axes)
    if not 2 <= len(shape) <= 5:
        raise OutputError(
            f"OME-Zarr holds 2 to 5 dimensions, not {len(shape)} (axes {axes!r}); write .npy or .tif instead"
        )
    if len(axes) != len(shape) or len(set(axes)) != len(axes) or order != axes or not {"y", "x"} <= set(axes):
        raise OutputError(
            f"cannot write {path}: axes {axes!r} do not fit shape {shape} in OME-NGFF order; give one "
            f"letter per dimension in the order {NGFF_ORDER} with y and x (e.g. 'cyx', not 'yxc')"
        )
    if len(chunks) != len(shape) or any(int(c) < 1 for c in chunks):
        raise OutputError(f"cannot write {path}: chunks {tuple(chunks)} must be one positive size per axis {axes!r}")


def _clip(chunks: Sequence[int], shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(max(1, min(int(c), int(n))) for c, n in zip(chunks, shape, strict=True))


def _create_level(group: Any, name: str, shape: Sequence[int], dtype: DTypeLike, chunks: Sequence[int]) -> Any:
    return group.create_array(
        name,
        shape=tuple(shape),
        dtype=np.dtype(dtype),
        chunks=tuple(chunks),
        compressors=_compressor(),
        chunk_key_encoding={"name": "v2", "separator": "/"},
        fill_value=0,
    )


def _ngff_axes(axes: str, sizes: Mapping[str, float], unit: str) -> list[dict[str, str]]:
    entries = []
    for a in axes:
        entry = {"name": a}
        if a in _NGFF_TYPES:
            entry["type"] = _NGFF_TYPES[a]
        if a in "zyx" and sizes:
            entry["unit"] = unit
        elif a == "t" and sizes:
            entry["unit"] = "second"
        entries.append(entry)
    return entries


def _dataset(path: str, scale: Sequence[float]) -> dict[str, Any]:
    return {"path": path, "coordinateTransformations": [{"type": "scale", "scale": [float(s) for s in scale]}]}


def _scale_of(dataset: Mapping[str, Any]) -> list[float]:
    return next(t["scale"] for t in dataset["coordinateTransformations"] if t["type"] == "scale")


def _pyramid_plan(axes: str, shape: tuple[int, ...], min_size: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """``(shape, step per axis)`` of each level above 0."""
    plan = []
    yx = [axes.index("y"), axes.index("x")]
    while max(shape[i] for i in yx) > min_size:
        smaller = min(shape[i] for i in yx)
        step = tuple(2 if a in "yx" or (a == "z" and n >= smaller) else 1 for a, n in zip(axes, shape, strict=True))
        shape = tuple(math.ceil(n / s) for n, s in zip(shape, step, strict=True))
        plan.append((shape, step))
    return plan


def _blocks(shape: Sequence[int], chunks: Sequence[int]) -> Iterator[tuple[slice, ...]]:
    """Regions of whole chunks in C order, up to ``_CHUNKS_PER_WRITE`` chunks along the last axis."""
    steps = [*chunks[:-1], chunks[-1] * _CHUNKS_PER_WRITE]
    for index in np.ndindex(*(math.ceil(n / s) for n, s in zip(shape, steps, strict=True))):
        yield tuple(slice(i * s, min((i + 1) * s, n)) for i, s, n in zip(index, steps, shape, strict=True))


def _count_blocks(shape: Sequence[int], chunks: Sequence[int]) -> int:
    return sum(1 for _ in _blocks(shape, chunks))


def _downsample(block: np.ndarray, step: Sequence[int], method: str, dtype: np.dtype) -> np.ndarray:
    """Halve ``block`` along the axes whose step is 2 (a last odd pixel stands alone)."""
    if method == "nearest":
        return block[tuple(slice(None, None, s) for s in step)]
    pad = [(0, -n % s) for n, s in zip(block.shape, step, strict=True)]
    if any(after for _, after in pad):  # repeat the edge pixel: the mean of the pixels there are
        block = np.pad(block, pad, mode="edge")
    split = [m for n, s in zip(block.shape, step, strict=True) for m in (n // s, s)]
    mean = block.reshape(split).mean(axis=tuple(range(1, len(split), 2)), dtype=np.float64)
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        mean = np.rint(mean)
    return mean.astype(dtype)
