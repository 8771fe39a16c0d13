"""The runner: microzoo's predictions against bioimageio.core (the reference), tiling, and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _packages import built_package
from _reference import reference_predict

import microzoo
from microzoo.errors import ImageError, WeightFormatError
from microzoo.package.load import open_package
from microzoo.runtime.outputs import Outputs
from microzoo.runtime.reproduce import compare_outputs, test_package

RTOL = ATOL = 1e-3
ALLOWED_PER_MILLION = 100


def assert_agrees(actual: np.ndarray, expected: np.ndarray) -> None:
    """Within the spec's tolerance: at most 100 elements per million beyond atol + rtol*|expected|."""
    assert actual.shape == expected.shape
    _, per_million = compare_outputs(actual, expected, rtol=RTOL, atol=ATOL)
    assert per_million <= ALLOWED_PER_MILLION, f"{per_million:.0f} mismatched per million"


def _inputs(rdf: Path) -> dict[str, np.ndarray]:
    package = open_package(rdf)
    return {str(t.id): np.load(package.file(t.test_tensor.source)) for t in package.descr.inputs}


def test_example_model_reproduces_its_test_output(example_model: Path) -> None:
    results = test_package(open_package(example_model))
    assert {r.weight_format for r in results} == {"torchscript", "onnx"}
    assert all(r.passed for r in results), results
    assert max(r.max_abs_diff for r in results) < 1e-4


def test_predict_from_python_on_a_2d_array(example_model: Path) -> None:
    model = microzoo.load_model(example_model, weights="onnx")
    image = np.load(example_model / "test_input.npy")[0, 0]
    outputs = model.predict(image, axes="yx")
    assert isinstance(outputs, Outputs) and list(outputs) == ["probability"]
    probability = outputs["probability"]
    assert probability.shape == (512, 512) and outputs.only is probability
    assert np.asarray(outputs) is probability
    assert_agrees(probability, np.load(example_model / "test_output.npy")[0, 0])


def test_predict_returns_the_same_mapping_for_a_two_output_model(tmp_path_factory: pytest.TempPathFactory) -> None:
    rdf = built_package(tmp_path_factory, "two_in_two_out")
    model = microzoo.load_model(rdf)
    inputs = {tid: array[0] for tid, array in _inputs(rdf).items()}
    axes = {tid: "cyx" for tid in inputs}
    outputs = model.predict(inputs, axes=axes)
    assert isinstance(outputs, Outputs) and list(outputs) == model.output_ids
    with pytest.raises(microzoo.MicrozooError, match="2 outputs"):
        _ = outputs.only
    with pytest.raises(TypeError):
        outputs["x"] = np.zeros(1)  # read-only


@pytest.mark.parametrize(
    "name",
    [
        "parameterized",
        "scaled_output",
        "two_in_two_out",
        "format_04",
        "state_dict",
        "ops_fixed",
        "ops_stats",
        "ops_norm_act",
        "ops_chained",
        "three_d",
    ],
)
def test_synthetic_package_agrees_with_bioimageio_core(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    rdf = built_package(tmp_path_factory, name)
    package = open_package(rdf)
    inputs = _inputs(rdf)
    from microzoo.runtime.engines import SUPPORTED_FORMATS, available_formats

    for weight_format in [f for f in available_formats(package) if f in SUPPORTED_FORMATS]:
        model = microzoo.load_model(package, weights=weight_format)
        ours = model.predict_tensors(inputs, tiled=False)
        reference = reference_predict(rdf, inputs, weight_format=weight_format)
        for tid, expected in reference.items():
            assert ours[tid].dtype == expected.dtype or np.issubdtype(expected.dtype, np.floating), (
                tid,
                ours[tid].dtype,
            )
            assert_agrees(ours[tid], expected)
    assert all(r.passed for r in test_package(package))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.script is deprecated in torch 2.10+
def test_torchscript_is_optimised_for_inference_where_it_can_be() -> None:
    import torch

    from microzoo.runtime.engines import _optimized_for_inference

    network = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    network[1].running_mean.fill_(0.3)
    scripted = torch.jit.script(network.eval())
    optimised = _optimized_for_inference(scripted)
    assert optimised is not scripted
    x = torch.randn(1, 1, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(optimised(x), scripted(x), atol=1e-5)
    training = torch.jit.script(network.train())  # TorchScript freezes only modules in eval mode
    assert _optimized_for_inference(training) is training


def test_scale_mean_variance_reproduces_its_independent_test_output(tmp_path_factory: pytest.TempPathFactory) -> None:
    """bioimageio.core 0.11 cannot run output statistics ops; the test output was computed by hand."""
    package = open_package(built_package(tmp_path_factory, "ops_scale_mean_variance"))
    results = test_package(package)
    assert results and all(r.passed for r in results), results


def test_tiled_equals_whole_where_the_receptive_field_fits_the_halo(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The parameterized model's receptive field fits its halo: tiles stitch to the whole-image result."""
    rdf = built_package(tmp_path_factory, "parameterized")
    model = microzoo.load_model(rdf, weights="onnx")
    rng = np.random.default_rng(1)
    image = rng.normal(size=(1, 1, 160, 208)).astype(np.float32)  # valid whole size: 32 + n*16
    whole = model.predict_tensors({"raw": image}, tiled=False)["prob"]
    for tile in (48, 64, 96):
        tiled = model.predict_tensors({"raw": image}, tile=tile, tiled=True)["prob"]
        # away from the image border (where whole-image zero padding and tile padding differ)
        assert_agrees(tiled[..., 8:-8, 8:-8], whole[..., 8:-8, 8:-8])
        assert np.abs(tiled[..., 8:-8, 8:-8] - whole[..., 8:-8, 8:-8]).max() < 1e-4


def test_three_d_tiled_equals_whole(tmp_path_factory: pytest.TempPathFactory) -> None:
    rdf = built_package(tmp_path_factory, "three_d")
    model = microzoo.load_model(rdf, weights="torchscript")
    image = np.random.default_rng(2).normal(size=(1, 1, 16, 64, 80)).astype(np.float32)
    whole = next(iter(model.predict_tensors({"raw": image}, tiled=False).values()))
    tiled = next(iter(model.predict_tensors({"raw": image}, tile={"z": 8, "y": 32, "x": 32}, tiled=True).values()))
    inner = (..., slice(2, -2), slice(4, -4), slice(4, -4))
    assert np.abs(tiled[inner] - whole[inner]).max() < 1e-4


def test_example_model_tiled_agrees_with_core_blocks(example_model: Path) -> None:
    """A 1024x700 real image: 512 tiles with halo 32, as bioimageio.core cuts them."""
    import imageio.v3 as iio
    from bioimageio.core import create_prediction_pipeline, predict
    from bioimageio.spec import load_model_description

    images = sorted((example_model.parents[1] / "dsb2018" / "test" / "images").glob("1400420310c9*.png"))
    tile = iio.imread(images[0])[..., 0].astype(np.float32)  # 512x640 fluorescence
    image = np.concatenate([tile, tile[::-1]], axis=0)[:, :700]
    model = microzoo.load_model(example_model, weights="onnx")
    prediction = model.predict_image(image, axes="yx")
    assert prediction.n_tiles == 6
    descr = load_model_description(example_model / "bioimageio.yaml")
    pipeline = create_prediction_pipeline(descr, weight_format="onnx", devices=["cpu"])
    sample = predict(
        model=pipeline,
        inputs={"raw": image[None, None]},
        input_block_shape={"raw": {"batch": 1, "channel": 1, "y": 512, "x": 512}},
    )
    reference = np.squeeze(next(iter(sample.members.values())).data.values)
    assert_agrees(prediction.outputs["probability"], reference)


def test_rgba_png_is_converted_with_a_notice(example_model: Path, shared_data: Path) -> None:
    import imageio.v3 as iio

    path = sorted((shared_data / "dsb2018" / "test" / "images").glob("*.png"))[0]
    rgba = iio.imread(path)
    assert rgba.ndim == 3 and rgba.shape[-1] == 4
    model = microzoo.load_model(example_model)
    prediction = model.predict_image(rgba, axes="yxc")
    assert prediction.outputs["probability"].shape == rgba.shape[:2]
    assert any("grayscale" in n for n in prediction.notices)


def test_bad_inputs_get_clear_errors(example_model: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    model = microzoo.load_model(example_model)
    with pytest.raises(ImageError, match="axes"):
        model.predict(np.zeros((3, 64, 64), np.float32))  # 3-D without axes
    with pytest.raises(microzoo.MicrozooError, match="axes"):
        model.predict(np.zeros(64, np.float32), axes="x")  # too few dimensions
    with pytest.raises(ImageError, match="no finite values"):
        model.predict(np.full((64, 64), np.nan, np.float32), axes="yx")
    keras = built_package(tmp_path_factory, "keras_only")
    with pytest.raises(WeightFormatError, match="Supported formats: torchscript, onnx, pytorch_state_dict"):
        microzoo.load_model(keras)


def test_a_few_nan_and_inf_pixels_stay_local_and_are_reported(example_model: Path) -> None:
    """Three NaN and two infinite pixels in a real nuclei image: NaN at those five pixels of the
    output, the prediction elsewhere as for the image with the median in their place."""
    model = microzoo.load_model(example_model, weights="onnx")
    image = np.load(example_model / "test_input.npy")[0, 0].astype(np.float32)
    spots = [(10, 20), (100, 300), (256, 256), (400, 17), (511, 511)]
    broken = image.copy()
    for (y, x), value in zip(spots, [np.nan, np.nan, np.nan, np.inf, -np.inf], strict=True):
        broken[y, x] = value
    prediction = model.predict_image(broken, axes="yx")
    probability = prediction.outputs["probability"]
    bad = np.zeros(image.shape, bool)
    bad[tuple(zip(*spots, strict=True))] = True
    assert np.isnan(probability[bad]).all() and np.isfinite(probability[~bad]).all()
    patched = image.copy()
    patched[bad] = np.median(image[~bad])
    expected = model.predict_image(patched, axes="yx").outputs["probability"]
    assert_agrees(np.where(bad, expected, probability), expected)
    notice = next(n for n in prediction.notices if "not finite" in n)
    assert "5 of 262144 pixels" in notice and "3 NaN and 2 infinite" in notice
    assert "NaN in the output(s) probability" in notice
