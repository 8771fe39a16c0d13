"""A streamed job's input given as an array (a Dask array, a ``zarr.Array``, a lazy TIFF) rather than a file.

:func:`microzoo.runtime.stream.prepare_stream` takes either. An array source is read region by
region as a file is (``array[region]``, then ``np.asarray``: a Dask array computes only the
chunks a region needs); its axes must be given. A job over an array is resumable when the array
says what it is (:func:`array_identity`: a Dask array's name, a Zarr array's store folder, with
shape and dtype); otherwise every run starts a fresh job.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import numpy as np

from microzoo.errors import AxesError

__all__ = ["array_identity", "array_image", "is_array_source"]


def is_array_source(source: Any) -> bool:
    """Whether ``source`` is an array (not a path): it has ``shape``, ``dtype`` and ``__getitem__``."""
    if isinstance(source, (str, os.PathLike)):
        return False
    return all(hasattr(source, name) for name in ("shape", "dtype", "__getitem__"))


def array_image(array: Any, axes: str | None) -> Any:
    """``array`` as a :class:`microzoo.io.read.Image` (no pixel size) with its ``axes`` checked."""
    from microzoo.io.axes import check_axes
    from microzoo.io.read import Image, _storage_chunks

    shape = tuple(int(n) for n in array.shape)
    if axes is None:
        raise AxesError(f"give the axes of the array (shape {shape}), e.g. 'yx' or 'zyx'")
    checked = check_axes(axes, ndim=len(shape), name=f"the array (shape {shape})")
    return Image(data=array, axes=checked, chunks=_storage_chunks(array))


def array_identity(array: Any) -> dict[str, Any]:
    """What identifies an array source for a resumable job (JSON-able, nothing read).

    A Dask array's ``name`` (Dask derives it from what the array is made of), or a Zarr
    array's store folder and path within it, with shape, dtype and chunks; any other array
    gets a new random token, so a job over it is never taken for another's.
    """
    from microzoo.io.read import _storage_chunks

    chunks = _storage_chunks(array)
    found: dict[str, Any] = {
        "shape": [int(n) for n in array.shape],
        "dtype": str(np.dtype(array.dtype)),
        "chunks": None if chunks is None else list(chunks),
    }
    root = getattr(getattr(array, "store", None), "root", None)
    if hasattr(array, "dask") and isinstance(getattr(array, "name", None), str):
        return {"array": "dask", "name": array.name, **found}
    if root is not None:
        return {"array": "zarr", "store": str(os.path.abspath(root)), "path": str(getattr(array, "path", "")), **found}
    return {"array": type(array).__name__, "token": uuid.uuid4().hex, **found}
