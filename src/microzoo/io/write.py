"""Write images atomically, in the format named by the file's suffix.

- ``.tif``/``.tiff``: OME-TIFF with axes and pixel size; any axes order is restored on reading.
- ``.png``: 2-D (``yx``) or RGB(A) (``yxc``) images of uint8 or uint16.
- ``.npy``: the array only.
- ``.zarr``/``.ome.zarr``: OME-NGFF 0.4 (Zarr format 2) with axes and scale, axes put into
  NGFF order (time, channel, space), so ``"yxc"`` is stored as ``"cyx"``; written by
  :class:`~microzoo.io.ome_zarr.OmeZarrWriter`, with a pyramid (levels 1, 2, ...) when y or x is
  larger than 256.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from microzoo.errors import OutputError
from microzoo.io.atomic import atomic_output
from microzoo.io.axes import check_axes
from microzoo.io.read import OME_AXES_TAG, image_format, normalize_unit

__all__ = ["write_image"]

_OME_UNITS = {"micrometer": "µm", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm",
              "meter": "m", "angstrom": "Å"}  # fmt: skip
_OME_CODES = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X", "b": "Q", "i": "Q"}
_WRITABLE = ".tif, .tiff, .ome.tif, .png, .npy, .zarr, .ome.zarr"


def write_image(
    path: str | os.PathLike[str],
    data: ArrayLike,
    axes: str,
    *,
    pixel_size: Mapping[str, float] | None = None,
    unit: str | None = None,
    pyramid: str | None = "mean",
) -> Path:
    """Write ``data`` with its axes to ``path``, completely or not at all.

    Parameters
    ----------
    path
        Target; its suffix chooses the format.
    data
        The image (NumPy or array-like).
    axes
        Its axes letters, one per dimension.
    pixel_size
        Pixel size per spatial axis letter (in ``unit``) and time step for ``t`` in seconds;
        stored in TIFF and Zarr, not in PNG or NPY.
    unit
        Spatial unit, e.g. ``"micrometer"`` (the default where a pixel size is stored).
    pyramid
        Zarr only: how the lower resolution levels are made when y or x is larger than 256,
        ``"mean"`` (intensities), ``"nearest"`` (labels), or None (level 0 alone).

    Returns
    -------
    Path
        The path written.

    Raises
    ------
    OutputError
        The suffix is unknown, or the format cannot hold this image.
    """
    path = Path(path)
    array = np.asarray(data)
    try:
        axes = check_axes(axes, ndim=array.ndim, name="the data")
    except Exception as exc:
        raise OutputError(f"cannot write {path}: {exc}") from exc
    fmt = image_format(path)
    zarr = functools.partial(_write_zarr, name=path.name.split(".")[0], pyramid=pyramid)
    writer: dict[str, Callable[..., None]] = {"tiff": _write_tiff, "png": _write_png, "npy": _write_npy, "zarr": zarr}
    if fmt not in writer:
        raise OutputError(
            f"cannot write {path}: microzoo writes {_WRITABLE}; choose one of these suffixes "
            "(.tif keeps axes and pixel size)"
        )
    sizes = {a: float(v) for a, v in (pixel_size or {}).items() if a in axes}
    if any(not np.isfinite(v) or v <= 0 for v in sizes.values()):
        raise OutputError(f"cannot write {path}: pixel sizes must be positive, got {sizes}")
    if unit is not None and normalize_unit(unit) is None:
        raise OutputError(f"cannot write {path}: unknown unit {unit!r}; use e.g. 'micrometer' or 'nanometer'")
    if pyramid not in ("mean", "nearest", None):
        raise ValueError(f"pyramid must be 'mean', 'nearest' or None, not {pyramid!r}")
    with atomic_output(path) as tmp:
        writer[fmt](tmp, array, axes, sizes, normalize_unit(unit) or "micrometer")
    return path


def _write_tiff(tmp: Path, array: np.ndarray, axes: str, sizes: dict[str, float], unit: str) -> None:
    import tifffile

    if "b" in axes and "i" in axes:
        raise OutputError("an OME-TIFF holds one batch or index axis, not both; write .npy or .zarr instead")
    order = "".join(a for a in "tbiczyx" if a in axes)
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    stored = np.ascontiguousarray(array.transpose([axes.index(a) for a in order]))
    metadata: dict[str, str | float] = {
        "axes": "".join(_OME_CODES[a] for a in order),
        "Description": f"{OME_AXES_TAG}{axes}",
    }
    for letter in "zyx":
        if letter in sizes:
            metadata[f"PhysicalSize{letter.upper()}"] = sizes[letter]
            metadata[f"PhysicalSize{letter.upper()}Unit"] = _OME_UNITS.get(unit, "µm")
    if "t" in sizes:
        metadata["TimeIncrement"] = sizes["t"]
        metadata["TimeIncrementUnit"] = "s"
    try:
        tifffile.imwrite(tmp, stored, ome=True, photometric="minisblack", metadata=metadata)
    except (ValueError, TypeError) as exc:  # e.g. a dtype OME cannot hold
        raise OutputError(
            f"cannot write {array.dtype} data with axes {axes!r} as OME-TIFF: {exc}; "
            "write .npy or .zarr instead, or convert the data type"
        ) from exc


def _write_png(tmp: Path, array: np.ndarray, axes: str, sizes: dict[str, float], unit: str) -> None:
    import imageio.v3 as iio

    ok_axes = axes == "yx" or (axes == "yxc" and array.shape[-1] in (3, 4))
    if not ok_axes or array.dtype not in (np.uint8, np.uint16):
        raise OutputError(
            f"PNG holds 2-D (yx) or RGB(A) (yxc) images of uint8 or uint16, not {array.dtype} "
            f"data with axes {axes!r} and shape {array.shape}; write .tif instead"
        )
    if array.dtype == np.uint16 and axes != "yx":
        raise OutputError("PNG with 16-bit RGB(A) is not supported here; write .tif instead")
    iio.imwrite(tmp, array, extension=".png")


def _write_npy(tmp: Path, array: np.ndarray, axes: str, sizes: dict[str, float], unit: str) -> None:
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def _write_zarr(tmp: Path, array: np.ndarray, axes: str, sizes: dict[str, float], unit: str, *,
                name: str, pyramid: str | None) -> None:  # fmt: skip
    """OME-NGFF 0.4 in Zarr format 2 through :class:`OmeZarrWriter`, with a pyramid when y or x
    is larger than 256."""
    from microzoo.io.ome_zarr import NGFF_ORDER, OmeZarrWriter

    order = "".join(a for a in NGFF_ORDER if a in axes)
    stored = array.transpose([axes.index(a) for a in order])
    chunks = tuple(256 if a in "yx" else 16 if a == "z" else 1 for a in order)
    writer = OmeZarrWriter.create(tmp, shape=stored.shape, dtype=stored.dtype, axes=order, chunks=chunks,
                                  pixel_size=sizes, unit=unit, name=name)  # fmt: skip
    writer.write(tuple(slice(None) for _ in order), stored)
    if pyramid is not None:
        writer.build_pyramid(method=pyramid, min_size=256)
