"""Opening model packages: folder, zip, URL (loopback server), and the errors for damaged ones."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import zipfile
from pathlib import Path

import pytest

from microzoo.errors import ChecksumError, DownloadError, PackageError, WeightFormatError
from microzoo.package.load import open_package, sha256_of
from microzoo.package.validate import validate_package
from microzoo.runtime.engines import choose_format
from microzoo.runtime.summary import summarize


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICROZOO_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def package_copy(example_model: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(example_model, target)
    return target


def _zip_folder(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
    return target


@pytest.fixture
def loopback_server(tmp_path: Path):  # noqa: ANN201
    """Serve tmp_path/www on 127.0.0.1; yields the base URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep test output clean
        pass


def test_open_folder_reads_the_example(example_model: Path) -> None:
    package = open_package(example_model)
    assert package.name == "UNet 2D Nuclei Broad"
    assert package.original_format == "0.5.4"
    assert package.file(package.descr.weights.onnx.source).is_file()


def test_open_zip_extracts_into_cache_once(package_copy: Path, tmp_path: Path) -> None:
    archive = _zip_folder(package_copy, tmp_path / "model.zip")
    first = open_package(archive)
    second = open_package(archive)
    assert first.root == second.root
    assert str(first.root).startswith(str(tmp_path / "cache"))
    assert first.descr.name == "UNet 2D Nuclei Broad"


def test_open_url_of_zip_and_of_yaml(package_copy: Path, tmp_path: Path, loopback_server) -> None:  # noqa: ANN001
    root, base = loopback_server
    _zip_folder(package_copy, root / "model.zip")
    shutil.copytree(package_copy, root / "folder")
    from_zip = open_package(f"{base}/model.zip")
    from_yaml = open_package(f"{base}/folder/bioimageio.yaml")
    for package in (from_zip, from_yaml):
        weights = package.file(package.descr.weights.torchscript.source)
        assert sha256_of(weights) == package.descr.weights.torchscript.sha256


def test_missing_url_names_the_status(loopback_server) -> None:  # noqa: ANN001
    _, base = loopback_server
    with pytest.raises(DownloadError, match="404"):
        open_package(f"{base}/nothing.zip")


def test_corrupt_zip_is_refused(package_copy: Path, tmp_path: Path) -> None:
    archive = _zip_folder(package_copy, tmp_path / "model.zip")
    data = archive.read_bytes()
    (tmp_path / "broken.zip").write_bytes(data[: len(data) // 2])
    with pytest.raises(PackageError, match="zip"):
        open_package(tmp_path / "broken.zip")
    assert not (tmp_path / "cache" / "packages").exists() or not any((tmp_path / "cache" / "packages").iterdir())


def test_missing_weights_file_is_named(package_copy: Path) -> None:
    (package_copy / "weights.onnx").unlink()
    with pytest.raises(PackageError, match="weights.onnx"):
        open_package(package_copy)


def test_wrong_sha256_is_refused_naming_the_file(package_copy: Path) -> None:
    weights = package_copy / "weights.pt"
    weights.write_bytes(weights.read_bytes() + b"\0")
    with pytest.raises(ChecksumError, match="weights.pt") as info:
        open_package(package_copy)
    assert "download the package again" in str(info.value)


def test_unknown_and_unsupported_weight_formats(example_model: Path) -> None:
    package = open_package(example_model)
    with pytest.raises(WeightFormatError, match="unknown weight format 'caffe'"):
        choose_format(package, "caffe")
    with pytest.raises(WeightFormatError, match="cannot run 'keras_hdf5'.*Supported formats: torchscript"):
        choose_format(package, "keras_hdf5")
    with pytest.raises(WeightFormatError, match="no 'pytorch_state_dict' weights"):
        choose_format(package, "pytorch_state_dict")
    assert choose_format(package) == "torchscript"


def test_not_a_package(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PackageError, match="no model description"):
        open_package(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(PackageError, match="neither a folder"):
        open_package(tmp_path / "notes.txt")


def test_invalid_description_points_to_validate(package_copy: Path) -> None:
    description = package_copy / "bioimageio.yaml"
    text = description.read_text()
    description.write_text(text.replace("type: model", "type: model\nlicense: CC-BY-4.0"))
    with pytest.raises(PackageError, match="fix the YAML"):  # a duplicate key
        open_package(package_copy)
    description.write_text(text.replace("format_version: 0.5.4", "format_version: 0.5.4\nruns_on: nothing"))
    description.write_text(text.replace("  - id: probability", "  - id: Probability!"))
    with pytest.raises(PackageError, match="microzoo validate"):
        open_package(package_copy)


def test_validate_collects_errors_instead_of_raising(package_copy: Path, example_model: Path) -> None:
    good = validate_package(example_model)
    assert good.passed and good.format_version == "0.5.4"
    weights = package_copy / "weights.onnx"
    weights.write_bytes(weights.read_bytes()[:-10])
    bad = validate_package(package_copy)
    assert not bad.passed
    assert any("weights.onnx" in p.message or "onnx" in p.where for p in bad.errors)


def test_summary_lists_size_rules_and_processing(example_model: Path) -> None:
    summary = summarize(open_package(example_model))
    assert summary.weight_formats == ("torchscript", "onnx")
    assert "y: 512" in summary.inputs[0].size_rules
    assert any("halo 32" in rule for rule in summary.outputs[0].size_rules)
    assert any("zero_mean_unit_variance" in p for p in summary.inputs[0].processing)
    assert "segmentation" in summary.task
