"""Label images for tests: comparing them, and small ones with a known error."""

from __future__ import annotations

import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images split the pixels the same way (0 is background; ids may differ).

    >>> same_partition(np.array([[0, 3, 3, 5]]), np.array([[0, 1, 1, 2]]))
    True
    >>> same_partition(np.array([[0, 3, 3, 5]]), np.array([[0, 1, 2, 2]]))
    False
    """
    if a.shape != b.shape or not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


def three_squares(n: int = 8, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` 32x32 label images of three 6x6 squares (jittered), and the same with the third missed."""
    rng = np.random.default_rng(seed)
    truths, missing = [], []
    for _ in range(n):
        labels = np.zeros((32, 32), np.uint16)
        for k, (y, x) in enumerate([(2, 2), (2, 20), (20, 10)]):
            dy, dx = rng.integers(0, 4, 2)
            labels[y + dy : y + dy + 6, x + dx : x + dx + 6] = k + 1
        truths.append(labels)
        partial = labels.copy()
        partial[partial == 3] = 0
        missing.append(partial)
    return truths, missing


def fluorescent_nuclei(root: Path, shared_data: Path, n: int = 4) -> Path:
    """``root/images`` and ``root/truth``: ``n`` small DSB2018 test images of fluorescent nuclei
    (grey, dark, at most 360 rows) and their instance labels."""
    (root / "images").mkdir(parents=True)
    (root / "truth").mkdir()
    taken = 0
    for path in sorted((shared_data / "dsb2018" / "test" / "images").glob("*.png")):
        rgb = iio.imread(path)[..., :3].astype(float)
        if rgb.std(axis=-1).mean() < 1 and rgb.mean() < 60 and rgb.shape[0] <= 360:
            shutil.copy(path, root / "images" / path.name)
            shutil.copy(shared_data / "dsb2018" / "test" / "labels" / f"{path.stem}.tif", root / "truth")
            taken += 1
        if taken == n:
            break
    return root
