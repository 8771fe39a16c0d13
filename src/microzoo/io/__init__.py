"""Images in and out: read, write, find and pair files, map axes onto a model's.

- :func:`read_image` / :func:`read_array` / :func:`image_shape`, :func:`write_image`,
  :func:`atomic_output` (complete files or none).
- Larger than memory: ``read_image(..., lazy=True, level=)`` (region reads; :class:`LazyArray`),
  :func:`image_identity` (what identifies an input for a resumable job), :class:`OmeZarrWriter`
  (OME-Zarr written chunk by chunk, with labels and a pyramid).
- :func:`find_images` (files, folders, patterns), :func:`list_images`, :func:`image_stem`,
  :func:`pair_by_stem`.
- :func:`map_to_model` / :func:`map_from_model`, :func:`select_channels`, :func:`to_grayscale`.

Every name is imported on first use (PEP 562), so importing this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from microzoo._lazy import lazy_exports

if TYPE_CHECKING:  # pragma: no cover
    from microzoo.io.atomic import atomic_output
    from microzoo.io.axes import (
        AxesMapping,
        check_axes,
        map_from_model,
        map_to_model,
        rgb_to_grey,
        select_channels,
        to_grayscale,
    )
    from microzoo.io.files import image_stem, list_images, pair_by_stem
    from microzoo.io.ome_zarr import OmeZarrWriter
    from microzoo.io.read import (
        IMAGE_SUFFIXES,
        Image,
        find_images,
        image_format,
        image_identity,
        image_shape,
        read_array,
        read_image,
    )
    from microzoo.io.read_tiff import LazyArray
    from microzoo.io.write import write_image

_WHERE = {
    "IMAGE_SUFFIXES": "read",
    "Image": "read",
    "find_images": "read",
    "image_format": "read",
    "image_identity": "read",
    "image_shape": "read",
    "LazyArray": "read_tiff",
    "OmeZarrWriter": "ome_zarr",
    "read_array": "read",
    "read_image": "read",
    "write_image": "write",
    "atomic_output": "atomic",
    "AxesMapping": "axes",
    "check_axes": "axes",
    "map_from_model": "axes",
    "map_to_model": "axes",
    "rgb_to_grey": "axes",
    "select_channels": "axes",
    "to_grayscale": "axes",
    "image_stem": "files",
    "list_images": "files",
    "pair_by_stem": "files",
}

__all__ = [
    "AxesMapping",
    "IMAGE_SUFFIXES",
    "Image",
    "LazyArray",
    "OmeZarrWriter",
    "atomic_output",
    "check_axes",
    "find_images",
    "image_format",
    "image_identity",
    "image_shape",
    "image_stem",
    "list_images",
    "map_from_model",
    "map_to_model",
    "pair_by_stem",
    "read_array",
    "read_image",
    "rgb_to_grey",
    "select_channels",
    "to_grayscale",
    "write_image",
]


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
