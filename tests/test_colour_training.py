"""Colour training: RGB data train a 3-channel model that the runtime runs on colour and grey images."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import yaml

from microzoo.errors import DataError
from microzoo.qc.image_features import guess_modality
from microzoo.runtime.batch import predict_files
from microzoo.runtime.predict import Model
from microzoo.train.config import instances_config
from microzoo.train.data import load_samples
from microzoo.train.run import train


@pytest.fixture(scope="module")
def mixed(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64x64 crops (RGBA PNG) of 3 fluorescence and 3 colour histology DSB2018 training images."""
    root = tmp_path_factory.mktemp("mixed")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    source = shared_data / "dsb2018" / "train"
    wanted = {"fluorescence": 3, "colour": 3}
    for path in sorted((source / "images").glob("*.png")):
        image = iio.imread(path)
        kind = guess_modality(image[..., :3])
        if wanted.get(kind, 0) > 0:
            wanted[kind] -= 1
            iio.imwrite(root / "images" / path.name, image[64:128, 64:128])
            tifffile.imwrite(root / "labels" / f"{path.stem}.tif",
                             tifffile.imread(source / "labels" / f"{path.stem}.tif")[64:128, 64:128])  # fmt: skip
        if not any(wanted.values()):
            return root
    raise AssertionError("DSB2018 train lacks 3 fluorescence and 3 colour images")


def test_colour_data_keep_three_channels_grey_data_one(mixed: Path, tmp_path: Path) -> None:
    config = instances_config(images=mixed / "images", labels=mixed / "labels", patch_size=32).data
    colour = load_samples(config, truth="labels")
    assert all(s.colour and s.raw.shape == (3, 64, 64) and s.truth.shape == (64, 64) for s in colour)
    first = colour[0]
    rgba = iio.imread(mixed / "images" / f"{first.name}.png")
    assert np.array_equal(first.raw, np.moveaxis(rgba[..., :3], -1, 0).astype(np.float32))  # alpha dropped
    grey = load_samples(config.model_copy(update={"colour": "grey"}), truth="labels")
    assert all(not s.colour and s.raw.shape == (1, 64, 64) for s in grey)
    assert np.allclose(grey[0].raw[0], first.grey)  # the grey copy a grey set trains on
    # fluorescence only: the three channels of each PNG are equal, so auto stays grey
    (tmp_path / "fluo").mkdir()
    for sample in colour:
        if np.ptp(sample.raw - sample.raw[0], axis=None) == 0:
            iio.imwrite(tmp_path / "fluo" / f"{sample.name}.png", rgba_of(sample.raw))
    assert len(list((tmp_path / "fluo").iterdir())) == 3
    fluo = load_samples(config.model_copy(update={"images": tmp_path / "fluo"}))
    assert all(not s.colour and s.raw.shape[0] == 1 for s in fluo)
    forced = load_samples(config.model_copy(update={"images": tmp_path / "fluo", "colour": "rgb"}))
    assert all(s.colour and s.raw.shape[0] == 3 for s in forced)
    (tmp_path / "tif").mkdir()
    tifffile.imwrite(tmp_path / "tif" / "a.tif", np.zeros((16, 16), np.uint8))
    with pytest.raises(DataError, match="no image is an RGB"):
        load_samples(config.model_copy(update={"images": tmp_path / "tif", "colour": "rgb"}))


def rgba_of(raw: np.ndarray) -> np.ndarray:
    rgb = np.moveaxis(raw, 0, -1).astype(np.uint8)
    return np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)


def test_a_colour_model_runs_on_rgba_and_grey_images_in_memory_and_streamed(mixed: Path, tmp_path: Path) -> None:
    config = instances_config(images=mixed / "images", labels=mixed / "labels", patch_size=32)
    config.network.depth, config.network.base_features = 2, 8
    config.data.validation_patches = 4
    config.training.epochs, config.training.steps_per_epoch, config.training.batch_size = 1, 2, 4
    config.training.export = True
    result = train(config, out_dir=tmp_path / "out")
    description = yaml.safe_load(result.package.read_text())
    channel_axis = next(a for a in description["inputs"][0]["axes"] if a["type"] == "channel")
    assert channel_axis["channel_names"] == ["red", "green", "blue"]
    model = Model.open(result.package.parent)
    rgba_path = sorted((mixed / "images").glob("*.png"))[1]
    colour = model.predict_image(iio.imread(rgba_path), axes="yxc")
    assert "dropped the alpha channel of an RGBA image for a 3-channel (colour) model" in colour.notices
    grey_image = iio.imread(rgba_path)[..., 0]
    grey = model.predict_image(grey_image, axes="yx")
    assert "repeated a grey image into the 3 channels of a colour model" in grey.notices
    (colour_axes,), (grey_axes,) = colour.axes.values(), grey.axes.values()
    assert (colour_axes, grey_axes) == ("yxc", "cyx")  # the output follows the input's layout
    assert colour.outputs.only.shape == (64, 64, 3) and grey.outputs.only.shape == (3, 64, 64)
    # the same grey image streamed into OME-Zarr: the same result away from the border, where
    # the streamed tile's padding differs from the whole image's
    tifffile.imwrite(tmp_path / "grey.tif", grey_image)
    (streamed,) = predict_files(model, [tmp_path / "grey.tif"], tmp_path / "grey.ome.zarr")
    assert streamed.prediction.notices == grey.notices
    centre = (slice(None), slice(16, 48), slice(16, 48))
    assert np.allclose(np.asarray(streamed.prediction.outputs.only)[centre], grey.outputs.only[centre], atol=1e-4)
