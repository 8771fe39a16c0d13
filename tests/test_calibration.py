"""Calibration of segmentation probabilities: reliability diagrams and ECE, in evaluate, compare and the report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from microzoo.errors import DataError
from microzoo.qc.calibration import calibration_by_method, foreground_probability, reliability
from microzoo.qc.evaluate import evaluate, write_evaluation


def _sampled(rng: np.random.Generator, shape: tuple[int, ...], squeeze: float) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities, and a truth drawn with probability ``0.5 + squeeze * (p - 0.5)`` per pixel."""
    probability = rng.uniform(size=shape)
    truth = rng.uniform(size=shape) < 0.5 + squeeze * (probability - 0.5)
    return probability, truth


def test_a_calibrated_model_has_ece_near_zero_and_an_overconfident_one_does_not() -> None:
    rng = np.random.default_rng(0)
    calibrated = reliability(*_sampled(rng, (1000, 1000), 1.0))
    assert calibrated.ece < 0.005
    np.testing.assert_allclose(calibrated.accuracy, calibrated.confidence, atol=0.005)
    assert calibrated.counts.sum() == 1_000_000 and len(calibrated.edges) == 11
    # truth half as sure as the model: |acc - conf| = 0.5 |p - 0.5|, whose mean over uniform p is 0.125
    overconfident = reliability(*_sampled(rng, (1000, 1000), 0.5))
    assert overconfident.ece == pytest.approx(0.125, abs=0.005)
    high = overconfident.confidence > 0.5
    assert (overconfident.accuracy[high] < overconfident.confidence[high]).all()  # below the diagonal


def test_images_are_pooled_and_the_interval_resamples_images() -> None:
    rng = np.random.default_rng(1)
    pairs = [_sampled(rng, (64, 64), 0.5) for _ in range(12)]
    probabilities, truths = [p for p, _ in pairs], [t for _, t in pairs]
    pooled = reliability(probabilities, truths)
    assert pooled.ece == pytest.approx(reliability(np.stack(probabilities), np.stack(truths)).ece)
    result = calibration_by_method({"model": probabilities}, truths, n_bootstrap=300)["model"]
    assert result.ece == pytest.approx(pooled.ece)
    assert result.ece_low < result.ece < result.ece_high < result.ece + 0.05
    one = calibration_by_method({"model": probabilities[:1]}, truths[:1])["model"]
    assert np.isnan(one.ece_low) and np.isnan(one.ece_high)
    assert json.dumps(one.to_dict(), allow_nan=False)


@pytest.mark.parametrize(
    ("probability", "truth", "message"),
    [
        (np.full((4, 4), 0.5), np.zeros((4, 5)), "differ in shape"),
        (np.full((4, 4), 1.5), np.zeros((4, 4)), r"within \[0, 1\]"),
        (np.full((4, 4), np.nan), np.zeros((4, 4)), r"within \[0, 1\]"),
    ],
)
def test_bad_inputs_are_refused(probability, truth, message) -> None:
    with pytest.raises(DataError, match=message):
        reliability(probability, truth)


def test_the_foreground_probability_of_an_output() -> None:
    one = np.full((1, 3, 3), 0.25)
    np.testing.assert_array_equal(foreground_probability(one), one[0])
    softmax = np.stack([np.full((3, 3), 0.7), np.full((3, 3), 0.2), np.full((3, 3), 0.1)])
    np.testing.assert_allclose(foreground_probability(softmax), 0.3)
    assert foreground_probability(np.full((1, 3, 3), 2.0)) is None  # a distance map, not a probability


def test_evaluate_reports_the_calibration_when_probabilities_are_given(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    pairs = [_sampled(rng, (48, 48), 0.5) for _ in range(4)]
    truths = [t.astype(np.int64) for _, t in pairs]
    predictions = {"model": [(p > 0.5).astype(np.int64) for p, _ in pairs], "otsu": truths}
    evaluation = evaluate(
        predictions, truths, task="semantic", probabilities={"model": [p for p, _ in pairs]}, n_bootstrap=200
    )
    assert set(evaluation.calibration) == {"model"}
    assert evaluation.calibration["model"].ece == pytest.approx(0.125, abs=0.03)
    paths = write_evaluation(evaluation, tmp_path, truths=truths, predictions=predictions)
    document = json.loads(paths["metrics"].read_text())
    assert document["calibration"]["model"]["ece"] == pytest.approx(evaluation.calibration["model"].ece)
    assert document["figures"]["reliability"]["model"]["counts"] == evaluation.calibration["model"].counts.tolist()
    html = paths["report"].read_text()
    assert "Calibration of the foreground probabilities" in html and "reliability diagram" in html
    plain = evaluate(predictions, truths, task="semantic", n_bootstrap=10)
    assert not plain.calibration and "calibration" not in plain.to_dict()
    assert (
        "Calibration"
        not in write_evaluation(plain, tmp_path / "plain", truths=truths, predictions=predictions)["report"].read_text()
    )
    with pytest.raises(DataError, match="no predictions"):
        evaluate(predictions, truths, task="semantic", probabilities={"unet": [p for p, _ in pairs]})
    with pytest.raises(DataError, match="segmentation"):
        evaluate({"m": [p for p, _ in pairs]}, [p for p, _ in pairs], task="restoration", probabilities={"m": []})


def test_compare_passes_the_models_probabilities(example_model: Path, shared_data: Path, tmp_path: Path) -> None:
    from microzoo.qc.compare import compare

    images, truth = tmp_path / "images", tmp_path / "truth"
    images.mkdir()
    truth.mkdir()
    for path in sorted((shared_data / "dsb2018" / "test" / "images").glob("*.png"))[:2]:
        shutil.copy(path, images / path.name)
        shutil.copy(shared_data / "dsb2018" / "test" / "labels" / f"{path.stem}.tif", truth)
    result = compare(
        [str(example_model)], images_dir=images, truth_dir=truth, task="instances", classical=True, out_dir=tmp_path
    )
    calibration = result.evaluation.calibration
    assert set(calibration) == {"UNet 2D Nuclei Broad"}  # the classical baseline gives no probabilities
    model = calibration["UNet 2D Nuclei Broad"]
    assert 0 < model.ece < 0.5
    assert model.counts.sum() == sum(tifffile.imread(p).size for p in truth.iterdir())  # every pixel once
    assert "Calibration of the foreground probabilities" in (tmp_path / "report.html").read_text()
