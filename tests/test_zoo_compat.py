"""The compatibility matrix: which zoo tools run a version, why not, and the convert line that helps."""

from __future__ import annotations

from pathlib import Path

import pytest

from microzoo.package.load import open_package
from microzoo.zoo.compat import CONSUMERS, compat_matrix
from microzoo.zoo.summary import PackageSummary, summarize_package


@pytest.fixture(scope="module")
def example_summary(example_model: Path) -> PackageSummary:
    return summarize_package(open_package(example_model))


def with_formats(summary: PackageSummary, formats: list[str], format_version: str | None = None) -> PackageSummary:
    return summary.model_copy(
        update={"weight_formats": formats, "format_version": format_version or summary.format_version}
    )


def test_example_with_passing_tests_runs_everywhere(example_summary: PackageSummary) -> None:
    matrix = compat_matrix(example_summary, {"onnx": "passed", "torchscript": "passed"})
    assert matrix["validation"] == "passed" and matrix["format_version"] == "0.5.4"
    assert matrix["formats"] == {"onnx": "passed", "torchscript": "passed"}
    assert set(matrix["consumers"]) == {"bioimageio.core", "deepImageJ", "ilastik", "microzoo"}
    assert all(entry["runs"] for entry in matrix["consumers"].values())
    assert matrix["consumers"]["deepImageJ"]["formats"] == ["torchscript", "onnx"]
    assert matrix["consumers"]["deepImageJ"]["reason"] == "runs torchscript (test passed); also onnx"
    assert matrix["missing"] == {}


def test_a_state_dict_alone_is_not_for_deepimagej_and_convert_is_offered(example_summary: PackageSummary) -> None:
    summary = with_formats(example_summary, ["pytorch_state_dict"])
    matrix = compat_matrix(summary, {"pytorch_state_dict": "passed"}, package="https://zoo.example/m.zip")
    consumers = matrix["consumers"]
    assert [name for name, entry in consumers.items() if entry["runs"]] == ["bioimageio.core", "ilastik", "microzoo"]
    assert consumers["deepImageJ"]["reason"] == (
        "runs torchscript, onnx, tensorflow_saved_model_bundle; this package has pytorch_state_dict"
    )
    assert matrix["missing"] == {
        "deepImageJ": {
            "formats": ["torchscript"],
            "command": "microzoo convert https://zoo.example/m.zip --to torchscript -o OUT",
        }
    }


def test_a_failed_test_means_the_format_does_not_count(example_summary: PackageSummary) -> None:
    matrix = compat_matrix(example_summary, {"torchscript": "failed", "onnx": "passed"})
    deepimagej = matrix["consumers"]["deepImageJ"]
    assert deepimagej["runs"] and deepimagej["formats"] == ["onnx"]
    matrix = compat_matrix(example_summary, {"torchscript": "failed", "onnx": "error"})
    assert not any(entry["runs"] for entry in matrix["consumers"].values())
    assert matrix["consumers"]["microzoo"]["reason"] == (
        "its torchscript weights failed the test run; its onnx weights could not be test-run (error)"
    )
    # nothing that works to convert from: no command, and why
    assert all(
        entry["formats"] == [] and "microzoo convert adds" in entry["reason"] for entry in matrix["missing"].values()
    )


def test_formats_not_tested_yet_run_nowhere(example_summary: PackageSummary) -> None:
    matrix = compat_matrix(example_summary, {})
    assert matrix["formats"] == {"onnx": "not tested", "torchscript": "not tested"}
    assert not any(entry["runs"] for entry in matrix["consumers"].values())
    assert "are not tested yet" in matrix["consumers"]["ilastik"]["reason"]


def test_tensorflow_only_runs_in_deepimagej_and_core(example_summary: PackageSummary) -> None:
    summary = with_formats(example_summary, ["tensorflow_saved_model_bundle"])
    matrix = compat_matrix(summary, {"tensorflow_saved_model_bundle": "passed"})
    runs = {name for name, entry in matrix["consumers"].items() if entry["runs"]}
    assert runs == {"bioimageio.core", "deepImageJ"}
    assert matrix["missing"]["microzoo"]["formats"] == []  # convert needs a state dict or torchscript


def test_torchscript_alone_runs_everywhere(example_summary: PackageSummary) -> None:
    matrix = compat_matrix(with_formats(example_summary, ["torchscript"]), {"torchscript": "passed"})
    assert all(entry["runs"] for entry in matrix["consumers"].values()) and matrix["missing"] == {}


def test_a_format_version_a_consumer_does_not_read(example_summary: PackageSummary) -> None:
    summary = with_formats(example_summary, ["onnx"], format_version="0.3.6")
    matrix = compat_matrix(summary, {"onnx": "passed"})
    entry = matrix["consumers"]["deepImageJ"]
    assert not entry["runs"] and entry["reason"] == "reads format 0.4 and 0.5 descriptions; this one is 0.3.6"
    assert matrix["missing"] == {}  # a conversion would not help


def test_every_consumer_names_formats_the_zoo_knows() -> None:
    from bioimageio.spec.model.v0_5 import WeightsDescr

    known = set(WeightsDescr.model_fields)
    for name, consumer in CONSUMERS.items():
        assert set(consumer.formats) <= known, name
    assert "pytorch_state_dict" not in CONSUMERS["deepImageJ"].formats
