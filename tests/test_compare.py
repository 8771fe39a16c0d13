"""`compare`: models and classical baselines side by side on real annotated images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from _labels import fluorescent_nuclei

from microzoo.errors import DataError
from microzoo.qc.classical import DEFAULT_GRIDS
from microzoo.qc.compare import compare


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Four DSB2018 test images of fluorescent nuclei with their instance labels."""
    return fluorescent_nuclei(tmp_path_factory.mktemp("nuclei"), shared_data)


def test_model_against_watershed_on_nuclei(nuclei: Path, example_model: Path, tmp_path: Path) -> None:
    result = compare(
        [str(example_model)],
        images_dir=nuclei / "images",
        truth_dir=nuclei / "truth",
        task="instances",
        classical=True,
        out_dir=tmp_path,
    )
    evaluation = result.evaluation
    assert evaluation.methods == ("UNet 2D Nuclei Broad", "Otsu+watershed")
    model_f1 = evaluation.summary["UNet 2D Nuclei Broad"]["f1@0.5"].value
    assert 0.5 < model_f1 <= 1.0  # the zoo model finds most nuclei on these fluorescence images
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["task"] == "instances" and len(metrics["images"]) == 4
    assert (tmp_path / "report.html").stat().st_size > 10_000
    assert len((tmp_path / "per_image.csv").read_text().splitlines()) >= 5


def test_restoration_baselines_are_tuned_on_training_pairs_only(shared_data: Path, tmp_path: Path) -> None:
    w2s = shared_data / "w2s"
    for split, names in (("test", ["081", "082", "083"]), ("train", ["001"])):
        for kind in ("noisy", "clean"):
            (tmp_path / split / kind).mkdir(parents=True)
            for name in names:
                tifffile.imwrite(
                    tmp_path / split / kind / f"{name}.tif",
                    tifffile.imread(w2s / split / kind / f"{name}.tif")[:64, :64],
                )
    result = compare(
        [],
        images_dir=tmp_path / "test" / "noisy",
        truth_dir=tmp_path / "test" / "clean",
        task="restoration",
        classical=True,
        out_dir=tmp_path / "out",
        data_range=255,
        train_noisy=tmp_path / "train" / "noisy",
        train_clean=tmp_path / "train" / "clean",
    )
    bm3d, gaussian = sorted(result.classical_params)  # e.g. "BM3D (noise sigma x3)", "Gaussian (sigma 1.5)"
    assert gaussian.startswith("Gaussian (sigma ") and bm3d.startswith("BM3D")
    assert result.classical_params[gaussian]["sigma"] in [g["sigma"] for g in DEFAULT_GRIDS["gaussian"]]
    assert not result.notices  # tuned, so no "fixed parameters" notice
    summary = result.evaluation.summary
    assert summary[gaussian]["psnr_fitted"].value > 25  # well above the noisy input's ~20.5 dB


def test_unpaired_images_are_named(nuclei: Path, tmp_path: Path) -> None:
    truth = tmp_path / "truth"
    shutil.copytree(nuclei / "truth", truth)
    removed = sorted(truth.iterdir())[0]
    removed.unlink()
    with pytest.raises(DataError, match=removed.stem[:12]):
        compare(
            [],
            images_dir=nuclei / "images",
            truth_dir=truth,
            task="instances",
            classical=True,
            out_dir=tmp_path / "out",
        )
    with pytest.raises(DataError, match="nothing to compare"):
        compare(
            [], images_dir=nuclei / "images", truth_dir=nuclei / "truth", task="instances", out_dir=tmp_path / "out"
        )
    assert not (tmp_path / "out").exists()


def test_probability_map_truth_is_refused_as_evaluate_refuses_it(nuclei: Path, tmp_path: Path) -> None:
    truth = tmp_path / "truth"
    truth.mkdir()
    for path in sorted((nuclei / "truth").iterdir()):
        tifffile.imwrite(truth / path.name, (tifffile.imread(path) > 0).astype(np.float32) * 0.9)
    with pytest.raises(DataError, match=r"holds non-integer values \(a probability map\?\); instances needs integer"):
        compare(
            [],
            images_dir=nuclei / "images",
            truth_dir=truth,
            task="instances",
            classical=True,
            out_dir=tmp_path / "out",
        )


def test_compare_runs_the_baseline_training_qc_runs(nuclei: Path, tmp_path: Path) -> None:
    from microzoo.io.read import read_array
    from microzoo.qc.baselines import instances_baseline
    from microzoo.qc.evaluate import evaluate

    result = compare(
        [],
        images_dir=nuclei / "images",
        truth_dir=nuclei / "truth",
        task="instances",
        classical=True,
        out_dir=tmp_path / "out",
    )
    baseline = instances_baseline()  # what train/tasks/instances.py scores its U-Net against
    images = sorted((nuclei / "images").iterdir())
    truths = [read_array(nuclei / "truth" / f"{p.stem}.tif") for p in images]
    direct = evaluate({baseline.name: [baseline(read_array(p)) for p in images]}, truths, task="instances")
    assert result.evaluation.methods == (baseline.name,)
    np.testing.assert_array_equal(
        result.evaluation.per_image[baseline.name]["f1@0.5"], direct.per_image[baseline.name]["f1@0.5"]
    )
