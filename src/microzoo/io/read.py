"""Read images with their axes and pixel size: TIFF/OME-TIFF, PNG/JPEG, NPY, OME-Zarr.

Axes are taken from metadata (OME, ImageJ, OME-NGFF) or inferred only where that is
unambiguous (2-D -> ``"yx"``, an RGB(A) PNG/JPEG -> ``"yxc"``); anything else raises an
:class:`~microzoo.errors.AxesError` that names the plausible choices, and the caller passes
``axes``. OME-Zarr is read lazily (a ``zarr.Array``); NPY is memory-mapped.
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

__all__ = [
    "IMAGE_SUFFIXES",
    "Image",
    "find_images",
    "image_format",
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
# tifffile's axes codes; S (samples) is a channel axis, others (I, Q, ...) are unknown
_TIFF_LETTERS = {"T": "t", "C": "c", "S": "c", "Z": "z", "Y": "y", "X": "x"}
_NGFF_LETTERS = {"t": "t", "time": "t", "c": "c", "channel": "c", "z": "z", "y": "y", "x": "x"}
OME_AXES_TAG = "microzoo axes="  # the OME Description write_image stores
_AXES_HINT = "letters: b batch, i index, c channel, t time, z y x space"


@dataclass(frozen=True)
class Image:
    """An image with its axes.

    Attributes
    ----------
    data
        ``np.ndarray``, or a lazy array (``zarr.Array``) with ``shape``, ``dtype`` and
        ``__getitem__``.
    axes
        One letter per dimension from ``b i c t z y x``, e.g. ``"yx"``, ``"yxc"``, ``"tczyx"``.
    pixel_size
        Size of a pixel per spatial axis letter (in ``unit``) and time step for ``t`` (seconds),
        or None when the file does not say.
    unit
        Spatial unit, e.g. ``"micrometer"``.
    path
        The file it was read from.
    """

    data: np.ndarray | zarr.Array
    axes: str
    pixel_size: Mapping[str, float] | None = None
    unit: str | None = None
    path: Path | None = None


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


def read_image(path: str | os.PathLike[str], *, axes: str | None = None) -> Image:
    """Read an image with its axes and pixel size.

    Parameters
    ----------
    path
        A TIFF/OME-TIFF, PNG, JPEG, NPY file or an OME-Zarr folder.
    axes
        The image's axes letters when the file does not say (or says wrongly).

    Raises
    ------
    ImageError
        The file is missing, of an unknown type, or cannot be read.
    AxesError
        ``axes`` do not match the image, or the axes are ambiguous and were not given.
    """
    path = Path(path)
    fmt = image_format(path)
    if fmt is None and path.is_dir() and _is_zarr_folder(path):
        fmt = "zarr"
    if not path.exists():
        raise ImageError(f"image {path} does not exist; check the path")
    if fmt is None:
        raise ImageError(f"cannot read {path}: unknown image type; microzoo reads {', '.join(IMAGE_SUFFIXES)}")
    reader = {"tiff": _read_tiff, "png": _read_pil, "jpeg": _read_pil, "npy": _read_npy,
              "zarr": _read_zarr}[fmt]  # fmt: skip
    try:
        data, found, pixel_size, unit = reader(path)
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
    shape = tuple(int(n) for n in data.shape)
    if axes is not None:
        final = check_axes(axes, ndim=len(shape), name=f"{path.name} (shape {shape})")
    elif found is not None and len(found) == len(shape):
        final = found
    elif len(shape) == 2:
        final = "yx"
    else:
        raise AxesError(_ambiguous_message(path, shape))
    if pixel_size is not None:
        pixel_size = {a: v for a, v in pixel_size.items() if a in final} or None
    return Image(data=data, axes=final, pixel_size=pixel_size, unit=unit, path=path)


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


# ---- readers: each returns (data, axes or None, pixel_size or None, unit or None) ----


def _read_tiff(path: Path) -> tuple[Any, str | None, dict[str, float] | None, str | None]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        if tif.is_ome and tif.ome_metadata:
            pixels, description = _ome_pixels(tif.ome_metadata)
            if description.startswith(OME_AXES_TAG):
                data, axes = _own_ome_layout(series, description.removeprefix(OME_AXES_TAG))
            else:
                data, axes = series.asarray(), _tiff_axes(series.axes)
            pixel_size, unit = _ome_pixel_size(pixels)
            return data, axes, pixel_size, unit
        data = series.asarray()
        axes = _tiff_axes(series.axes)
        pixel_size, unit = _tiff_pixel_size(tif)
        return data, axes, pixel_size, unit


def _tiff_axes(codes: str) -> str | None:
    """Our letters for tifffile's axes codes, or None if any is unknown (I, Q, ...)."""
    if any(c not in _TIFF_LETTERS for c in codes):
        return None
    letters = [_TIFF_LETTERS[c] for c in codes]
    return "".join(letters) if len(set(letters)) == len(letters) else None


def _own_ome_layout(series: Any, axes: str) -> tuple[np.ndarray, str | None]:
    """Restore the axes order and singleton axes of an OME-TIFF that microzoo wrote."""
    try:
        axes = check_axes(axes)
    except AxesError:
        return series.asarray(), _tiff_axes(series.axes)
    data = series.asarray(squeeze=False)
    codes = series.get_axes(False)
    modulo = next((a for a in axes if a in "bi"), None)
    found = [_TIFF_LETTERS.get(c, modulo) if c != "S" else "s" for c in codes]
    letters = [letter for letter in found if letter is not None]
    if len(letters) != len(found):  # an axis code of tifffile's that the description does not explain
        return series.asarray(), _tiff_axes(series.axes)
    keep = [i for i, a in enumerate(letters) if a in axes]
    drop = tuple(i for i, a in enumerate(letters) if a not in axes)
    if sorted(letters[i] for i in keep) != sorted(axes) or any(data.shape[i] != 1 for i in drop):
        return series.asarray(), _tiff_axes(series.axes)
    data = data.squeeze(axis=drop)
    cur = "".join(letters[i] for i in keep)
    return data.transpose([cur.index(a) for a in axes]), axes


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


def _read_pil(path: Path) -> tuple[Any, str | None, None, None]:
    import imageio.v3 as iio

    # from bytes: imageio leaves files open when every plugin fails on a corrupt file
    data = np.asarray(iio.imread(path.read_bytes(), extension=path.suffix.lower()))
    axes = "yxc" if data.ndim == 3 and data.shape[-1] in (2, 3, 4) else None
    return data, axes, None, None


def _read_npy(path: Path) -> tuple[Any, None, None, None]:
    data = np.load(path, mmap_mode="r", allow_pickle=False)
    if data.dtype.hasobject or data.dtype.fields:
        raise ImageError(f"{path} holds {data.dtype} values, not an image of numbers")
    return data, None, None, None


def _read_zarr(path: Path) -> tuple[Any, str | None, dict[str, float] | None, str | None]:
    """Level 0 of an OME-Zarr multiscale image (lazily), or a plain Zarr array."""
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return node, None, None, None
    attrs: dict[str, Any] = node.attrs.asdict()  # JSON, read as json.load reads it
    meta = attrs.get("ome", attrs)
    if "multiscales" not in meta:
        arrays = sorted(name for name, _ in node.arrays())
        if len(arrays) == 1:
            return node[arrays[0]], None, None, None
        raise ImageError(
            f"{path} is a Zarr group without OME-NGFF multiscales metadata and holds "
            f"{len(arrays)} arrays; give the path of one array inside it"
        )
    multiscale = meta["multiscales"][0]
    dataset = multiscale["datasets"][0]
    data = node[dataset["path"]]
    if not isinstance(data, zarr.Array):
        raise ImageError(f"{path}: level 0 of the multiscales ({dataset['path']}) is a group, not an array")
    axes = _ngff_axes(multiscale.get("axes", []))
    scale = np.ones(data.ndim)
    for transforms in (dataset.get("coordinateTransformations", []),
                       multiscale.get("coordinateTransformations", [])):  # fmt: skip
        for transform in transforms:
            if transform.get("type") == "scale" and "scale" in transform:
                scale = scale * np.asarray(transform["scale"], dtype=float)
    if axes is None:
        return data, None, None, None
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
        return data, axes, None, None  # the default scale: the file gives no pixel size
    return data, axes, sizes or None, unit


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
