"""The hallucination check: what a restoration removes should be noise, on real W2S images."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from microzoo.io.read import read_array
from microzoo.trust.hallucination import EXCESS_LIMIT, ResidualStructure, hallucination_reasons, residual_structure


@pytest.fixture(scope="module")
def w2s_pair(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    folder = shared_data / "w2s" / "test"
    return read_array(folder / "noisy" / "081.tif"), read_array(folder / "clean" / "081.tif")


def test_removing_only_noise_leaves_a_residual_like_noise(w2s_pair: tuple[np.ndarray, np.ndarray]) -> None:
    """The 400-capture average as the output: the residual is the capture's noise, flat in frequency
    (excess about 1), whatever the output's scale (the output is fitted to the input first)."""
    noisy, clean = w2s_pair
    found = residual_structure(noisy, clean)
    assert found is not None and 0.85 < found.excess < 1.15 and 0 < found.removed < 1
    rescaled = residual_structure(noisy, clean.astype(np.float32) / 255.0 - 0.3)  # a normalised output
    assert rescaled is not None and rescaled.excess == pytest.approx(found.excess, rel=1e-6)
    score, reasons = hallucination_reasons(found, None, "restored")
    assert score < 1 and reasons == []


def test_over_smoothing_and_a_wrong_intensity_mapping_are_flagged(w2s_pair: tuple[np.ndarray, np.ndarray]) -> None:
    noisy, _ = w2s_pair
    smoothed = residual_structure(noisy, ndimage.gaussian_filter(noisy.astype(np.float64), 4.0))
    saturated = residual_structure(noisy, np.clip(ndimage.gaussian_filter(noisy.astype(np.float64), 1.5) * 4, 0, 255))
    light = residual_structure(noisy, ndimage.gaussian_filter(noisy.astype(np.float64), 1.0))
    assert smoothed is not None and saturated is not None and light is not None
    assert smoothed.excess > EXCESS_LIMIT and saturated.excess > EXCESS_LIMIT
    assert light.excess < 1  # a light blur removes less than the noise: nothing invented
    score, reasons = hallucination_reasons(smoothed, ResidualStructure(excess=1.0, removed=0.4), "restored")
    assert score > 1 and len(reasons) == 1
    assert reasons[0].startswith("output 'restored': the part the model removed is not noise")
    assert "1 on the package's test input" in reasons[0]


def test_outputs_of_another_shape_are_not_compared() -> None:
    assert residual_structure(np.zeros((64, 64)), np.zeros((32, 32))) is None
    assert residual_structure(np.zeros((64, 64)), np.zeros((64, 64, 2))) is None


def test_the_verdict_of_a_restoration_says_when_its_residual_holds_structure(
    example_model: Path, w2s_pair: tuple[np.ndarray, np.ndarray]
) -> None:
    """A reference whose test residual was noise (excess 1): an over-smoothed output differs."""
    from microzoo.package.load import open_package
    from microzoo.trust.reference import output_statistics, package_reference
    from microzoo.trust.verdict import judge_image

    noisy, clean = w2s_pair
    base = package_reference(open_package(example_model))
    restoration = dataclasses.replace(
        base,
        outputs={"restored": output_statistics(clean.astype(np.float32))},  # 0..255: not a probability
        residuals={"restored": ResidualStructure(excess=1.0, removed=0.4)},
    )
    good = judge_image(restoration, noisy, "081.tif", "yx", outputs={"restored": clean})
    blurred = ndimage.gaussian_filter(noisy.astype(np.float64), 4.0)
    bad = judge_image(restoration, noisy, "081.tif", "yx", outputs={"restored": blurred})
    assert "residual of the restoration" in good.checked and "output statistics" not in good.checked
    assert not any("removed" in r for r in good.reasons)
    assert bad.verdict == "differs" and any("the part the model removed is not noise" in r for r in bad.reasons)
