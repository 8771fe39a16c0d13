"""`microzoo learning-curve`: the fitted curve, its intervals, the runs on nested subsets with a
fixed validation set, the report; and the named split (``data.validation_images``) it rests on."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from microzoo.cli import app
from microzoo.errors import DataError
from microzoo.qc.tasks import get_task
from microzoo.train.data import Sample, split_samples
from microzoo.train.learning_curve import curve_from_vectors, fit_curve


def test_fit_recovers_a_saturating_curve_and_where_it_flattens() -> None:
    sizes = np.array([10, 25, 50, 100, 200])
    truth = 0.9 - 0.3 * (sizes / 200) ** -0.4
    fit = fit_curve(sizes, truth)
    assert fit.exponent_fitted
    assert (fit.a, fit.b, fit.c) == pytest.approx((0.9, 0.3, 0.4), abs=1e-4)
    assert float(fit.predict(400)) == pytest.approx(0.9 - 0.3 * 2**-0.4, abs=1e-4)
    n = fit.flattens_at(0.01)  # from there, one more doubling gains 0.01
    assert float(fit.predict(2 * n) - fit.predict(n)) == pytest.approx(0.01, rel=1e-3)
    # lower is better: the curve falls towards its plateau
    loss = fit_curve(sizes, 0.1 + 0.5 * (sizes / 200) ** -0.7, higher_is_better=False)
    assert (loss.a, loss.b, loss.c) == pytest.approx((0.1, 0.5, 0.7), abs=1e-4)
    # three points: the exponent is fixed, and the two other parameters fit them
    three = fit_curve([10, 25, 50], 0.8 - 0.1 * (np.array([10, 25, 50]) / 50) ** -0.5)
    assert not three.exponent_fitted and (three.a, three.b) == pytest.approx((0.8, 0.1), abs=1e-4)
    with pytest.raises(DataError, match="two or more"):
        fit_curve([10, 10], [0.5, 0.6])


def test_intervals_resample_the_validation_images_for_every_run_together() -> None:
    rng = np.random.default_rng(0)
    scorer, _ = get_task("instances").scorer([], {}, thresholds=(0.5,))
    sizes, vectors = [20, 50, 100, 200], []
    for size in sizes:  # per image: TP, FP, FN, sum of matched IoU; more images, more found
        recall = 0.85 - 0.15 * (size / 200) ** -0.5
        tp = rng.binomial(30, recall, size=40)
        vectors.append(np.stack([tp, rng.binomial(5, 0.3, 40), 30 - tp, 0.8 * tp], axis=1).astype(float))
    curve = curve_from_vectors(sizes, vectors, scorer.aggregate, metric="f1@0.5", names=[f"v{i}" for i in range(40)])
    values = [p.value for p in curve.points]
    assert values == sorted(values)
    for point in curve.points:
        assert point.low < point.value < point.high
    value, low, high = curve.predictions[400]
    assert low < value < high and value > values[-1] - 0.02
    assert curve.plateau[1] <= curve.plateau[0] <= curve.plateau[2]
    assert set(curve.predictions) == {200, 400, 800}
    assert "Expected with 400 images" in curve.summary()
    json.dumps(curve.to_dict(), allow_nan=True)  # plain data


def test_several_seeds_are_averaged_and_their_spread_widens_the_intervals() -> None:
    """Runs of one size with different seeds: the point is the figure of their averaged per-image
    scores, and the intervals, which resample the seeds too, are wider than those of the average alone."""
    rng = np.random.default_rng(1)
    scorer, _ = get_task("instances").scorer([], {}, thresholds=(0.5,))
    sizes, seeded = [20, 50, 100], []
    for size in sizes:
        runs = []
        for shift in (-0.12, 0.0, 0.12):  # three seeds of very different luck
            recall = 0.8 - 0.15 * (size / 100) ** -0.5 + shift
            tp = rng.binomial(30, recall, size=40)
            runs.append(np.stack([tp, rng.binomial(5, 0.3, 40), 30 - tp, 0.8 * tp], axis=1).astype(float))
        seeded.append(np.stack(runs))  # (seeds, images, k)
    averaged = [v.mean(axis=0) for v in seeded]
    with_seeds = curve_from_vectors(sizes, seeded, scorer.aggregate, metric="f1@0.5", predict_at=[200])
    images_only = curve_from_vectors(sizes, averaged, scorer.aggregate, metric="f1@0.5", predict_at=[200])
    for point, same in zip(with_seeds.points, images_only.points, strict=True):
        assert point.value == pytest.approx(same.value)  # the point: the seeds' averaged scores
        assert point.high - point.low > 1.5 * (same.high - same.low)
    wide, narrow = with_seeds.predictions[200], images_only.predictions[200]
    assert wide[0] == pytest.approx(narrow[0]) and wide[2] - wide[1] > narrow[2] - narrow[1]
    assert "over the seeds" in with_seeds.notes[0] and "do not cover" in images_only.notes[0]


def test_named_split_and_its_errors() -> None:
    empty = np.zeros((1, 4, 4), np.float32)
    samples = [Sample(n, empty, empty) for n in "abcdef"]
    train, val = split_samples(samples, fraction=0.2, seed=0, validation=["e", "f"], training=["a", "b"])
    assert [s.name for s in train] == ["a", "b"] and [s.name for s in val] == ["e", "f"]
    train, val = split_samples(samples, fraction=0.2, seed=0, validation=["f"])
    assert [s.name for s in train] == list("abcde")
    with pytest.raises(DataError, match="not in data.images"):
        split_samples(samples, fraction=0.2, seed=0, validation=["zz"])
    with pytest.raises(DataError, match="share images"):
        split_samples(samples, fraction=0.2, seed=0, validation=["a"], training=["a", "b"])


def test_cli_learning_curve_trains_nested_runs_on_a_fixed_validation_set(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "isbi2012" / "train"
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
        for i in range(7):
            iio.imwrite(tmp_path / folder / f"{i:02d}.png", iio.imread(source / folder / f"{i:02d}.png")[:64, :64])
    out = tmp_path / "curve"
    args = ["learning-curve", "semantic", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
            "--fractions", "0.34,0.67,1", "--epochs", "1", "--steps-per-epoch", "2", "--patch", "32",
            "-o", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Expected with" in result.output and "report.html" in result.output
    report = json.loads((out / "learning_curve.json").read_text())
    assert [p["images"] for p in report["points"]] == [2, 4, 6]
    configs = [yaml.safe_load((Path(p["run"]) / "config.yaml").read_text())["data"] for p in report["points"]]
    assert all(c["validation_images"] == report["validation_images"] for c in configs)
    subsets = [c["training_images"] for c in configs]
    assert subsets[0] == subsets[1][:2] and subsets[1] == subsets[2][:4]  # nested
    assert not set(subsets[2]) & set(report["validation_images"])
    assert report["metric"] == "mean_iou" and "band" in report
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "Fitted curve" in html
    # a second call reuses the finished runs
    stamp = (Path(report["points"][0]["run"]) / "validation_scores.npy").stat().st_mtime_ns
    assert CliRunner().invoke(app, args).exit_code == 0
    assert (Path(report["points"][0]["run"]) / "validation_scores.npy").stat().st_mtime_ns == stamp


def test_repeats_average_each_images_scores_over_seeds(shared_data: Path, tmp_path: Path) -> None:
    """`--repeats 2`: each fraction trains with seeds 0 and 1, and its point is the figure of the
    per-image scores averaged over both runs (so one unlucky seed does not bend the curve)."""
    from microzoo.qc.tasks import get_task as get_qc_task

    source = shared_data / "isbi2012" / "train"
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
        for i in range(5):
            iio.imwrite(tmp_path / folder / f"{i:02d}.png", iio.imread(source / folder / f"{i:02d}.png")[:64, :64])
    out = tmp_path / "curve"
    args = ["learning-curve", "semantic", "--images", str(tmp_path / "images"), "--labels", str(tmp_path / "labels"),
            "--fractions", "0.5,1", "--epochs", "1", "--steps-per-epoch", "2", "--patch", "32", "--repeats", "2",
            "-o", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "learning_curve.json").read_text())
    assert "trained 2 times (seeds 0-1)" in report["budget"]
    with np.load(out / "runs" / "validation_truths.npz") as archive:
        truths = [archive[k] for k in archive.files]
    scorer, _ = get_qc_task("semantic").scorer(truths, {"model": truths})
    for point in report["points"]:
        first = Path(point["run"])
        second = first.with_name(first.name + "_seed_1")
        seeds = [yaml.safe_load((d / "config.yaml").read_text())["training"]["seed"] for d in (first, second)]
        assert seeds == [0, 1]
        a, b = np.load(first / "validation_scores.npy"), np.load(second / "validation_scores.npy")
        expected = scorer.aggregate(((a + b) / 2).sum(axis=0))["mean_iou"]
        assert point["value"] == pytest.approx(expected)
        # the two seeds trained different networks (initial weights, patches) on the same images
        weights = [torch.load(d / "checkpoints" / "last.pt", weights_only=True) for d in (first, second)]
        assert not all(torch.equal(x, y) for x, y in zip(_tensors(weights[0]), _tensors(weights[1]), strict=True))
        assert (yaml.safe_load((first / "config.yaml").read_text())["data"]["training_images"]
                == yaml.safe_load((second / "config.yaml").read_text())["data"]["training_images"])  # fmt: skip


def _tensors(checkpoint: object) -> list[torch.Tensor]:
    """Every tensor of a checkpoint (nested dicts), in key order."""
    if isinstance(checkpoint, torch.Tensor):
        return [checkpoint]
    if isinstance(checkpoint, dict):
        return [t for key in sorted(checkpoint, key=str) for t in _tensors(checkpoint[key])]
    return []
