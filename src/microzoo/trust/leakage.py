"""Near-duplicate images between a training and a test set (data leakage).

Each image becomes a small thumbnail: grey, robustly normalised (1st and 99th percentiles to
0 and 1), downsampled to 32 x 32 with anti-aliasing. Its perceptual hash (pHash) is the sign
of the 8 x 8 lowest 2-D DCT frequencies (DC left out) against their median: 63 bits that
survive noise (averaged away by the downsampling), intensity scaling and offsets (removed by
the normalisation), and resizing. Test thumbnails are also hashed in their 8 flips and
rotations. Pairs whose hashes differ in at most ``max_distance`` bits are candidates;
a candidate is confirmed when the correlation of the two (aligned) thumbnails is at least
``min_correlation``, which keeps look-alike but distinct fields (many nuclei images share a
layout) from being reported. Crops of a larger training image are not detected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import fft
from skimage.transform import resize

from microzoo.io.axes import to_grayscale
from microzoo.progress import ProgressCallback, no_progress

THUMBNAIL_SIDE = 32
HASH_SIDE = 8
TRANSFORMS = (
    "as is",
    "flipped left-right",
    "flipped up-down",
    "rotated 180",
    "transposed",
    "rotated 90",
    "rotated 270",
    "anti-transposed",
)


@dataclass(frozen=True)
class NearDuplicate:
    """A test image that is (nearly) a training image."""

    train_index: int
    test_index: int
    hash_distance: int
    correlation: float
    transform: str


def thumbnail(image: np.ndarray) -> np.ndarray:
    """The 32 x 32 normalised, zero-mean, unit-norm thumbnail that hashes are made from."""
    grey = to_grayscale(image)
    low, high = np.percentile(grey, [1, 99])
    normalised = np.clip((grey - low) / (high - low), 0, 1) if high > low else np.zeros_like(grey)
    small = resize(normalised, (THUMBNAIL_SIDE, THUMBNAIL_SIDE), anti_aliasing=True)
    small = small - small.mean()
    norm = np.linalg.norm(small)
    return small / norm if norm > 0 else small


def perceptual_hash(image_or_thumbnail: np.ndarray) -> np.ndarray:
    """The 63-bit DCT perceptual hash of an image (or of its :func:`thumbnail`), as booleans."""
    small = np.asarray(image_or_thumbnail)
    if small.shape != (THUMBNAIL_SIDE, THUMBNAIL_SIDE):
        small = thumbnail(small)
    low = fft.dctn(small, norm="ortho")[:HASH_SIDE, :HASH_SIDE].ravel()[1:]
    return low > np.median(low)


def _dihedral(small: np.ndarray) -> list[np.ndarray]:
    return [
        small,
        small[:, ::-1],
        small[::-1, :],
        small[::-1, ::-1],
        small.T,
        np.rot90(small, 1),
        np.rot90(small, -1),
        small[::-1, ::-1].T,
    ]


def find_near_duplicates(
    train_images: Sequence[np.ndarray],
    test_images: Sequence[np.ndarray],
    *,
    max_distance: int = 12,
    min_correlation: float = 0.9,
    progress: ProgressCallback | None = None,
) -> list[NearDuplicate]:
    """Every test image that nearly equals a training image; see the module docstring.

    Returns one :class:`NearDuplicate` per affected test image (its closest training image).
    """
    progress = progress or no_progress
    total = len(train_images) + len(test_images)
    train_thumbs: list[np.ndarray] = []
    test_thumbs: list[np.ndarray] = []
    for done, image in enumerate([*train_images, *test_images], start=1):
        (train_thumbs if done <= len(train_images) else test_thumbs).append(thumbnail(image))
        progress(done, total, "hashing images")
    if not train_thumbs or not test_thumbs:
        return []
    train_flat = np.stack([t.ravel() for t in train_thumbs])
    train_hashes = np.stack([perceptual_hash(t) for t in train_thumbs]).astype(np.int8)
    found = []
    for test_index, small in enumerate(test_thumbs):
        best: NearDuplicate | None = None
        for transform, variant in zip(TRANSFORMS, _dihedral(small), strict=True):
            bits = perceptual_hash(np.ascontiguousarray(variant)).astype(np.int8)
            distances = np.count_nonzero(train_hashes != bits, axis=1)
            candidates = np.flatnonzero(distances <= max_distance)
            if candidates.size == 0:
                continue
            correlations = train_flat[candidates] @ variant.ravel()
            pick = int(np.argmax(correlations))
            if correlations[pick] >= min_correlation and (best is None or correlations[pick] > best.correlation):
                best = NearDuplicate(
                    train_index=int(candidates[pick]),
                    test_index=test_index,
                    hash_distance=int(distances[candidates[pick]]),
                    correlation=float(correlations[pick]),
                    transform=transform,
                )
        if best is not None:
            found.append(best)
    return found
