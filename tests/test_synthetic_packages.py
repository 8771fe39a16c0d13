"""The synthetic model packages (tests/_packages.py) are valid and bioimageio.core runs them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _packages import BUILDERS, CORE_CANNOT_RUN, SPEC_CANNOT_CONVERT, WEIGHT_FORMATS, built_packages
from _reference import failure_messages, reference_predict, reference_test
from _reference import test_passed as core_test_passed


@pytest.fixture(scope="session")
def packages(tmp_path_factory) -> dict[str, Path]:
    return built_packages(tmp_path_factory)


def _load(rdf: Path):
    from bioimageio.spec import load_model_description

    return load_model_description(rdf, perform_io_checks=True, format_version="latest")


def _test_arrays(descr) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    from bioimageio.spec.utils import load_array

    return (
        {str(t.id): load_array(t.test_tensor) for t in descr.inputs},
        {str(t.id): load_array(t.test_tensor) for t in descr.outputs},
    )


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_spec_validation(packages, name):
    from bioimageio.spec import load_description
    from bioimageio.spec.model import v0_4, v0_5

    if name in SPEC_CANNOT_CONVERT:  # valid 0.4 that the spec cannot convert (microzoo repairs it)
        assert isinstance(load_description(packages[name], perform_io_checks=False), v0_4.ModelDescr)
        failed = load_description(packages[name], format_version="latest", perform_io_checks=False)
        assert SPEC_CANNOT_CONVERT[name] in str(failed.validation_summary.details[-1].errors)
        return
    descr = _load(packages[name])
    assert isinstance(descr, v0_5.ModelDescr), getattr(descr, "validation_summary", descr)
    assert descr.validation_summary.status == "valid-format"
    assert set(descr.weights.available_formats) == set(WEIGHT_FORMATS[name])


CORE_CASES = [(n, wf) for n in sorted(BUILDERS) if n not in CORE_CANNOT_RUN for wf in WEIGHT_FORMATS[n]]


@pytest.mark.parametrize(("name", "weight_format"), CORE_CASES, ids=[f"{n}-{w}" for n, w in CORE_CASES])
def test_core_test_model_passes(packages, name, weight_format):
    summary = reference_test(packages[name], weight_format)
    assert core_test_passed(summary), failure_messages(summary)


def test_core_cannot_run_output_statistics(packages):
    """Documents bioimageio.core 0.11's limitation; when this fails, core was fixed: drop
    ops_scale_mean_variance from CORE_CANNOT_RUN."""
    summary = reference_test(packages["ops_scale_mean_variance"], "torchscript")
    assert not core_test_passed(summary)
    assert any("restored" in m for m in failure_messages(summary))


def test_format_04_is_converted(packages):
    from bioimageio.spec import load_model_description
    from bioimageio.spec.model import v0_4

    raw = load_model_description(packages["format_04"], perform_io_checks=False)
    assert isinstance(raw, v0_4.ModelDescr)
    descr = _load(packages["format_04"])
    assert [a.id for a in descr.inputs[0].axes] == ["batch", "channel", "y", "x"]
    assert [p.id for p in descr.inputs[0].preprocessing][1] == "zero_mean_unit_variance"


def test_reference_predict_reproduces_test_outputs(packages):
    descr = _load(packages["parameterized"])
    inputs, expected = _test_arrays(descr)
    for wf in WEIGHT_FORMATS["parameterized"]:
        out = reference_predict(packages["parameterized"], inputs, weight_format=wf)
        np.testing.assert_allclose(out["prob"], expected["prob"], rtol=1e-4, atol=1e-5)


def test_reference_predict_shapes_follow_size_rules(packages):
    rng = np.random.default_rng(0)
    out = reference_predict(
        packages["scaled_output"], {"raw": rng.normal(size=(1, 1, 48, 80)).astype("float32")}, weight_format="onnx"
    )
    assert out["down"].shape == (1, 1, 24, 40)
    assert out["valid"].shape == (1, 1, 44, 76)
    out = reference_predict(
        packages["three_d"], {"raw": rng.normal(size=(2, 1, 12, 48, 32)).astype("float32")}, weight_format="torchscript"
    )
    assert out["out"].shape == (2, 1, 12, 48, 32)


def test_ops_outputs_are_not_trivial(packages):
    mask = _test_arrays(_load(packages["ops_fixed"]))[1]["mask"]
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    _, out = _test_arrays(_load(packages["ops_norm_act"]))
    assert out["prob"].shape[0] == 2 and 0 < out["prob"].min() and out["prob"].max() < 1
    np.testing.assert_allclose(out["classes"].sum(axis=1), 1.0, rtol=1e-5)
    restored = _test_arrays(_load(packages["ops_scale_mean_variance"]))
    np.testing.assert_allclose(
        restored[1]["restored"].mean(axis=(2, 3)), restored[0]["raw"].mean(axis=(2, 3)), rtol=1e-4
    )
