"""Mapping image axes onto model axes and model outputs back."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import rgb2gray

from microzoo.errors import AxesError
from microzoo.io.axes import (
    AxesMapping,
    check_axes,
    ids_to_letters,
    letters_to_ids,
    map_from_model,
    map_to_model,
)

BCYX = ("batch", "channel", "y", "x")
BCZYX = ("batch", "channel", "z", "y", "x")
RNG = np.random.default_rng(1)


def test_letters_and_ids() -> None:
    assert letters_to_ids("bitczyx") == ("batch", "index", "time", "channel", "z", "y", "x")
    assert ids_to_letters(BCYX) == "bcyx"
    assert check_axes("TCZYX", ndim=5) == "tczyx"
    with pytest.raises(AxesError, match="'excitation'"):
        ids_to_letters(("batch", "excitation", "y", "x"))
    with pytest.raises(AxesError, match="unknown letters"):
        letters_to_ids("yq")
    with pytest.raises(AxesError, match="repeat"):
        check_axes("yxy")


def test_yx_gets_batch_and_channel() -> None:
    image = RNG.random((16, 12)).astype("float32")
    x, mapping = map_to_model(image, "yx", BCYX, channels=1)
    assert x.shape == (1, 1, 16, 12)
    assert mapping.notices == ()
    out, axes = map_from_model(x * 2, BCYX, mapping)
    assert axes == "yx"
    np.testing.assert_array_equal(out, image * 2)


def test_model_order_and_channels_last_image() -> None:
    image = RNG.random((16, 12, 2)).astype("float32")
    x, mapping = map_to_model(image, "yxc", BCYX, channels=2)
    assert x.shape == (1, 2, 16, 12)
    np.testing.assert_array_equal(x[0, 1], image[..., 1])
    out, axes = map_from_model(x, BCYX, mapping)
    assert axes == "yxc"
    np.testing.assert_array_equal(out, image)


@pytest.mark.parametrize(("axes", "n"), [("yxc", 3), ("yxc", 4), ("cyx", 3), ("cyx", 4)])
def test_rgb_to_one_channel_model_is_grayscale(axes: str, n: int) -> None:
    rgb = RNG.integers(0, 256, size=(16, 12, n)).astype("uint8")
    image = rgb if axes == "yxc" else np.moveaxis(rgb, -1, 0)
    x, mapping = map_to_model(image, axes, BCYX, channels=1)
    assert x.shape == (1, 1, 16, 12)
    expected = rgb2gray(rgb[..., :3]) * 255  # same weights, intensities kept in the image's range
    np.testing.assert_allclose(x[0, 0], expected, rtol=1e-5, atol=1e-3)
    assert len(mapping.notices) == 1
    assert "converted RGB to grayscale for a 1-channel model" in mapping.notices[0]
    assert ("alpha dropped" in mapping.notices[0]) == (n == 4)
    out, out_axes = map_from_model(x, BCYX, mapping)
    # the colour axis was used up by the conversion: a 1-channel output comes back as plain yx
    assert out_axes == "yx" and out.shape == (16, 12)


def test_two_channels_to_one_channel_model_is_an_error() -> None:
    with pytest.raises(AxesError) as info:
        map_to_model(np.zeros((2, 16, 12)), "cyx", BCYX, channels=1)
    message = str(info.value)
    assert "'cyx'" in message and "2 channels" in message and "1 channel" in message
    assert "--axes" in message and "choose" in message


def test_missing_channels_is_an_error() -> None:
    with pytest.raises(AxesError, match="no channel axis.*3 channels.*--axes"):
        map_to_model(np.zeros((16, 12)), "yx", BCYX, channels=3)


def test_zstack_runs_slice_by_slice_on_2d_model() -> None:
    stack = np.stack([np.full((16, 12), k, dtype="float32") for k in range(5)])
    x, mapping = map_to_model(stack, "zyx", BCYX, channels=1)
    assert x.shape == (5, 1, 16, 12)
    assert mapping.folded_axes == "z" and mapping.folded_shape == (5,)
    assert [float(x[k].mean()) for k in range(5)] == [0, 1, 2, 3, 4]  # order kept
    out, axes = map_from_model(x + 10, BCYX, mapping)
    assert axes == "zyx"
    np.testing.assert_array_equal(out, stack + 10)


def test_time_and_z_folded_with_multichannel_output() -> None:
    image = RNG.random((3, 4, 8, 6)).astype("float32")  # t z y x
    x, mapping = map_to_model(image, "tzyx", BCYX, channels=1)
    assert x.shape == (12, 1, 8, 6)
    np.testing.assert_array_equal(x[2 * 4 + 1, 0], image[2, 1])
    output = np.concatenate([x, -x], axis=1)  # a model with 2 output channels
    out, axes = map_from_model(output, BCYX, mapping)
    assert axes == "tczyx" and out.shape == (3, 2, 4, 8, 6)
    np.testing.assert_array_equal(out[:, 1], -image)


def test_tczyx_to_bczyx() -> None:
    image = RNG.random((2, 3, 4, 8, 6)).astype("float32")
    x, mapping = map_to_model(image, "tczyx", BCZYX, channels=3)
    assert x.shape == (2, 3, 4, 8, 6) and mapping.folded_axes == "t"
    np.testing.assert_array_equal(x, image)
    out, axes = map_from_model(x[:, :1], BCZYX, mapping)  # one output channel
    assert axes == "tczyx" and out.shape == (2, 1, 4, 8, 6)  # kept: the image had channels


def test_output_spatial_size_may_differ() -> None:
    x, mapping = map_to_model(np.zeros((3, 8, 6)), "zyx", BCYX, channels=1)
    out, axes = map_from_model(np.zeros((3, 1, 16, 12)), BCYX, mapping)
    assert axes == "zyx" and out.shape == (3, 16, 12)


def test_3d_model_given_2d_image_is_an_error() -> None:
    with pytest.raises(AxesError, match="needs a z axis.*'yx'"):
        map_to_model(np.zeros((16, 12)), "yx", BCZYX, channels=1)


def test_folding_needs_a_batch_axis() -> None:
    with pytest.raises(AxesError, match="no batch axis"):
        map_to_model(np.zeros((3, 16, 12)), "zyx", ("channel", "y", "x"), channels=1)
    x, mapping = map_to_model(np.zeros((1, 16, 12)), "zyx", ("y", "x"), channels=None)
    assert x.shape == (16, 12) and mapping.squeezed_axes == "z"
    out, axes = map_from_model(x, ("y", "x"), mapping)
    assert axes == "zyx" and out.shape == (1, 16, 12)


def test_image_batch_joins_model_batch() -> None:
    image = RNG.random((2, 3, 8, 6))
    x, mapping = map_to_model(image, "bzyx", BCYX, channels=1)
    assert x.shape == (6, 1, 8, 6)
    out, axes = map_from_model(x, BCYX, mapping)
    assert axes == "bzyx"
    np.testing.assert_array_equal(out, image)


def test_wrong_batch_size_and_inputs_not_mutated() -> None:
    image = np.arange(2 * 4 * 4).reshape(2, 4, 4)
    before = image.copy()
    x, mapping = map_to_model(image, "zyx", BCYX, channels=1)
    map_from_model(x, BCYX, mapping)
    np.testing.assert_array_equal(image, before)
    assert isinstance(mapping, AxesMapping)
    with pytest.raises(AxesError, match="batch size 3"):
        map_from_model(np.zeros((3, 1, 4, 4)), BCYX, mapping)


def test_axes_must_match_ndim() -> None:
    with pytest.raises(AxesError, match="2 dimensions"):
        map_to_model(np.zeros((4, 4)), "zyx", BCYX, channels=1)
