"""`microzoo convert`: new TorchScript and ONNX weights that reproduce the package's test outputs,
in a new package that microzoo and bioimageio.core both test as passing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _package_edits import with_altered_test_output, without_weights
from _packages import built_package
from _reference import failure_messages, reference_test, test_passed

from microzoo.errors import ConfigError, OutputError, PackageError, WeightFormatError
from microzoo.package.load import open_package
from microzoo.runtime.convert import convert_package
from microzoo.runtime.reproduce import test_package


def _weights(rdf: Path) -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(rdf.read_text())["weights"]


def _passes_microzoo_and_core(rdf: Path, fmt: str) -> None:
    results = test_package(open_package(rdf.parent), weight_format=fmt)
    assert results and all(r.passed for r in results), results
    summary = reference_test(rdf, fmt)
    assert test_passed(summary), failure_messages(summary)


@pytest.fixture(scope="module")
def state_dict_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_package(tmp_path_factory, "state_dict").parent


def test_example_torchscript_to_onnx(example_model: Path, tmp_path: Path) -> None:
    source = without_weights(example_model, tmp_path / "no-onnx", ["onnx"])
    seen: list[str] = []
    rdf = convert_package(source, ["onnx"], out_dir=tmp_path / "out", progress=lambda d, t, w: seen.append(w))
    weights = _weights(rdf)
    assert sorted(weights) == ["onnx", "torchscript"]
    assert weights["onnx"]["parent"] == "torchscript" and weights["onnx"]["opset_version"] == 17
    assert weights["torchscript"] == _weights(example_model / "bioimageio.yaml")["torchscript"]
    assert "reproducing the test outputs with onnx" in seen and seen[-1] == "package written"
    _passes_microzoo_and_core(rdf, "onnx")
    assert not (source / "weights.onnx").exists()  # the source package is left as it was


def test_state_dict_to_torchscript_and_onnx(state_dict_package: Path, tmp_path: Path) -> None:
    rdf = convert_package(state_dict_package, ["torchscript", "onnx"], out_dir=tmp_path / "out")
    weights = _weights(rdf)
    assert sorted(weights) == ["onnx", "pytorch_state_dict", "torchscript"]
    assert weights["torchscript"]["parent"] == weights["onnx"]["parent"] == "pytorch_state_dict"
    assert "(scripted)" in weights["torchscript"]["comment"]
    for fmt in ("torchscript", "onnx"):
        _passes_microzoo_and_core(rdf, fmt)


def test_parameterized_torchscript_to_onnx_keeps_dynamic_sizes(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """core's test runs other sizes and batches: the ONNX graph must not fix the test input's."""
    package = built_package(tmp_path_factory, "parameterized").parent
    source = without_weights(package, tmp_path / "ts-only", ["onnx", "pytorch_state_dict"])
    rdf = convert_package(source, ["onnx"], out_dir=tmp_path / "out")
    _passes_microzoo_and_core(rdf, "onnx")


def test_refusals_name_what_to_do(example_model: Path, state_dict_package: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightFormatError, match="has onnx weights already; ask only for formats it lacks"):
        convert_package(example_model, ["onnx"], out_dir=tmp_path / "a")
    with pytest.raises(WeightFormatError, match="made from pytorch_state_dict weights.*has only onnx"):
        convert_package(without_weights(example_model, tmp_path / "onnx-only", ["torchscript"]), ["torchscript"],
                        out_dir=tmp_path / "b")  # fmt: skip
    with pytest.raises(ConfigError, match="choose from torchscript, onnx"):
        convert_package(state_dict_package, ["tensorflow_saved_model_bundle"], out_dir=tmp_path / "c")
    with pytest.raises(OutputError, match="holds the package being converted"):
        convert_package(state_dict_package, ["onnx"], out_dir=state_dict_package)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not a model package"):
        convert_package(state_dict_package, ["onnx"], out_dir=tmp_path / "busy")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_a_conversion_that_does_not_reproduce_writes_nothing(state_dict_package: Path, tmp_path: Path) -> None:
    altered = with_altered_test_output(state_dict_package, tmp_path / "altered", by=0.5)
    with pytest.raises(PackageError, match=r"converted onnx weights do not reproduce .*max \|diff\| 0\.5"):
        convert_package(altered, ["onnx"], out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_cli_convert(state_dict_package: Path, tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    command = [sys.executable, "-m", "microzoo.cli", "convert", str(state_dict_package), "--to", "onnx"]
    done = subprocess.run([*command, "-o", str(tmp_path / "out")], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert f"wrote {tmp_path / 'out'}" in done.stdout and "onnx" in _weights(tmp_path / "out" / "bioimageio.yaml")
    again = subprocess.run([*command, "-o", str(tmp_path / "out2")], capture_output=True, text=True, env=env)
    assert again.returncode == 0  # the source has no onnx: converting it twice is fine
    command[4] = str(tmp_path / "out")  # the converted package has onnx now
    refused = subprocess.run([*command, "-o", str(tmp_path / "x")], capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "has onnx weights already" in refused.stderr
    assert "Traceback" not in refused.stderr
