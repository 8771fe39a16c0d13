"""Read images with their axes and pixel size: TIFF/OME-TIFF, PNG/JPEG, NPY, OME-Zarr.

Axes are taken from metadata (OME, ImageJ, OME-NGFF) or inferred only where that is
unambiguous (2-D -> ``"yx"``, an RGB(A) PNG/JPEG -> ``"yxc"``); anything else raises an
:class:`~microzoo.errors.AxesError` that names the plausible choices, and the caller passes
``axes``.

What is read lazily (only the region asked for is read from disk): Zarr v2/v3 arrays and
OME-Zarr (NGFF 0.4, and 0.5 under ``attrs["ome"]``) always (a ``zarr.Array``); NPY always
(memory-mapped); TIFF/OME-TIFF/BigTIFF with ``lazy=True`` (by tile or strip, see
:mod:`microzoo.io.read_tiff`). PNG and JPEG are read whole. ``level`` picks a resolution level
of a pyramid (OME-Zarr multiscales, OME-TIFF sub-resolutions) with that level's pixel size.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from microzoo.errors import AxesError, ImageError
from microzoo.io.axes import check_axes

if TYPE_CHECKING:  # pragma: no cover
    import zarr

    from microzoo.io.read_tiff import LazyArray

__all__ = [
    "IMAGE_SUFFIXES",
    "Image",
    "find_images",
    "image_format",
    "image_identity",
    "image_shape",
    "normalize_unit",
    "read_array",
    "read_image",
]

#: file name endings microzoo reads, longest first
IMAGE_SUFFIXES = (
    ".ome.zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".jpeg", ".jpg", ".npy", ".zarr",
)  # fmt: skip
_FORMATS = {
    ".ome.zarr": "zarr", ".zarr": "zarr", ".ome.tiff": "tiff", ".ome.tif": "tiff",
    ".tiff": "tiff", ".tif": "tiff", ".png": "png", ".jpeg": "jpeg", ".jpg": "jpeg",
    ".npy": "npy",
}  # fmt: skip
_UNITS = {
    "micrometer": "micrometer", "µm": "micrometer", "μm": "micrometer", "um": "micrometer",
    "micron": "micrometer", "microns": "micrometer", "\\u00b5m": "micrometer",
    "nanometer": "nanometer", "nm": "nanometer", "millimeter": "millimeter", "mm": "millimeter",
    "centimeter": "centimeter", "cm": "centimeter", "meter": "meter", "m": "meter",
    "angstrom": "angstrom", "å": "angstrom",
}  # fmt: skip
_TIME_TO_SECONDS = {"s": 1.0, "second": 1.0, "sec": 1.0, "ms": 1e-3, "millisecond": 1e-3,
                    "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}  # fmt: skip
_NGFF_LETTERS = {"t": "t", "time": "t", "c": "c", "channel": "c", "z": "z", "y": "y", "x": "x"}
OME_AXES_TAG = "microzoo axes="  # the OME Description write_image stores
_AXES_HINT = "letters: b batch, i index, c channel, t time, z y x space"
# what each reader returns: (data, axes or None, pixel_size or None, unit or None, levels)
Read = tuple[Any, str | None, dict[str, float] | None, str | None, tuple[tuple[int, ...], ...]]


@dataclass(frozen=True)
class Image:
    """An image with its axes.

    Attributes
    ----------
    data
        ``np.ndarray`` (a ``np.memmap`` for NPY), or a lazy array (``zarr.Array``,
        :class:`~microzoo.io.read_tiff.LazyArray`) with ``shape``, ``dtype``, ``ndim`` and
        ``__getitem__`` that reads only the region asked for.
    axes
        One letter per dimension from ``b i c t z y x``, e.g. ``"yx"``, ``"yxc"``, ``"tczyx"``.
    pixel_size
        Size of a pixel per spatial axis letter (in ``unit``) and time step for ``t`` (seconds),
        or None when the file does not say.
    unit
        Spatial unit, e.g. ``"micrometer"``.
    path
        The file it was read from.
    levels
        The shape of each resolution level in the file (one entry for an image that is not a
        pyramid), in the file's axes order; ``data`` is the level that was asked for.
    chunks
        The shape of the blocks the data is stored in (Zarr chunks, TIFF tiles or strips), or
        None (NumPy data, a memory map).
    """

    data: np.ndarray | zarr.Array | LazyArray
    axes: str
    pixel_size: Mapping[str, float] | None = None
    unit: str | None = None
    path: Path | None = None
    levels: tuple[tuple[int, ...], ...] = ()
    chunks: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not self.levels:
            object.__setattr__(self, "levels", (tuple(int(n) for n in self.data.shape),))


def image_format(path: str | os.PathLike[str]) -> str | None:
    """The format microzoo uses for ``path`` by its name: tiff, png, jpeg, npy, zarr or None."""
    name = Path(path).name.lower()
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return _FORMATS[suffix]
    return None


def normalize_unit(unit: str | None) -> str | None:
    """A spatial unit's full name (``"µm"``, ``"micron"`` -> ``"micrometer"``); None if unknown."""
    if not unit:
        return None
    return _UNITS.get(str(unit).strip().lower())


def read_image(path: str | os.PathLike[str], *, axes: str | None = None, level: int = 0, lazy: bool = False) -> Image:
    """Read an image with its axes and pixel size.

    Parameters
    ----------
    path
        A TIFF/OME-TIFF, PNG, JPEG, NPY file, a Zarr array or an OME-Zarr folder.
    axes
        The image's axes letters when the file does not say (or says wrongly).
    level
        The resolution level of a pyramid (0: full resolution); its pixel size is given.
    lazy
        Give TIFF data as a lazy array that reads only the tiles or strips a region needs
        (Zarr and NPY data are lazy anyway; PNG and JPEG are read whole).

    Raises
    ------
    ImageError
        The file is missing, of an unknown type, cannot be read, or has no such level.
    AxesError
        ``axes`` do not match the image, or the axes are ambiguous and were not given.
    """
    path = Path(path)
    fmt = _format_of(path)
    data, found, pixel_size, unit, levels = _open(path, fmt, level=level, lazy=lazy)
    shape = tuple(int(n) for n in data.shape)
    try:
        if axes is not None:
            final = check_axes(axes, ndim=len(shape), name=f"{path.name} (shape {shape})")
        elif found is not None and len(found) == len(shape):
            final = found
        elif len(shape) == 2:
            final = "yx"
        else:
            raise AxesError(_ambiguous_message(path, shape))
    except AxesError:
        if hasattr(data, "close"):  # a lazy TIFF's open file
            data.close()
        raise
    if pixel_size is not None:
        pixel_size = {a: v for a, v in pixel_size.items() if a in final} or None
    return Image(data=data, axes=final, pixel_size=pixel_size, unit=unit, path=path, levels=levels,
                 chunks=_storage_chunks(data))  # fmt: skip


def image_identity(path: str | os.PathLike[str], level: int = 0) -> dict[str, Any]:
    """What identifies an input for a resumable job (JSON-able, without reading the pixels).

    Absolute path, format, level, shape, dtype, storage chunks, and a ``stamp``: size and
    ``mtime_ns`` of the file, or of a Zarr store's metadata files (group and level array;
    chunk files are not looked at, so a rewrite of pixels alone in place is not noticed).
    """
    path = Path(path).absolute()
    fmt = _format_of(path)
    data = _open(path, fmt, level=level, lazy=True)[0]
    try:
        files = [path] if path.is_file() else _zarr_metadata_files(path, getattr(data, "path", ""))
        chunks = _storage_chunks(data)
        return {
            "path": str(path),
            "format": fmt,
            "level": level,
            "shape": [int(n) for n in data.shape],
            "dtype": str(np.dtype(data.dtype)),
            "chunks": None if chunks is None else list(chunks),
            "stamp": {
                str(f.relative_to(path)) if f != path else f.name: [f.stat().st_size, f.stat().st_mtime_ns]
                for f in files
            },  # fmt: skip
        }
    finally:
        if hasattr(data, "close"):
            data.close()


def _zarr_metadata_files(root: Path, array_path: str) -> list[Path]:
    names = (".zgroup", ".zattrs", ".zarray", "zarr.json")
    folders = [root] + ([root / array_path] if array_path else [])
    return [folder / name for folder in folders for name in names if (folder / name).is_file()]


def _storage_chunks(data: Any) -> tuple[int, ...] | None:
    """The shape of the blocks ``data`` is stored in (a Dask array's largest chunk), or None."""
    if isinstance(data, np.ndarray):
        return None
    chunks = getattr(data, "chunksize", None) or getattr(data, "chunks", None)  # Dask: chunksize
    if not chunks or not all(isinstance(n, (int, np.integer)) for n in chunks):
        return None
    return tuple(int(n) for n in chunks)


def _format_of(path: Path) -> str:
    """The reader's format for ``path``; ImageError when it is missing or of an unknown type."""
    fmt = image_format(path)
    if fmt is None and path.is_dir() and _is_zarr_folder(path):
        fmt = "zarr"
    if not path.exists():
        raise ImageError(f"image {path} does not exist; check the path")
    if fmt is None:
        raise ImageError(f"cannot read {path}: unknown image type; microzoo reads {', '.join(IMAGE_SUFFIXES)}")
    return fmt


def _open(path: Path, fmt: str, *, level: int, lazy: bool) -> Read:
    """``(data, axes or None, pixel_size or None, unit or None, levels)``; reader failures as ImageError."""
    from microzoo.io.read_tiff import read_tiff

    reader = {"tiff": read_tiff, "png": _read_pil, "jpeg": _read_pil, "npy": _read_npy, "zarr": _read_zarr}[fmt]
    try:
        return reader(path, level=level, lazy=lazy)
    except ImageError:
        raise
    except MemoryError as exc:  # a header can claim any size: say so, with the file's own size
        raise ImageError(
            f"cannot read {path}: the image its header describes does not fit in memory ({exc}); the "
            f"file holds {path.stat().st_size:,} bytes, so if it is much smaller its header is corrupt: "
            "export it again"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - every reader failure means an unreadable file
        raise ImageError(
            f"cannot read {path} as {fmt.upper()}: {exc}; the file may be incomplete or "
            "corrupt: check it opens in another viewer, or export it again"
        ) from exc


def image_shape(path: str | os.PathLike[str]) -> tuple[int, ...]:
    """The shape :func:`read_image` gives, from the file's header (TIFF, PNG, JPEG, NPY) or its
    lazy array (Zarr), without decoding the pixels. Raises ImageError when that fails."""
    path = Path(path)
    fmt = image_format(path)
    try:
        if fmt == "tiff":
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return tuple(int(n) for n in tif.series[0].shape)
        if fmt in ("png", "jpeg"):
            from PIL import Image as PILImage

            with PILImage.open(path) as pil:
                bands = len(pil.getbands())
                return (pil.height, pil.width, bands) if bands > 1 else (pil.height, pil.width)
        if fmt == "npy":
            return tuple(int(n) for n in _read_npy(path)[0].shape)
        if fmt == "zarr" or (fmt is None and _is_zarr_folder(path)):
            return tuple(int(n) for n in _read_zarr(path)[0].shape)
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - every header failure means an unreadable file
        raise ImageError(f"cannot read the header of {path}: {exc}; the file may be incomplete or corrupt") from exc
    raise ImageError(f"cannot read {path}: unknown image type; microzoo reads {', '.join(IMAGE_SUFFIXES)}")


def read_array(path: str | os.PathLike[str], *, axes: str | None = None) -> np.ndarray:
    """The pixels of :func:`read_image` as a NumPy array in memory (lazy Zarr data is read)."""
    return np.asarray(read_image(path, axes=axes).data)


def _ambiguous_message(path: Path, shape: tuple[int, ...]) -> str:
    """Name the plausible axes for ``shape`` and tell the user to pass --axes."""
    choices = {
        1: ["x"],
        3: ["zyx", "cyx", "tyx"] + (["yxc"] if shape[-1] <= 4 else []),
        4: ["czyx", "zcyx", "tzyx", "tcyx"] + (["zyxc"] if shape[-1] <= 4 else []),
        5: ["tczyx", "tzcyx"],
    }.get(len(shape), [])
    plausible = " or ".join(f"--axes {c}" for c in choices[:2]) or "--axes"
    listed = ", ".join(choices) if choices else "one letter per dimension"
    return (
        f"cannot tell the axes of {path.name} with shape {shape}: it could be {listed}; "
        f"pass them with {plausible} (one letter per dimension, {_AXES_HINT})"
    )


def _is_zarr_folder(path: Path) -> bool:
    return any((path / name).exists() for name in (".zgroup", ".zarray", "zarr.json"))


# ---- readers: each returns a Read ----


def no_level_message(path: Path, level: int, count: int) -> str:
    """The ImageError message for a resolution level the file does not have."""
    have = "only level 0 (it is not a pyramid)" if count == 1 else f"levels 0 to {count - 1}"
    return f"{path} has no resolution level {level}: it has {have}; pass one of those"


def _single(path: Path, data: Any, level: int) -> tuple[tuple[int, ...], ...]:
    if level != 0:
        raise ImageError(no_level_message(path, level, 1))
    return (tuple(int(n) for n in data.shape),)


def _read_pil(path: Path, *, level: int = 0, lazy: bool = False) -> Read:
    import imageio.v3 as iio

    # from bytes: imageio leaves files open when every plugin fails on a corrupt file
    data = np.asarray(iio.imread(path.read_bytes(), extension=path.suffix.lower()))
    axes = "yxc" if data.ndim == 3 and data.shape[-1] in (2, 3, 4) else None
    return data, axes, None, None, _single(path, data, level)


def _read_npy(path: Path, *, level: int = 0, lazy: bool = False) -> Read:
    data = np.load(path, mmap_mode="r", allow_pickle=False)
    if data.dtype.hasobject or data.dtype.fields:
        raise ImageError(f"{path} holds {data.dtype} values, not an image of numbers")
    return data, None, None, None, _single(path, data, level)


def _read_zarr(path: Path, *, level: int = 0, lazy: bool = False) -> Read:
    """A level of an OME-Zarr multiscale image (NGFF 0.4, or 0.5 under ``ome``), or a plain
    Zarr array (v2 or v3); always lazy."""
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return node, None, None, None, _single(path, node, level)
    attrs: dict[str, Any] = node.attrs.asdict()  # JSON, read as json.load reads it
    meta = attrs.get("ome", attrs)
    if "multiscales" not in meta:
        names = sorted(name for name, _ in node.arrays())
        if len(names) == 1:
            return node[names[0]], None, None, None, _single(path, node[names[0]], level)
        raise ImageError(
            f"{path} is a Zarr group without OME-NGFF multiscales metadata and holds "
            f"{len(names)} arrays; give the path of one array inside it"
        )
    multiscale = meta["multiscales"][0]
    datasets = multiscale["datasets"]
    if not 0 <= level < len(datasets):
        raise ImageError(no_level_message(path, level, len(datasets)))
    arrays: list[Any] = [node[dataset["path"]] for dataset in datasets]
    for dataset, array in zip(datasets, arrays, strict=True):
        if not isinstance(array, zarr.Array):
            raise ImageError(f"{path}: level {dataset['path']} of the multiscales is a group, not an array")
    levels = tuple(tuple(int(n) for n in array.shape) for array in arrays)
    data, dataset = arrays[level], datasets[level]
    axes = _ngff_axes(multiscale.get("axes", []))
    scale = np.ones(data.ndim)
    for transforms in (dataset.get("coordinateTransformations", []),
                       multiscale.get("coordinateTransformations", [])):  # fmt: skip
        for transform in transforms:
            if transform.get("type") == "scale" and "scale" in transform:
                scale = scale * np.asarray(transform["scale"], dtype=float)
    if axes is None:
        return data, None, None, None, levels
    sizes: dict[str, float] = {}
    unit = None
    for i, letter in enumerate(axes):
        axis = multiscale["axes"][i]
        axis_unit = axis.get("unit") if isinstance(axis, Mapping) else None
        if letter in "zyx":
            sizes[letter] = float(scale[i])
            unit = normalize_unit(axis_unit) or unit
        elif letter == "t":
            factor = _TIME_TO_SECONDS.get(str(axis_unit or "second").lower(), 1.0)
            sizes["t"] = float(scale[i]) * factor
    if unit is None and np.all(scale == 1.0):
        return data, axes, None, None, levels  # the default scale: the file gives no pixel size
    return data, axes, sizes or None, unit, levels


def _ngff_axes(entries: Sequence[Any]) -> str | None:
    """Our letters for OME-NGFF axes (dicts in 0.4+, names in 0.3), or None if unknown."""
    letters = []
    for entry in entries:
        name = str(entry["name"] if isinstance(entry, Mapping) else entry).lower()
        kind = str(entry.get("type")) if isinstance(entry, Mapping) else ""
        letters.append(_NGFF_LETTERS.get(name) or _NGFF_LETTERS.get(kind))
    if not letters or None in letters or len(set(letters)) != len(letters):
        return None
    return "".join(letters)  # type: ignore[arg-type]


def find_images(inputs: Sequence[str]) -> list[Path]:
    """Expand files, folders (their images, not recursive, sorted) and glob patterns.

    A path that exists is taken as it is, so ``cell[red].png`` is a file, not a pattern.

    Raises
    ------
    ImageError
        An input matches nothing.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [str(inputs)]
    found: list[Path] = []
    for item in inputs:
        text = os.path.expanduser(str(item))
        if Path(text).is_dir() and not _is_image_folder(Path(text)):
            matches = sorted(
                p for p in Path(text).iterdir()
                if not p.name.startswith(".") and image_format(p) is not None
                and (p.is_file() or _is_image_folder(p))
            )  # fmt: skip
        elif Path(text).exists():  # an existing path is taken literally, even with [ ] * ? in its name
            matches = [Path(text)]
        elif glob.has_magic(text):
            matches = [Path(p) for p in sorted(glob.glob(text))]
            matches = [p for p in matches if p.is_file() or _is_image_folder(p)]
        else:
            raise ImageError(f"input {item!r} does not exist; check the path")
        if not matches:
            raise ImageError(
                f"no images found for input {item!r}; give image files "
                f"({', '.join(IMAGE_SUFFIXES)}), a folder that holds them, or a pattern such "
                "as 'images/*.tif'"
            )
        found.extend(p for p in matches if p not in found)
    return found


def _is_image_folder(path: Path) -> bool:
    return path.is_dir() and (image_format(path) == "zarr" or _is_zarr_folder(path))
