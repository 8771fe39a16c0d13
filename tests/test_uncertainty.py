"""Uncertainty of a prediction: test-time augmentation, Monte-Carlo dropout and ensembles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _packages import built_package

import microzoo
from microzoo.errors import MicrozooError
from microzoo.io.axes import to_grayscale
from microzoo.io.read import read_image
from microzoo.runtime.uncertainty import TRANSFORMS, flip_rate, predict_with_uncertainty


@pytest.fixture(scope="module")
def nuclei_image(shared_data: Path) -> np.ndarray:
    """A fluorescence DSB2018 test image as grey, cropped to a non-square size."""
    path = sorted((shared_data / "dsb2018" / "test" / "images").iterdir())[0]
    image = read_image(path)
    return to_grayscale(np.asarray(image.data))[:200, :240].astype(np.float32)


def _symmetric_kernels(network) -> None:
    """Make every convolution kernel invariant under the 8 flips/rotations: the network is then
    equivariant to them (with zero 'same' padding)."""
    import torch

    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.Conv2d):
                w = module.weight
                turns = [torch.rot90(k, q, dims=(2, 3)) for k in (w, torch.flip(w, dims=(3,))) for q in range(4)]
                w.copy_(torch.stack(turns).mean(dim=0))


def test_the_identity_alone_reproduces_predict_image(example_model: Path, nuclei_image: np.ndarray) -> None:
    model = microzoo.load_model(example_model)
    expected = model.predict_image(nuclei_image)
    result = predict_with_uncertainty(model, nuclei_image, transforms=["identity"])
    assert result.members == 1 and result.method == "tta"
    np.testing.assert_array_equal(result.prediction.outputs["probability"], expected.outputs["probability"])
    assert result.prediction.axes == expected.axes
    assert result.prediction.notices == expected.notices
    assert not result.spread["probability"].any()
    assert result.flip_rate["probability"] == 0.0


def test_tta_on_the_example_model_gives_a_sane_spread(example_model: Path, nuclei_image: np.ndarray) -> None:
    model = microzoo.load_model(example_model)
    steps = []
    result = predict_with_uncertainty(
        model,
        nuclei_image,
        transforms=["identity", "flip_x", "rot90", "transpose"],
        progress=lambda done, total, _: steps.append((done, total)),
    )
    assert steps[-1] == (4, 4) and result.members == 4
    probability = result.prediction.outputs["probability"]
    spread = result.spread["probability"]
    assert probability.shape == spread.shape == nuclei_image.shape
    assert spread.dtype == np.float32 and spread.min() >= 0 and spread.max() <= 0.5
    assert spread.mean() > 0  # a U-Net is not exactly equivariant
    # the members disagree near object borders, not everywhere
    rate = result.flip_rate["probability"]
    assert rate is not None and 0 < rate < 0.5
    votes = result.votes["probability"]
    assert votes is not None and votes.shape == probability.shape and votes.max() == 4
    assert rate == flip_rate(votes, 4) == pytest.approx(np.mean((votes > 0) & (votes < 4)) / np.mean(votes > 0))
    # the mean lies between the members: never outside [0, 1]
    assert 0 <= probability.min() and probability.max() <= 1


def test_the_mean_of_an_equivariant_model_is_its_prediction(tmp_path_factory) -> None:
    model = microzoo.load_model(built_package(tmp_path_factory, "state_dict"))
    _symmetric_kernels(model.engine.module)
    image = np.random.default_rng(3).normal(size=(64, 96)).astype(np.float32)  # valid sizes: no padding
    expected = model.predict_image(image).outputs["out"]
    result = predict_with_uncertainty(model, image)
    assert result.members == len(TRANSFORMS) == 8
    np.testing.assert_allclose(result.prediction.outputs["out"], expected, atol=1e-5)
    assert result.spread["out"].max() < 1e-5
    assert result.flip_rate["out"] is None  # the output is not a probability


def test_transforms_are_the_dihedral_group_and_turn_back() -> None:
    from microzoo.runtime.uncertainty import _turn

    image = np.arange(12).reshape(3, 4)
    turned = {name: _turn(image, "yx", name) for name in TRANSFORMS}
    assert len({t.tobytes() + bytes(t.shape) for t in turned.values()}) == 8
    for name in TRANSFORMS:
        np.testing.assert_array_equal(_turn(turned[name], "yx", name, inverse=True), image)
    np.testing.assert_array_equal(turned["flip_y"], image[::-1])
    np.testing.assert_array_equal(turned["transpose"], image.T)
    # channel-first and channel-last layouts turn only y and x
    stack = np.stack([image, image + 100])
    np.testing.assert_array_equal(_turn(stack, "cyx", "rot90")[1], np.rot90(image + 100))
    np.testing.assert_array_equal(_turn(np.moveaxis(stack, 0, -1), "yxc", "flip_x")[..., 0], image[:, ::-1])


def test_an_ensemble_of_one_model_twice_has_no_spread(tmp_path_factory) -> None:
    path = built_package(tmp_path_factory, "parameterized")
    model, again = microzoo.load_model(path), microzoo.load_model(path, weights="onnx")
    image = np.random.default_rng(4).normal(size=(48, 64)).astype(np.float32)
    result = predict_with_uncertainty(model, image, method="ensemble", ensemble=[again])
    assert result.members == 2 and result.method == "ensemble"
    np.testing.assert_allclose(result.prediction.outputs["prob"], model.predict(image)["prob"], atol=1e-4)
    assert result.spread["prob"].max() < 1e-4
    other = microzoo.load_model(built_package(tmp_path_factory, "state_dict"))
    with pytest.raises(MicrozooError, match="same outputs"):
        predict_with_uncertainty(model, image, method="ensemble", ensemble=[other])
    with pytest.raises(MicrozooError, match="needs other models"):
        predict_with_uncertainty(model, image, method="ensemble")


def test_dropout_samples_a_network_with_dropout_layers(tmp_path_factory) -> None:
    import torch

    model = microzoo.load_model(built_package(tmp_path_factory, "state_dict"))
    image = np.random.default_rng(5).normal(size=(64, 64)).astype(np.float32)
    with pytest.raises(MicrozooError, match="no Dropout layers"):
        predict_with_uncertainty(model, image, method="dropout")
    network = model.engine.module
    network.net.insert(1, torch.nn.Dropout2d(0.5).eval())  # as a loaded network is
    plain = model.predict_image(image).outputs["out"]  # eval mode: dropout off
    first = predict_with_uncertainty(model, image, method="dropout", samples=6)
    again = predict_with_uncertainty(model, image, method="dropout", samples=6)
    assert first.members == 6 and first.method == "dropout"
    assert first.spread["out"].mean() > 0.01
    np.testing.assert_array_equal(first.spread["out"], again.spread["out"])  # seeded: repeatable
    assert not network.training and not any(m.training for m in network.modules())  # eval mode again
    np.testing.assert_array_equal(model.predict_image(image).outputs["out"], plain)


def test_dropout_is_refused_without_the_network(example_model: Path) -> None:
    model = microzoo.load_model(example_model)
    with pytest.raises(MicrozooError, match="pytorch_state_dict.*tta"):
        predict_with_uncertainty(model, np.zeros((64, 64), np.float32), method="dropout")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"method": "bayes"}, "unknown uncertainty method"),
        ({"transforms": ["identity", "shear"]}, "unknown transform"),
        ({"method": "dropout", "samples": 1}, "at least 2 samples"),
    ],
)
def test_bad_options_are_refused(tmp_path_factory, options, message) -> None:
    model = microzoo.load_model(built_package(tmp_path_factory, "parameterized"))
    with pytest.raises(MicrozooError, match=message):
        predict_with_uncertainty(model, np.zeros((32, 32), np.float32), **options)


def test_an_image_without_y_and_x_is_refused(tmp_path_factory) -> None:
    from microzoo.errors import AxesError, ImageError

    model = microzoo.load_model(built_package(tmp_path_factory, "parameterized"))
    with pytest.raises(AxesError, match="say which axes"):
        predict_with_uncertainty(model, np.zeros((2, 32, 32), np.float32))
    with pytest.raises(ImageError, match="turns the y, x plane.*axes 'zyc'"):
        predict_with_uncertainty(model, np.zeros((2, 32, 3), np.float32), axes="zyc")


# --- files and the command line -----------------------------------------------------------------


def test_predict_files_writes_the_mean_and_the_spread_beside_it(tmp_path_factory, tmp_path: Path) -> None:
    import tifffile

    from microzoo.errors import ImageError, OutputError
    from microzoo.runtime.batch import predict_files

    two_outputs = microzoo.load_model(built_package(tmp_path_factory, "scaled_output"))
    single = microzoo.load_model(built_package(tmp_path_factory, "parameterized"))
    rng = np.random.default_rng(6)
    inputs = []
    for name in ("a", "b"):
        inputs.append(tmp_path / "in" / f"{name}.tif")
        inputs[-1].parent.mkdir(exist_ok=True)
        tifffile.imwrite(inputs[-1], rng.normal(size=(48, 64)).astype(np.float32))
    results = predict_files(single, inputs, tmp_path / "out", uncertainty="tta")
    for path, result in zip(inputs, results, strict=True):
        assert result.uncertainty_maps == {"prob": tmp_path / "out" / f"{path.stem}_uncertainty.tif"}
        expected = predict_with_uncertainty(single, tifffile.imread(path))
        np.testing.assert_array_equal(tifffile.imread(result.outputs["prob"]), expected.prediction.outputs["prob"])
        np.testing.assert_array_equal(tifffile.imread(result.uncertainty_maps["prob"]), expected.spread["prob"])
        assert result.uncertainty is not None and result.uncertainty.members == 8
    with pytest.raises(OutputError, match="exists already"):  # the maps are outputs like the others
        (tmp_path / "out" / "a.tif").unlink()
        predict_files(single, inputs[:1], tmp_path / "out", uncertainty="tta")
    with pytest.raises(ImageError, match="in memory"):
        predict_files(single, inputs[:1], tmp_path / "zarr", suffix=".ome.zarr", uncertainty="tta")
    assert not (tmp_path / "zarr").exists() or not any((tmp_path / "zarr").iterdir())
    with pytest.raises(MicrozooError, match="unknown uncertainty method"):
        predict_files(single, inputs[:1], tmp_path / "bad", uncertainty="bayes")
    [result] = predict_files(two_outputs, inputs[:1], tmp_path / "two", uncertainty="tta")
    assert result.uncertainty_maps == {o: tmp_path / "two" / f"a_{o}_uncertainty.tif" for o in ("down", "valid")}
    assert tifffile.imread(result.uncertainty_maps["down"]).shape == (24, 32)  # 2x pooled, turned back
    assert tifffile.imread(result.uncertainty_maps["valid"]).shape == (44, 60)


def test_cli_predict_with_uncertainty(example_model: Path, shared_data: Path, tmp_path: Path) -> None:
    import os
    import shutil
    import subprocess
    import sys

    import tifffile

    images = tmp_path / "images"
    images.mkdir()
    source = sorted((shared_data / "dsb2018" / "test" / "images").glob("*.png"))[0]
    shutil.copy(source, images / source.name)
    command = [
        sys.executable,
        "-m",
        "microzoo.cli",
        "predict",
        str(example_model),
        str(images),
        "-o",
        str(tmp_path / "out"),
    ]
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run([*command, "--uncertainty", "tta"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "uncertainty (tta, 8 predictions each): 1 map(s)" in done.stdout
    assert "disagree on up to" in done.stdout
    spread = tifffile.imread(tmp_path / "out" / f"{source.stem}_uncertainty.tif")
    mean = tifffile.imread(tmp_path / "out" / f"{source.stem}.tif")
    assert spread.shape == mean.shape and spread.dtype == np.float32 and 0 < spread.max() <= 0.5
    refused = subprocess.run(
        [*command[:-1], str(tmp_path / "again"), "--uncertainty", "dropout"], capture_output=True, text=True, env=env
    )
    assert refused.returncode == 2 and "pytorch_state_dict" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
