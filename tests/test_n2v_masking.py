"""Noise2Void blind-spot masking and loss (train.tasks.n2v_masking)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microzoo.errors import ConfigError, DataError
from microzoo.train.tasks.n2v_masking import blind_spot_mask, n2v_loss


def _noise(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _windows(image: np.ndarray, point: tuple[int, ...], radius: int) -> np.ndarray:
    """Values of the window around ``point`` inside the image, the centre excluded."""
    region = tuple(slice(max(p - radius, 0), p + radius + 1) for p in point)
    window = image[region].astype(float).copy()
    centre = tuple(p - max(p - radius, 0) for p in point)
    return np.delete(window.ravel(), np.ravel_multi_index(centre, window.shape))


@pytest.mark.parametrize("shape", [(2, 64, 80), (1, 16, 32, 40)])
@pytest.mark.parametrize("variant", ["n2v", "n2v2"])
def test_only_masked_pixels_change_and_from_their_neighbourhood(shape, variant):
    patch = _noise(shape)
    original = patch.copy()
    masked, mask = blind_spot_mask(patch, fraction=0.01, rng=np.random.default_rng(1), variant=variant)
    np.testing.assert_array_equal(patch, original)  # input untouched
    assert masked.dtype == np.float32 and mask.dtype == bool
    assert masked.shape == mask.shape == patch.shape
    np.testing.assert_array_equal(masked[~mask], patch[~mask])
    assert np.all(masked[mask] != patch[mask])  # continuous noise: a neighbour never equals the pixel
    for index in np.argwhere(mask):
        channel, point = index[0], tuple(index[1:])
        neighbours = _windows(patch[channel], point, radius=2)
        value = masked[(channel, *point)]
        if variant == "n2v":
            assert np.any(neighbours.astype(np.float32) == value)
        else:
            assert value == pytest.approx(np.median(neighbours), rel=1e-6)


@pytest.mark.parametrize("shape", [(1, 256, 256), (1, 32, 64, 64)])
def test_fraction_is_honoured_and_points_are_spread(shape):
    patch = _noise(shape)
    rng = np.random.default_rng(2)
    fraction = 0.004
    counts = [blind_spot_mask(patch, fraction=fraction, rng=rng)[1].sum() for _ in range(20)]
    expected = fraction * np.prod(shape)
    assert abs(np.mean(counts) - expected) < 0.05 * expected
    assert max(abs(c - expected) for c in counts) < 0.25 * expected  # stratified, not Poisson-like tails
    # stratified: every quarter of the patch gets its share
    mask = blind_spot_mask(patch, fraction=fraction, rng=rng)[1][0]
    half = [s // 2 for s in mask.shape[-2:]]
    for yy in (slice(None, half[0]), slice(half[0], None)):
        for xx in (slice(None, half[1]), slice(half[1], None)):
            share = mask[..., yy, xx].sum() / mask.sum()
            assert 0.15 < share < 0.35


def test_at_least_one_blind_spot_per_channel_and_channels_independent():
    patch = _noise((3, 8, 8))
    _, mask = blind_spot_mask(patch, fraction=1e-6, rng=np.random.default_rng(3))
    assert list(mask.reshape(3, -1).sum(axis=1)) == [1, 1, 1]
    _, mask = blind_spot_mask(_noise((3, 64, 64)), fraction=0.01, rng=np.random.default_rng(3))
    assert not np.array_equal(mask[0], mask[1])


def test_same_seed_same_result():
    patch = _noise((1, 32, 32, 32))
    first = blind_spot_mask(patch, fraction=0.01, rng=np.random.default_rng(7), variant="n2v")
    second = blind_spot_mask(patch, fraction=0.01, rng=np.random.default_rng(7), variant="n2v")
    other = blind_spot_mask(patch, fraction=0.01, rng=np.random.default_rng(8), variant="n2v")
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[1], other[1])


def test_edge_pixels_use_only_neighbours_inside():
    # a 2x2 patch with fraction 1: every pixel is a blind spot, each with three neighbours
    patch = np.array([[[1.0, 2.0], [3.0, 4.0]]], dtype=np.float32)
    masked, mask = blind_spot_mask(patch, fraction=1.0, rng=np.random.default_rng(0), variant="n2v2")
    assert mask.all()
    np.testing.assert_allclose(masked[0], [[3.0, 3.0], [2.0, 2.0]])
    masked, _ = blind_spot_mask(patch, fraction=1.0, rng=np.random.default_rng(0), variant="n2v", radius=1)
    assert np.all(masked != patch) and set(masked.ravel()) <= {1.0, 2.0, 3.0, 4.0}


@pytest.mark.parametrize("variant", ["n2v", "n2v2"])
def test_blind_spot_value_is_independent_of_the_hidden_pixel(variant):
    # on pure noise the replacement must carry no information about the pixel it hides
    patch = _noise((1, 256, 256), seed=11)
    masked, mask = blind_spot_mask(patch, fraction=0.05, rng=np.random.default_rng(4), variant=variant)
    correlation = np.corrcoef(patch[mask], masked[mask])[0, 1]
    assert mask.sum() > 2500
    assert abs(correlation) < 0.06  # about 3 standard errors


def test_integer_patch_gives_float32_and_input_errors():
    masked, _ = blind_spot_mask(np.arange(100, dtype=np.uint8).reshape(1, 10, 10), rng=np.random.default_rng(0))
    assert masked.dtype == np.float32
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="channel axis"):
        blind_spot_mask(np.zeros((8, 8), np.float32), rng=rng)
    with pytest.raises(DataError, match="two pixels"):
        blind_spot_mask(np.zeros((1, 1, 1), np.float32), rng=rng)
    with pytest.raises(ConfigError, match="fraction"):
        blind_spot_mask(np.zeros((1, 8, 8), np.float32), fraction=0.0, rng=rng)
    with pytest.raises(ConfigError, match="variant"):
        blind_spot_mask(np.zeros((1, 8, 8), np.float32), variant="n2v3", rng=rng)
    with pytest.raises(ConfigError, match="radius"):
        blind_spot_mask(np.zeros((1, 8, 8), np.float32), radius=0, rng=rng)


def test_loss_ignores_unmasked_pixels():
    target = torch.zeros(2, 1, 8, 8)
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    mask[0, 0, 2, 3] = mask[1, 0, 5, 5] = True
    prediction = torch.full((2, 1, 8, 8), 100.0)
    prediction[mask] = torch.tensor([1.0, 3.0])
    prediction.requires_grad_(True)
    loss = n2v_loss(prediction, target, mask)
    assert loss.item() == pytest.approx((1.0 + 9.0) / 2)
    loss.backward()
    assert torch.all(prediction.grad[~mask] == 0) and torch.all(prediction.grad[mask] != 0)
    # changing unmasked predictions (even to NaN) does not change the loss
    other = prediction.detach().clone()
    other[~mask] = float("nan")
    assert n2v_loss(other, target, mask).item() == pytest.approx(loss.item())


def test_loss_without_blind_spots_is_zero_and_shapes_are_checked():
    prediction = torch.ones(1, 1, 4, 4, requires_grad=True)
    loss = n2v_loss(prediction, torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    with pytest.raises(DataError, match="same shape"):
        n2v_loss(prediction, torch.zeros(1, 1, 4, 5), torch.zeros(1, 1, 4, 4, dtype=torch.bool))


def test_median_of_the_neighbours_inside_equals_numpys_nanmedian() -> None:
    """N2V2's replacement (a vectorised median of the neighbours inside the patch) is nanmedian's."""
    from microzoo.train.tasks.n2v_masking import _median_inside

    rng = np.random.default_rng(3)
    for _ in range(100):
        rows, width = int(rng.integers(1, 12)), int(rng.integers(1, 26))
        values = rng.normal(size=(rows, width)).astype(np.float32)
        inside = rng.random((rows, width)) < 0.7
        inside[:, int(rng.integers(width))] = True  # every blind spot has a neighbour inside
        expected = np.nanmedian(np.where(inside, values, np.nan), axis=1)
        np.testing.assert_allclose(_median_inside(values, inside), expected, rtol=0, atol=1e-6)
