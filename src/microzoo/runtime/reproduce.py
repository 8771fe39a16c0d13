"""Reproduce a package's test outputs from its test inputs (what ``microzoo test`` does).

Tolerances follow the spec: a value mismatches when ``|actual - expected| > atol + rtol * |expected|``;
the package passes when, for every output, mismatched elements per million stay within the limit.
Defaults are rtol 1e-3, atol 1e-3, 100 per million, unless the description's
``config.bioimageio.reproducibility_tolerance`` gives others for a weight format or output.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from microzoo.errors import PackageError
from microzoo.package.load import ModelPackage
from microzoo.progress import ProgressCallback
from microzoo.runtime.engines import SUPPORTED_FORMATS, available_formats, choose_format


@dataclasses.dataclass(frozen=True)
class OutputComparison:
    """How one reproduced output compares to the package's test output."""

    weight_format: str
    output_id: str
    max_abs_diff: float
    mismatched_per_million: float
    relative_tolerance: float
    absolute_tolerance: float
    allowed_per_million: float
    shape_ok: bool = True
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.shape_ok and self.mismatched_per_million <= self.allowed_per_million


def tolerance_for(descr: Any, weight_format: str, output_id: str) -> tuple[float, float, float]:
    """``(rtol, atol, mismatched per million)`` that apply to one weight format and output."""
    for entry in descr.config.bioimageio.reproducibility_tolerance:
        if (not entry.weights_formats or weight_format in entry.weights_formats) and (
            not entry.output_ids or output_id in [str(o) for o in entry.output_ids]
        ):
            return entry.relative_tolerance, entry.absolute_tolerance, entry.mismatched_elements_per_million
    return 1e-3, 1e-3, 100


def compare_outputs(actual: np.ndarray, expected: np.ndarray, *, rtol: float, atol: float) -> tuple[float, float]:
    """``(max abs difference, mismatched elements per million)`` of ``actual`` against ``expected``."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    diff = np.abs(actual - expected)
    mismatched = diff > atol + rtol * np.abs(expected)
    return float(np.nanmax(diff)) if diff.size else 0.0, float(mismatched.sum() / max(expected.size, 1) * 1e6)


def test_package(
    package: ModelPackage, *, weight_format: str | None = None, progress: ProgressCallback | None = None
) -> list[OutputComparison]:
    """Reproduce every test output with every supported weight format (or only ``weight_format``).

    Each input runs whole, in one forward pass, as the test tensors were made.
    """
    from microzoo.runtime.predict import Model

    formats = (
        [choose_format(package, weight_format)]
        if weight_format
        else [f for f in available_formats(package) if f in SUPPORTED_FORMATS]
    )
    if not formats:
        choose_format(package)  # raises the unsupported-format error
    inputs = {str(t.id): load_test_tensor(package, t) for t in package.descr.inputs}
    expected = {str(t.id): load_test_tensor(package, t) for t in package.descr.outputs}
    results: list[OutputComparison] = []
    for done, fmt in enumerate(formats):
        if progress:
            progress(done, len(formats), f"testing {fmt}")
        model = Model(package, weights=fmt)
        try:
            outputs = model.predict_tensors(inputs, tiled=False)
        except Exception as error:  # report a failing format and go on with the others
            for oid in expected:
                results.append(_not_compared(package, fmt, oid, error=f"{type(error).__name__}: {error}"))
            continue
        for oid, want in expected.items():
            rtol, atol, allowed = tolerance_for(package.descr, fmt, oid)
            got = outputs[oid]
            if got.shape != want.shape:
                problem = f"shape {got.shape} differs from the test output's {want.shape}"
                results.append(_not_compared(package, fmt, oid, error=problem, shape_ok=False))
                continue
            max_diff, ppm = compare_outputs(got, want, rtol=rtol, atol=atol)
            results.append(OutputComparison(fmt, oid, max_diff, ppm, rtol, atol, allowed))
    if progress:
        progress(len(formats), len(formats), "testing")
    return results


def _not_compared(package: ModelPackage, fmt: str, oid: str, *, error: str, shape_ok: bool = True) -> OutputComparison:
    """A failed comparison: no differences to report, only why (with the tolerances that applied)."""
    rtol, atol, allowed = tolerance_for(package.descr, fmt, oid)
    nan = float("nan")
    return OutputComparison(fmt, oid, nan, nan, rtol, atol, allowed, shape_ok=shape_ok, error=error)


test_package.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def load_test_tensor(package: ModelPackage, tensor: Any) -> np.ndarray:
    """The test tensor of an input or output tensor description, as the package stores it."""
    if tensor.test_tensor is None:
        raise PackageError(f"tensor '{tensor.id}' has no test tensor: the package cannot be tested")
    path = package.file(tensor.test_tensor.source)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise PackageError(f"cannot read the test tensor {path.name} ({error}): the package is damaged") from error
