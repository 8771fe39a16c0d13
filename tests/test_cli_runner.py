"""The runner's commands as a user types them: validate, info, test, predict, and their errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from _trust import fingerprinted_copy

MICROZOO = [sys.executable, "-m", "microzoo.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}  # a wide terminal, so table cells do not wrap
    return subprocess.run([*MICROZOO, *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def two_images(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for path in sorted((shared_data / "dsb2018" / "test" / "images").glob("*.png"))[:2]:
        shutil.copy(path, folder / path.name)
    return folder


def test_test_command_passes_both_formats(example_model: Path) -> None:
    result = run("test", str(example_model))
    assert result.returncode == 0, result.stderr
    assert "pass  torchscript" in result.stdout and "pass  onnx" in result.stdout
    assert "mismatched per million" in result.stdout


def test_test_command_fails_with_exit_1_on_a_wrong_test_output(example_model: Path, tmp_path: Path) -> None:
    package = tmp_path / "model"
    shutil.copytree(example_model, package)
    expected = np.load(package / "test_output.npy")
    np.save(package / "test_output.npy", 1 - expected)
    from microzoo.package.load import sha256_of

    text = (package / "bioimageio.yaml").read_text()
    old = "39925fb38bc74530902e44bf8e43a8bd0a9e3675aab758d89f47dc66cb9818ed"
    (package / "bioimageio.yaml").write_text(text.replace(old, sha256_of(package / "test_output.npy")))
    result = run("test", str(package), "--weights", "onnx")
    assert result.returncode == 1
    assert "FAIL" in result.stdout


def test_validate_and_info(example_model: Path) -> None:
    result = run("validate", str(example_model))
    assert result.returncode == 0 and "valid" in result.stdout
    info = run("info", str(example_model))
    assert info.returncode == 0
    for expected in ("UNet 2D Nuclei Broad", "torchscript, onnx", "halo 32", "zero_mean_unit_variance", "MIT"):
        assert expected in info.stdout


def test_predict_folder_writes_one_output_per_image(example_model: Path, two_images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("predict", str(example_model), str(two_images), "-o", str(out), "--weights", "onnx")
    assert result.returncode == 0, result.stderr
    written = sorted(out.glob("*.tif"))
    assert [p.stem for p in written] == sorted(p.stem for p in two_images.glob("*.png"))
    probability = tifffile.imread(written[0])
    assert probability.shape == (256, 256) and 0 <= probability.min() and probability.max() <= 1
    assert "grayscale" in result.stdout
    assert not list(out.glob(".*partial*"))


def test_predict_refuses_to_overwrite_an_input(example_model: Path, tmp_path: Path) -> None:
    image = tmp_path / "cells.tif"
    tifffile.imwrite(image, np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    before = image.read_bytes()
    result = run("predict", str(example_model), str(image), "-o", str(image))
    assert result.returncode == 2
    assert "overwrite an input" in result.stderr and "Traceback" not in result.stderr
    assert image.read_bytes() == before


@pytest.mark.parametrize("case", ["corrupt", "nan", "one_dimensional", "no_match"])
def test_predict_bad_input_exits_2_and_writes_nothing(case: str, example_model: Path, tmp_path: Path) -> None:
    if case == "corrupt":
        source = tmp_path / "broken.tif"
        source.write_bytes(b"II*\x00" + b"\x00" * 20)
    elif case == "nan":
        source = tmp_path / "nan.tif"
        tifffile.imwrite(source, np.full((64, 64), np.nan, np.float32))
    elif case == "one_dimensional":
        source = tmp_path / "line.npy"
        np.save(source, np.arange(64, dtype=np.float32))
    else:
        source = tmp_path / "nothing-*.tif"
    out = tmp_path / "out"
    result = run("predict", str(example_model), str(source), "-o", str(out))
    assert result.returncode == 2, result.stderr
    assert "Error:" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_unknown_weight_format_exits_2(example_model: Path, two_images: Path, tmp_path: Path) -> None:
    result = run("predict", str(example_model), str(two_images), "-o", str(tmp_path / "o"), "--weights", "tensorflow")
    assert result.returncode == 2
    assert "unknown weight format 'tensorflow'" in result.stderr


def test_predict_adds_a_trust_note_from_the_training_fingerprint(
    example_model: Path, shared_data: Path, tmp_path: Path
) -> None:
    """A package that carries its training fingerprint warns about images unlike its training data."""
    package = fingerprinted_copy(example_model, shared_data, tmp_path / "model", n_images=40)
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(shared_data / "w2s" / "test" / "noisy" / "081.tif", images / "w2s_081.tif")
    result = run("predict", str(package), str(images), "-o", str(tmp_path / "out"), "--weights", "onnx")
    assert result.returncode == 0, result.stderr
    assert "1 of 1 image(s) differ from the model's training data" in result.stdout
    assert "w2s_081.tif" in result.stdout
    verdicts = json.loads((tmp_path / "out" / "trust.json").read_text())["images"]
    assert verdicts["w2s_081.tif"]["verdict"] == "differs" and "trust.json" in result.stdout
    plain = run("predict", str(example_model), str(images), "-o", str(tmp_path / "out2"), "--weights", "onnx")
    assert "carries no training fingerprint" in plain.stdout


def test_predict_keeps_axes_and_pixel_size_of_an_ome_tiff_stack(
    example_model: Path, shared_data: Path, tmp_path: Path
) -> None:
    """A z-stack runs slice by slice through the 2-D model; the output keeps zyx and the pixel size."""
    import imageio.v3 as iio

    from microzoo.io.read import read_image
    from microzoo.io.write import write_image

    paths = sorted((shared_data / "dsb2018" / "test" / "images").glob("*.png"))[:3]
    stack = np.stack([iio.imread(p)[:256, :256, 0] for p in paths])
    source = write_image(
        tmp_path / "stack.ome.tif", stack, "zyx", pixel_size={"z": 2.0, "y": 0.5, "x": 0.5}, unit="micrometer"
    )
    out = tmp_path / "out"
    result = run("predict", str(example_model), str(source), "-o", str(out), "--format", ".zarr")
    assert result.returncode == 0, result.stderr
    written = read_image(out / "stack.zarr")
    assert written.axes == "zyx" and written.data.shape == (3, 256, 256)
    assert written.pixel_size == {"z": 2.0, "y": 0.5, "x": 0.5}
    first_slice = microzoo_predict_slice(example_model, stack[0])
    np.testing.assert_allclose(np.asarray(written.data[0]), first_slice, atol=1e-5)


def microzoo_predict_slice(model_path: Path, image: np.ndarray) -> np.ndarray:
    import microzoo

    return microzoo.load_model(model_path).predict(image, axes="yx").only


def test_baseline_command_runs_a_classical_method_on_a_folder(two_images: Path, tmp_path: Path) -> None:
    result = run("baseline", "watershed", "--images", str(two_images), "-o", str(tmp_path / "labels"))
    assert result.returncode == 0, result.stderr
    labels = sorted((tmp_path / "labels").glob("*.tif"))
    assert len(labels) == 2 and tifffile.imread(labels[0]).max() > 3  # several nuclei found
    assert "s per image" in result.stdout
    bad = run("baseline", "gaussian", "--images", str(two_images), "-o", str(tmp_path / "g"), "--param", "sigma")
    assert bad.returncode == 2 and "NAME=VALUE" in bad.stderr


def test_every_commands_help_renders() -> None:
    """Help texts are rich markup: a bracket such as zoo:NAME[/VERSION] once broke `predict --help`."""
    from typer.main import get_command
    from typer.testing import CliRunner

    from microzoo.cli import app

    command = get_command(app)
    names = sorted(command.commands)  # type: ignore[attr-defined]
    assert "predict" in names
    for name in names:
        result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "120"})
        assert result.exit_code == 0, f"{name} --help: {result.output}{result.exception!r}"
