"""The verdict against the classical baseline: kind, signed difference, interval, advice, the line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from _labels import fluorescent_nuclei, three_squares
from typer.testing import CliRunner

from microzoo.cli import app
from microzoo.errors import DataError
from microzoo.qc.compare import compare
from microzoo.qc.evaluate import evaluate
from microzoo.qc.verdict import baseline_verdict, best_baseline


def test_better_and_worse_read_the_paired_interval_from_either_side():
    truths, missing = three_squares()
    evaluation = evaluate({"baseline": missing, "net": truths}, truths, task="instances", n_bootstrap=300)
    good = baseline_verdict(evaluation, "net", "baseline")
    assert good.kind == "better" and good.metric == "f1@0.5"
    assert good.difference == pytest.approx(1.0 - 0.8)  # f1 of 2 found out of 3: 0.8
    assert 0 < good.interval[0] <= good.difference <= good.interval[1]
    assert good.line.startswith("Verdict: net is better than the classical baseline baseline on f1@0.5: +0.200")
    bad = baseline_verdict(evaluation, "baseline", "net")
    assert bad.kind == "worse" and bad.difference == pytest.approx(-0.2)
    assert bad.interval == pytest.approx((-good.interval[1], -good.interval[0]))
    assert "Use the baseline (net)" in bad.advice
    assert bad.to_dict()["interval"] == list(bad.interval)


def test_lower_is_better_metrics_turn_the_kind_not_the_sign():
    rng = np.random.default_rng(1)
    clean = [rng.random((16, 16)) for _ in range(8)]
    noisy = [c + rng.normal(0, 0.3, c.shape) for c in clean]
    near = [c + rng.normal(0, 0.01, c.shape) for c in clean]
    restoration = evaluate({"net": near, "Gaussian": noisy}, clean, task="restoration", n_bootstrap=300)
    nrmse = baseline_verdict(restoration, "net", "Gaussian", metric="nrmse")
    assert nrmse.kind == "better" and nrmse.difference < 0
    assert baseline_verdict(restoration).kind == "better"  # psnr_fitted, first against second


def test_no_clear_difference_advises_more_images_with_an_estimate():
    truths, missing = three_squares(n=10)
    # the net misses the third square on 4 images of 10, the baseline on 3 other ones
    net = [m if i in (0, 1, 2, 3) else t for i, (t, m) in enumerate(zip(truths, missing, strict=True))]
    base = [m if i in (4, 5, 6) else t for i, (t, m) in enumerate(zip(truths, missing, strict=True))]
    evaluation = evaluate({"net": net, "Otsu": base}, truths, task="instances", n_bootstrap=500)
    verdict = baseline_verdict(evaluation, "net", "Otsu")
    assert verdict.kind == "no clear difference"
    assert verdict.line.startswith("Verdict: net shows no clear difference from the classical baseline Otsu")
    assert verdict.interval[0] < 0 < verdict.interval[1]
    assert "simpler Otsu does as well" in verdict.advice
    favoured = baseline_verdict(evaluation, "Otsu", "net")
    assert "about" in favoured.advice and "annotate more" in favoured.advice.lower()


def test_one_image_gives_no_interval_and_the_sign_said_to_be_weak():
    truths, missing = three_squares(n=1)
    evaluation = evaluate({"net": truths, "Otsu": missing, "same": truths}, truths, task="instances", n_bootstrap=50)
    verdict = baseline_verdict(evaluation, "Otsu", "net")
    assert verdict.kind == "worse" and math.isnan(verdict.interval[0])
    assert "on its only image (no interval from 1 image: weak evidence)" in verdict.line
    assert verdict.advice.startswith("Use the baseline (net)") and "Evaluate on more images" in verdict.advice
    assert verdict.to_dict()["interval"] == [None, None]
    tie = baseline_verdict(evaluation, "net", "same")
    assert tie.kind == "no clear difference" and "2 or more images" in tie.advice


def test_best_baseline_and_refusals():
    truths, missing = three_squares()
    evaluation = evaluate({"net": truths, "weak": missing, "strong": truths}, truths, task="instances",
                          n_bootstrap=100)  # fmt: skip
    assert best_baseline(evaluation, ["weak", "strong"]) == "strong"
    with pytest.raises(DataError, match="no method 'other'"):
        baseline_verdict(evaluation, "net", "other")
    with pytest.raises(DataError, match="not with itself"):
        baseline_verdict(evaluation, "net", "net")
    with pytest.raises(DataError, match="no classical baseline"):
        best_baseline(evaluation, [])


def test_predict_with_truth_prints_the_verdict_and_equals_compare(
    shared_data: Path, example_model: Path, tmp_path: Path
) -> None:
    nuclei = fluorescent_nuclei(tmp_path / "data", shared_data)
    out = tmp_path / "out"
    run = CliRunner().invoke(app, ["predict", str(example_model), str(nuclei / "images"), "-o", str(out),
                                   "--truth", str(nuclei / "truth"), "--task", "instances"])  # fmt: skip
    assert run.exit_code == 0, run.output
    lines = [line for line in run.output.splitlines() if line.startswith("Verdict: UNet 2D Nuclei Broad ")]
    assert len(lines) == 1 and "the classical baseline Otsu+watershed on f1@0.5" in lines[0]
    scored = json.loads((out / "qc" / "metrics.json").read_text())
    compared = compare([str(example_model)], images_dir=nuclei / "images", truth_dir=nuclei / "truth",
                       task="instances", classical=True, out_dir=tmp_path / "compare")  # fmt: skip
    for method in compared.evaluation.methods:
        assert scored["summary"][method]["f1@0.5"]["value"] == pytest.approx(
            compared.evaluation.summary[method]["f1@0.5"].value
        )
    verdict = baseline_verdict(compared.evaluation, "UNet 2D Nuclei Broad", "Otsu+watershed")
    assert f"{verdict.difference:+.3f}" in lines[0]


def test_the_task_comes_from_the_package_tags(example_model: Path) -> None:
    from microzoo.qc.scored import qc_task_of
    from microzoo.runtime.predict import Model

    # tagged "segmentation", without microzoo instance settings: scored as foreground against background
    assert qc_task_of(Model.open(example_model)) == "semantic"
