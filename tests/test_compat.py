"""Every package bioimageio.core runs, microzoo runs: format 0.4 descriptions the spec cannot
convert to 0.5, TensorFlow/Keras-only packages, remote files of formats not in use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _hostile import counting_port, edited_copy
from _packages import built_package
from _reference import reference_predict

import microzoo
from microzoo.package.load import open_package
from microzoo.package.validate import validate_package
from microzoo.runtime.reproduce import test_package


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICROZOO_CACHE", str(tmp_path / "cache"))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "microzoo.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )


@pytest.mark.parametrize("name, changed", [("format_04_fixed_halo", "halo"), ("format_04_cite_url", "cite")])
def test_format_04_the_spec_cannot_convert_runs_as_bioimageio_core_runs_it(
    name: str, changed: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from bioimageio.spec import InvalidDescr, load_description

    rdf = built_package(tmp_path_factory, name)
    # the case: valid 0.4, not convertible by the spec as it is
    assert not isinstance(load_description(rdf, format_version="discover", perform_io_checks=False), InvalidDescr)
    assert isinstance(load_description(rdf, format_version="latest", perform_io_checks=False), InvalidDescr)

    package = open_package(rdf)
    assert any(changed in notice for notice in package.notices), package.notices
    x = np.load(rdf.parent / "test_input.npy")
    ours = microzoo.load_model(package).predict_tensors({"raw": x}, tiled=False)["prob"]
    reference = reference_predict(rdf, {"raw": x}, weight_format="torchscript")["prob"]
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5)
    assert all(r.passed for r in test_package(package))
    report = validate_package(rdf)
    assert report.passed and any(changed in w.message for w in report.warnings)


def test_fixed_shape_halo_keeps_tiles_overlapping(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The repair keeps the halo: an image larger than the fixed 64x64 input, predicted in
    overlapping tiles, equals bioimageio.core's whole-image prediction by the same network and
    preprocessing (the ``format_04`` package, whose input size is free). Without the halo the tile
    borders would differ (the convolutions pad with zeros there). The image's own border (2 px,
    the network's reach) is left out: microzoo pads the image there, core's convolutions use zeros."""
    fixed = built_package(tmp_path_factory, "format_04_fixed_halo")
    free = built_package(tmp_path_factory, "format_04")
    package = open_package(fixed)
    assert package.descr.outputs[0].axes[2].halo == 8
    x = np.random.default_rng(0).normal(100.0, 10.0, size=(1, 1, 160, 160)).astype(np.float32)
    ours = microzoo.load_model(package).predict_tensors({"raw": x}, tiled=True)["prob"]
    reference = reference_predict(free, {"raw": x}, weight_format="torchscript")["prob"]
    assert ours.shape == reference.shape == x.shape
    np.testing.assert_allclose(ours[..., 2:-2, 2:-2], reference[..., 2:-2, 2:-2], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "weights_entry",
    [
        "  keras_hdf5:\n    source: weights.h5\n",
        "  tensorflow_saved_model_bundle:\n    source: weights.h5\n",
    ],
)
def test_tensorflow_or_keras_only_package_is_one_clear_error(
    weights_entry: str, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    rdf = built_package(tmp_path_factory, "keras_only")
    folder = edited_copy(
        rdf.parent,
        tmp_path / "pkg",
        lambda text: text.replace("  keras_hdf5:\n    source: weights.h5\n", weights_entry),
    )
    fmt = weights_entry.split(":")[0].strip()
    info = _cli("info", str(folder))
    assert info.returncode == 0, info.stderr
    assert fmt in info.stdout
    image = tmp_path / "image.npy"
    np.save(image, np.zeros((64, 64), np.float32))
    for args in (("predict", str(folder), str(image), "-o", str(tmp_path / "out")), ("test", str(folder))):
        result = _cli(*args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert f"cannot run '{fmt}'" in result.stderr
        assert "torchscript, onnx, pytorch_state_dict" in result.stderr
    assert not (tmp_path / "out").exists()


def test_remote_files_of_other_weight_formats_are_not_fetched(example_model: Path, tmp_path: Path) -> None:
    """The example names its onnx weights by URL (as several zoo packages do); it runs offline
    with torchscript, and nothing is contacted."""
    with counting_port() as (base, connections):
        folder = edited_copy(
            example_model,
            tmp_path / "pkg",
            lambda text: text.replace("    source: weights.onnx\n", f"    source: {base}/weights.onnx\n"),
        )
        (folder / "weights.onnx").unlink()
        package = open_package(folder)
        model = microzoo.load_model(package, weights="torchscript")
        x = np.load(folder / "test_input.npy")
        out = model.predict_tensors({"raw": x}, tiled=False)["probability"]
        assert out.shape == x.shape
        assert [r.passed for r in test_package(package, weight_format="torchscript")] == [True]
        report = validate_package(folder)
        assert report.passed, report.errors
        assert any("weights.onnx is not downloaded" in w.message for w in report.warnings)
        assert connections[0] == 0
