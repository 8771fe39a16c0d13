"""TEMPORARY stand-in for ``io/ome_zarr.py``'s ``OmeZarrWriter`` (issue 10, H1) until it is merged.

Same calls as the plan gives them (create, open, write, read, build_pyramid); no pyramid.
Remove this file once ``microzoo.io.ome_zarr`` exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class FallbackWriter:
    def __init__(self, path: Path) -> None:
        import zarr

        self.path = Path(path)
        self.group = zarr.open_group(str(path), mode="r+")
        self.array = self.group["0"]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    @classmethod
    def create(cls, path: Path, *, shape: Any, dtype: Any, axes: str, chunks: Any, pixel_size: Any = None,
               unit: Any = None, name: Any = None) -> FallbackWriter:  # fmt: skip
        import zarr

        group = zarr.open_group(str(path), mode="w", zarr_format=2)
        group.create_array(
            "0", shape=tuple(shape), dtype=dtype, chunks=tuple(chunks),
            chunk_key_encoding={"name": "v2", "separator": "/"}, fill_value=0,
        )  # fmt: skip
        sizes = pixel_size or {}
        group.attrs["multiscales"] = [
            {
                "version": "0.4",
                "name": name or Path(path).name,
                "axes": [
                    {
                        "name": a,
                        **({"type": "space"} if a in "zyx" else {"type": "time"} if a == "t" else {"type": "channel"}),
                    }
                    for a in axes
                ],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [float(sizes.get(a, 1.0)) for a in axes]}
                        ],
                    }
                ],
            }
        ]
        return cls(path)

    @classmethod
    def open(cls, path: Path) -> FallbackWriter:
        return cls(path)

    def write(self, region: tuple[slice, ...], block: np.ndarray) -> None:
        self.array[region] = block

    def read(self, region: tuple[slice, ...]) -> np.ndarray:
        return np.asarray(self.array[region])

    def build_pyramid(self, **kwargs: Any) -> None:
        return None
