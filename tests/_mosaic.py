"""Test helper: large real images, tiled from DSB2018 nuclei images, and the tolerance a streamed
prediction of them is compared within."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def dsb_mosaic(
    shared_data: Path, rows: int, cols: int, *, split: str = "train", piece: tuple[int, int] = (256, 256)
) -> np.ndarray:
    """A uint16 mosaic of rows x cols crops (``piece``, top left) of DSB2018 ``split`` images,
    channel 0 scaled to 0..65535 (x 257), in file order; repeated when the split has too few."""
    import imageio.v3 as iio

    pieces: list[np.ndarray] = []
    for path in sorted((shared_data / "dsb2018" / split / "images").glob("*.png")):
        image = iio.imread(path)
        grey = image[..., 0] if image.ndim == 3 else image
        if grey.shape[0] >= piece[0] and grey.shape[1] >= piece[1]:
            pieces.append(grey[: piece[0], : piece[1]].astype(np.uint16) * 257)
        if len(pieces) == rows * cols:
            break
    return np.block([[pieces[(r * cols + c) % len(pieces)] for c in range(cols)] for r in range(rows)])


def assert_within_spec_tolerance(actual: np.ndarray, expected: np.ndarray) -> None:
    """The format's reproducibility tolerance: rtol 1e-3, atol 1e-3, at most 100 mismatches per million."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    bad = ~np.isclose(actual, expected, rtol=1e-3, atol=1e-3)
    assert bad.sum() / bad.size * 1e6 <= 100, f"{bad.sum()} of {bad.size} values differ"
