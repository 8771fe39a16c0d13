"""Comparing label images in tests."""

from __future__ import annotations

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
