"""Evaluation: pooling, bootstrap intervals, paired verdicts, folder pairing, outputs, the CLI."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import tifffile
from _labels import three_squares
from skimage.segmentation import find_boundaries
from typer.testing import CliRunner

from microzoo.cli import app
from microzoo.errors import DataError
from microzoo.qc.evaluate import evaluate
from microzoo.qc.folders import evaluate_folders
from microzoo.qc.metrics import instance_metrics_dataset, match_instances, restoration_metrics


def test_instances_pooled_like_stardist_with_a_clear_verdict():
    truths, missing = three_squares()
    result = evaluate({"perfect": truths, "misses one": missing}, truths, task="instances", n_bootstrap=300)
    perfect = result.summary["perfect"]["f1@0.5"]
    assert (perfect.value, perfect.low, perfect.high) == (1.0, 1.0, 1.0)
    pooled = instance_metrics_dataset([match_instances(t, p) for t, p in zip(truths, missing, strict=True)])
    assert result.summary["misses one"]["recall@0.5"].value == pytest.approx(pooled.recall[0])
    assert result.summary["misses one"]["mean_accuracy"].value == pytest.approx(np.mean(pooled.accuracy))
    verdict = next(d for d in result.differences if d.metric == "f1@0.5")
    assert verdict.better == "perfect" and verdict.verdict == "perfect better"
    assert verdict.low > 0
    assert result.per_image["misses one"]["recall@0.5"].tolist() == pytest.approx([2 / 3] * 8)


def test_identical_methods_show_no_clear_difference_and_the_seed_fixes_intervals():
    truths, missing = three_squares()
    mixed = [m if i % 2 else t for i, (t, m) in enumerate(zip(truths, missing, strict=True))]
    first = evaluate({"a": mixed, "b": mixed}, truths, task="instances", n_bootstrap=200, seed=3)
    assert all(d.verdict == "no clear difference" for d in first.differences)
    rng = np.random.default_rng(0)
    clean = [rng.random((16, 16)) for _ in range(8)]
    noisy = [c + rng.normal(0, 0.02 * (1 + i), c.shape) for i, c in enumerate(clean)]
    again = evaluate({"a": noisy}, clean, task="restoration", n_bootstrap=200, seed=3)
    same = evaluate({"a": noisy}, clean, task="restoration", n_bootstrap=200, seed=3)
    other = evaluate({"a": noisy}, clean, task="restoration", n_bootstrap=200, seed=4)
    assert again.summary == same.summary
    assert again.summary["a"]["psnr"] != other.summary["a"]["psnr"]
    interval = again.summary["a"]["psnr"]
    assert interval.low < interval.value < interval.high


def test_restoration_means_per_image_figures_and_lower_errors_win():
    rng = np.random.default_rng(1)
    truths = [rng.random((16, 16)) * 200 for _ in range(6)]
    close = [t + rng.normal(0, 2, t.shape) for t in truths]
    far = [t + rng.normal(0, 30, t.shape) for t in truths]
    result = evaluate({"close": close, "far": far}, truths, task="restoration", n_bootstrap=200)
    span = max(t.max() for t in truths) - min(t.min() for t in truths)
    assert result.settings["data_range"] == pytest.approx(span)
    expected = np.mean([restoration_metrics(t, p, data_range=span)["psnr"] for t, p in zip(truths, close, strict=True)])
    assert result.summary["close"]["psnr"].value == pytest.approx(expected)
    mae = next(d for d in result.differences if d.metric == "mae")
    assert mae.difference < 0 and mae.better == "close"  # lower error is better
    assert result.main_metric == "psnr_fitted"


def test_semantic_pools_pixel_counts():
    truths = [np.array([[0, 0, 1, 1]] * 4), np.array([[0, 1, 1, 1]] * 4)]
    preds = [np.array([[0, 0, 0, 1]] * 4), np.array([[0, 1, 1, 1]] * 4)]
    result = evaluate({"net": preds}, truths, task="semantic", n_bootstrap=50)
    # class 1: intersection 4 + 12, truth 8 + 12, pred 4 + 12
    assert result.summary["net"]["iou[1]"].value == pytest.approx(16 / 20)
    assert result.summary["net"]["pixel_accuracy"].value == pytest.approx(28 / 32)
    assert result.settings["classes"] == [0, 1]


def test_detection_needs_a_tolerance_and_pools_counts():
    truths = [np.array([[5.0, 5.0], [20.0, 20.0]]), np.zeros((0, 2))]
    preds = [np.array([[6.0, 5.0]]), np.array([[3.0, 3.0]])]
    with pytest.raises(DataError, match="tolerance"):
        evaluate({"spots": preds}, truths, task="detection")
    result = evaluate({"spots": preds}, truths, task="detection", tolerance=2, n_bootstrap=50)
    assert result.summary["spots"]["precision"].value == pytest.approx(1 / 2)
    assert result.summary["spots"]["recall"].value == pytest.approx(1 / 2)
    assert math.isnan(result.per_image["spots"]["recall"][1])  # no true points: undefined


def test_misuse_is_a_data_error():
    truths, missing = three_squares(n=2)
    with pytest.raises(DataError, match="task"):
        evaluate({"a": truths}, truths, task="counting")
    with pytest.raises(DataError, match="1 predictions for 2"):
        evaluate({"a": truths[:1]}, truths, task="instances")
    with pytest.raises(DataError, match="image 'b'.*shape"):
        evaluate({"a": [truths[0], truths[1][:10]]}, truths, task="instances", names=["a", "b"])


def _write(folder, arrays, names):
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(names, arrays, strict=True):
        tifffile.imwrite(folder / f"{name}.tif", array)


def test_folders_write_metrics_csv_and_report(tmp_path):
    truths, missing = three_squares(n=4)
    names = ["a1", "a2", "b1", "b2"]
    _write(tmp_path / "truth", truths, names)
    _write(tmp_path / "net", truths, names)
    _write(tmp_path / "baseline", missing, names)
    result = evaluate_folders(
        {"net": tmp_path / "net", "baseline": tmp_path / "baseline"},
        tmp_path / "truth",
        task="instances",
        out_dir=tmp_path / "out",
        n_bootstrap=100,
    )
    assert result.images == tuple(names)
    document = json.loads((tmp_path / "out" / "metrics.json").read_text(), parse_constant=pytest.fail)
    assert document["summary"]["net"]["f1@0.5"] == {"value": 1.0, "low": 1.0, "high": 1.0}
    assert document["settings"]["n_bootstrap"] == 100
    assert set(document["figures"]) >= {"distributions", "worst_images", "threshold_curves", "panels"}
    rows = list(csv.DictReader((tmp_path / "out" / "per_image.csv").open()))
    assert len(rows) == 8 and rows[0]["image"] == "a1" and float(rows[0]["f1@0.5"]) == 1.0
    assert (tmp_path / "out" / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert not list((tmp_path / "out").glob(".*partial*"))


def test_folders_that_do_not_pair_are_named(tmp_path):
    truths, _ = three_squares(n=3)
    _write(tmp_path / "truth", truths, ["x", "y", "z"])
    _write(tmp_path / "net", truths, ["x", "y", "w"])
    with pytest.raises(
        DataError,
        match=r"1 name\(s\) of the truth have no file of the same name in the predictions \(net\): z"
        r".*predictions \(net\) are not among the truth: w",
    ):
        evaluate_folders({"net": tmp_path / "net"}, tmp_path / "truth", task="instances", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    tifffile.imwrite(tmp_path / "net" / "z.tif", truths[2] + 0.5)
    (tmp_path / "net" / "w.tif").unlink()
    with pytest.raises(DataError, match="non-integer"):
        evaluate_folders({"net": tmp_path / "net"}, tmp_path / "truth", task="instances", out_dir=tmp_path / "out")


def test_dsb2018_labels_against_eroded_copies(shared_data, tmp_path):
    labels = sorted((shared_data / "dsb2018" / "test" / "labels").glob("*.tif"))[:3]
    truths = [tifffile.imread(p) for p in labels]
    eroded = []
    for t in truths:
        e = t.copy()
        e[find_boundaries(t, mode="inner")] = 0
        eroded.append(e)
    result = evaluate({"same": truths, "eroded": eroded}, truths, task="instances", n_bootstrap=200)
    assert result.summary["same"]["mean_accuracy"].value == 1.0
    assert 0.8 < result.summary["eroded"]["f1@0.5"].value < 1.0
    assert result.summary["eroded"]["f1@0.9"].value < result.summary["eroded"]["f1@0.5"].value


def test_cli_evaluate_prints_a_summary_and_the_report_path(tmp_path):
    truths, missing = three_squares(n=3)
    names = ["p", "q", "r"]
    _write(tmp_path / "truth", truths, names)
    _write(tmp_path / "seg", missing, names)
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--pred",
            str(tmp_path / "seg"),
            "--pred",
            f"again={tmp_path / 'seg'}",
            "--truth",
            str(tmp_path / "truth"),
            "--task",
            "instances",
            "-o",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "f1@0.5" in result.output and "seg vs again" in result.output
    assert "report.html" in result.output
    assert (tmp_path / "out" / "report.html").exists()


def test_one_image_gives_no_interval_and_no_verdict() -> None:
    """Resampling a single image returns it every time: a point 'interval' must not decide."""
    truth = [np.random.default_rng(0).normal(size=(32, 32))]
    evaluation = evaluate({"a": [truth[0] + 0.1], "b": [truth[0] + 0.3]}, truth, task="restoration", data_range=4.0)
    assert np.isnan(evaluation.summary["a"]["psnr"].low)
    assert all(d.better is None and d.verdict.startswith("too few images") for d in evaluation.differences)


def test_restoration_with_nan_pixels_is_refused_naming_the_file_and_count(tmp_path):
    rng = np.random.default_rng(0)
    clean = [rng.uniform(0, 255, (32, 32)).astype(np.float32) for _ in range(2)]
    noisy = [c + rng.normal(0, 5, c.shape).astype(np.float32) for c in clean]
    noisy[1][3:5, 7] = np.nan
    _write(tmp_path / "truth", clean, ["a", "b"])
    _write(tmp_path / "net", noisy, ["a", "b"])
    with pytest.raises(DataError, match=r"prediction \(net\) b: 2 of 1024 pixels"):
        evaluate_folders({"net": tmp_path / "net"}, tmp_path / "truth", task="restoration", out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("task", ["instances", "semantic"])
def test_probability_map_truth_is_refused_by_the_one_label_check(tmp_path, task):
    truths, _ = three_squares(n=2)
    probabilities = [(t > 0) * 0.8 for t in truths]
    _write(tmp_path / "truth", probabilities, ["a", "b"])
    _write(tmp_path / "net", truths, ["a", "b"])
    with pytest.raises(DataError, match=r"truth.a\.tif holds non-integer values \(a probability map\?\)"):
        evaluate_folders({"net": tmp_path / "net"}, tmp_path / "truth", task=task, out_dir=tmp_path / "out")


def test_read_evaluation_gives_back_what_write_evaluation_wrote(shared_data, tmp_path):
    """DSB 2018 labels against eroded copies, with groups: every figure, difference, group and
    setting of metrics.json comes back, NaN included (one-image groups have no interval)."""
    from microzoo.qc.evaluate import read_evaluation, write_evaluation

    labels = sorted((shared_data / "dsb2018" / "test" / "labels").glob("*.tif"))[:3]
    truths = [tifffile.imread(p)[:128, :128] for p in labels]
    eroded = [np.where(find_boundaries(t, mode="inner"), 0, t) for t in truths]
    evaluation = evaluate({"eroded": eroded, "same": truths}, truths, task="instances", n_bootstrap=20,
                          names=[p.stem for p in labels], groups=["a", "a", "b"])  # fmt: skip
    paths = write_evaluation(evaluation, tmp_path, truths=truths, predictions={"eroded": eroded, "same": truths})
    back = read_evaluation(paths["metrics"])
    assert back.to_dict() == evaluation.to_dict()
    assert math.isnan(back.by_group["b"].summary["eroded"]["f1@0.5"].low)
    with pytest.raises(DataError, match="cannot read an evaluation"):
        read_evaluation(paths["per_image"])
