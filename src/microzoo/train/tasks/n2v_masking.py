"""Noise2Void blind-spot masking and its loss.

Noise2Void (Krull et al., CVPR 2019) trains a denoiser on noisy images alone: a few pixels of
each training patch are hidden ("blind spots") by replacing them with another value, and the
network learns to predict the original noisy value there from the surroundings only. Because
pixel noise is independent, the best it can do is predict the clean signal.

:func:`blind_spot_mask` chooses and replaces the blind spots; :func:`n2v_loss` is the mean
squared error over them alone.

Choosing the pixels
    The patch is cut into a grid of cells of ``fraction ** (-1 / d)`` pixels a side (``d`` the
    number of spatial axes) and one pixel is drawn uniformly inside each cell; a cell that runs
    past the patch edge keeps its pixel only when it falls inside, so the expected number of
    blind spots is exactly ``fraction`` times the pixel count, and they are spread over the
    patch (the "stratified" sampling of the N2V reference code). Every channel gets its own
    draw and at least one blind spot.

Replacing them (``variant``)
    ``"n2v"``: a uniformly drawn neighbour from the ``(2 * radius + 1) ** d`` window around the
    pixel, the pixel itself excluded (the reference code's ``uniform_withoutCP``; its
    ``uniform_withCP``, which may keep the pixel's own value and so leak it, is not offered).
    ``"n2v2"``: the median of that window, the centre excluded (N2V2, Höck et al., ECCV-W
    2022, "median" replacement), which together with the network changes of N2V2 (blur
    pooling, no top skip connection; see ``train.models``) removes checkerboard artefacts.
    Near the patch edge only the neighbours inside the patch are used.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from microzoo.errors import ConfigError, DataError

Variant = Literal["n2v", "n2v2"]


def _window_offsets(n_spatial: int, radius: int) -> np.ndarray:
    """Every offset of the (2r+1)^d window but the centre, as an (K, d) int array."""
    axes = [np.arange(-radius, radius + 1)] * n_spatial
    offsets = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, n_spatial)
    return offsets[np.any(offsets != 0, axis=1)]


def _stratified_points(shape: tuple[int, ...], fraction: float, rng: np.random.Generator) -> np.ndarray:
    """One uniform point per grid cell of side ``fraction ** (-1/d)``; (n, d) int array, n >= 1."""
    step = fraction ** (-1.0 / len(shape))
    grid = np.meshgrid(*[np.arange(0.0, size, step) for size in shape], indexing="ij")
    starts = np.stack([s.ravel() for s in grid], axis=1)
    points = np.floor(starts + rng.random(starts.shape) * step).astype(np.int64)
    points = points[np.all(points < np.asarray(shape), axis=1)]
    if len(points) == 0:
        points = np.asarray([[rng.integers(size) for size in shape]], dtype=np.int64)
    return points


def _median_inside(values: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Per row, the median of ``values`` where ``inside``: ``np.nanmedian`` of the masked rows,
    exactly, without its per-row Python loop (which took 9% of an N2V2 training step).

    >>> _median_inside(np.array([[1.0, 5.0, 3.0, 9.0]]), np.array([[True, True, True, False]]))
    array([3.])
    """
    ordered = np.sort(np.where(inside, values, np.inf), axis=1)  # the outside values sort last
    count = inside.sum(axis=1)
    rows = np.arange(len(values))
    return (ordered[rows, (count - 1) // 2] + ordered[rows, count // 2]) / 2


def blind_spot_mask(
    patch: np.ndarray,
    *,
    fraction: float = 0.002,
    rng: np.random.Generator,
    variant: Variant = "n2v2",
    radius: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Hide a few pixels of a patch for Noise2Void training.

    Parameters
    ----------
    patch : ndarray
        ``(C, y, x)`` or ``(C, z, y, x)`` image patch; not modified.
    fraction : float, keyword-only
        Expected share of blind-spot pixels per channel, in (0, 1]; at least one per channel.
    rng : numpy.random.Generator, keyword-only
        The source of randomness; the same seed gives the same result.
    variant : {"n2v2", "n2v"}, keyword-only
        ``"n2v2"`` replaces a blind spot by the median of its neighbourhood, ``"n2v"`` by one
        random neighbour (see the module docstring).
    radius : int, keyword-only
        Half width of the neighbourhood window, at least 1.

    Returns
    -------
    masked : ndarray of float32
        A copy of ``patch`` with the blind spots replaced.
    mask : ndarray of bool
        ``True`` at the blind spots, same shape as ``patch``.

    >>> patch = np.arange(64, dtype=np.float32).reshape(1, 8, 8)
    >>> masked, mask = blind_spot_mask(patch, fraction=0.05, rng=np.random.default_rng(0))
    >>> bool(mask.any()) and bool(np.all(masked[~mask] == patch[~mask]))
    True
    """
    patch = np.asarray(patch)
    if patch.ndim not in (3, 4):
        raise DataError(
            f"a Noise2Void patch must be (C, y, x) or (C, z, y, x), got shape {patch.shape}; "
            "add a leading channel axis, e.g. patch[None]"
        )
    if not np.issubdtype(patch.dtype, np.number) or np.iscomplexobj(patch):
        raise DataError(f"a Noise2Void patch must hold real numbers, got dtype {patch.dtype}")
    spatial = patch.shape[1:]
    if patch.shape[0] == 0 or min(spatial) == 0 or int(np.prod(spatial)) < 2:
        raise DataError(f"a Noise2Void patch needs at least two pixels per channel, got shape {patch.shape}")
    if not 0 < fraction <= 1:
        raise ConfigError(f"the blind-spot fraction must lie in (0, 1], got {fraction}; 0.002 is usual")
    if variant not in ("n2v", "n2v2"):
        raise ConfigError(f"unknown Noise2Void variant {variant!r}; choose 'n2v2' or 'n2v'")
    if int(radius) != radius or radius < 1:
        raise ConfigError(f"the neighbourhood radius must be a whole number of at least 1, got {radius}")

    masked = patch.astype(np.float32, copy=True)
    mask = np.zeros(patch.shape, dtype=bool)
    offsets = _window_offsets(len(spatial), int(radius))
    upper = np.asarray(spatial)
    for channel in range(patch.shape[0]):
        image = patch[channel].astype(np.float32)
        points = _stratified_points(spatial, fraction, rng)
        neighbours = points[:, None, :] + offsets[None, :, :]  # (n, K, d)
        inside = np.all((neighbours >= 0) & (neighbours < upper), axis=2)  # (n, K)
        clipped = np.clip(neighbours, 0, upper - 1)
        values = image[tuple(np.moveaxis(clipped, 2, 0))]  # (n, K)
        if variant == "n2v":
            # uniform among the neighbours inside the patch: the largest random key wins
            keys = np.where(inside, rng.random(inside.shape), -1.0)
            replacement = values[np.arange(len(points)), np.argmax(keys, axis=1)]
        else:
            replacement = _median_inside(values, inside)
        index = (channel, *points.T)
        masked[index] = replacement
        mask[index] = True
    return masked, mask


def n2v_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error between ``prediction`` and ``target`` over the blind spots only.

    All three tensors have the same shape (e.g. ``(B, C, y, x)``); ``mask`` is boolean (or 0/1)
    and ``target`` is the patch before masking. Pixels outside the mask do not enter the loss
    nor its gradient. With no blind spot at all the loss is 0 (still attached to the graph).
    """
    if prediction.shape != target.shape or prediction.shape != mask.shape:
        raise DataError(
            "prediction, target and mask must have the same shape, got "
            f"{tuple(prediction.shape)}, {tuple(target.shape)} and {tuple(mask.shape)}"
        )
    weights = mask.to(dtype=prediction.dtype)
    squared = (prediction - target.to(dtype=prediction.dtype)) ** 2
    # where() keeps non-finite predictions outside the mask from turning the sum into NaN
    total = torch.where(weights > 0, squared * weights, torch.zeros_like(squared)).sum()
    return total / weights.sum().clamp(min=1.0)
