"""`microzoo select`: candidates ranked on real DSB2018 test images, with the same figures as `compare`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import yaml
from typer.testing import CliRunner

from microzoo.cli import app
from microzoo.errors import DataError
from microzoo.qc.compare import compare
from microzoo.qc.verdict import images_to_separate
from microzoo.selection import select_models
from microzoo.selection.candidates import unfit_input, zoo_candidates

N_IMAGES = 6


@pytest.fixture(scope="module")
def dsb_test(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Six DSB2018 test images (the first 256x256 ones, whatever their modality) and their instance labels."""
    root = tmp_path_factory.mktemp("dsb-test")
    (root / "images").mkdir()
    (root / "truth").mkdir()
    source = shared_data / "dsb2018" / "test"
    taken = 0
    for path in sorted((source / "images").glob("*.png")):
        if max(iio.improps(path).shape[:2]) <= 256:
            shutil.copy(path, root / "images" / path.name)
            shutil.copy(source / "labels" / f"{path.stem}.tif", root / "truth")
            taken += 1
        if taken == N_IMAGES:
            break
    return root


@pytest.fixture(scope="module")
def trained_package(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A tiny instance model trained by microzoo on five 64x64 DSB2018 training crops, exported."""
    from microzoo.train.config import instances_config
    from microzoo.train.run import train

    root = tmp_path_factory.mktemp("dsb-train")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    source = shared_data / "dsb2018" / "train"
    for path in sorted((source / "images").glob("*.png"))[:5]:
        iio.imwrite(root / "images" / path.name, iio.imread(path)[:64, :64])
        tifffile.imwrite(
            root / "labels" / f"{path.stem}.tif", tifffile.imread(source / "labels" / f"{path.stem}.tif")[:64, :64]
        )
    config = instances_config(images=root / "images", labels=root / "labels", patch_size=32)
    config.name = "tiny-dsb"
    config.network.depth, config.network.base_features = 2, 8
    config.data.validation_patches = 4
    config.training.epochs, config.training.steps_per_epoch, config.training.batch_size = 2, 2, 4
    config.training.export = True
    result = train(config, out_dir=root / "out")
    assert result.package is not None
    return result.package


def test_select_ranks_three_candidates_with_the_figures_of_compare(
    dsb_test: Path, example_model: Path, trained_package: Path, tmp_path: Path
) -> None:
    models = [str(example_model), str(trained_package)]
    selection = select_models(
        images_dir=dsb_test / "images", truth_dir=dsb_test / "truth", task="instances", models=models,
        out_dir=tmp_path / "select",
    )  # fmt: skip
    comparison = compare(
        models, images_dir=dsb_test / "images", truth_dir=dsb_test / "truth", task="instances", classical=True,
        out_dir=tmp_path / "compare",
    )  # fmt: skip
    ranking, evaluation = selection.ranking, comparison.evaluation
    assert ranking.metric == evaluation.main_metric == "f1@0.5" and ranking.n_images == N_IMAGES
    assert (
        {e.method for e in ranking.entries}
        == set(evaluation.methods)
        == {"UNet 2D Nuclei Broad", "tiny-dsb", "Otsu+watershed"}
    )
    assert [e.kind for e in ranking.entries if e.method == "Otsu+watershed"] == ["baseline"]
    assert selection.sources == {"UNet 2D Nuclei Broad": str(example_model), "tiny-dsb": str(trained_package)}
    # the same figures as compare: every estimate, interval and per-image value
    for entry in ranking.entries:
        estimate = evaluation.summary[entry.method]["f1@0.5"]
        assert (entry.value, entry.low, entry.high) == (estimate.value, estimate.low, estimate.high)
        np.testing.assert_array_equal(ranking.per_image[entry.method], evaluation.per_image[entry.method]["f1@0.5"])
    assert (
        json.loads((tmp_path / "select" / "qc" / "metrics.json").read_text())["summary"]
        == json.loads((tmp_path / "compare" / "metrics.json").read_text())["summary"]
    )
    values = [e.value for e in ranking.entries]
    assert values == sorted(values, reverse=True) and [e.rank for e in ranking.entries] == [1, 2, 3]
    # each neighbour pair is called real or noise from its paired interval, as compare's differences say
    for separation in ranking.separations:
        (found,) = [d for d in evaluation.differences if d.metric == "f1@0.5"
                    and {d.first, d.second} == {separation.first, separation.second}]  # fmt: skip
        assert separation.real == (found.better == separation.first)
        assert abs(separation.difference) == pytest.approx(abs(found.difference))
    top = ranking.separations[0]
    if not top.real:  # the top two cannot be told apart on 6 images: how many would
        assert ranking.images_needed == images_to_separate(N_IMAGES, top.difference, top.low, top.high)
        assert any(f"{ranking.images_needed} annotated images" in s for s in ranking.statements)
    assert ranking.verdict is not None and ranking.verdict.startswith("Verdict: ")
    assert "Otsu+watershed" in ranking.verdict
    document = json.loads(selection.paths["json"].read_text())
    assert document["ground_truth"] and document["best"] == ranking.best and len(document["ranking"]) == 3
    assert document["images"] == sorted(p.stem for p in (dsb_test / "images").iterdir())
    html = selection.paths["report"].read_text()
    assert html.count("data:image/png;base64,") >= 3 and "qc/report.html" in html
    assert all(name in html for name in ("UNet 2D Nuclei Broad", "tiny-dsb", "Otsu+watershed"))


def test_without_truth_the_ranking_rests_on_agreement_and_says_it_is_weaker(
    dsb_test: Path, example_model: Path, trained_package: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        app,
        ["select", str(example_model), str(trained_package), "--images", str(dsb_test / "images"),
         "--task", "instances", "-o", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "weaker evidence" in result.output and "agreement" in result.output
    document = json.loads((tmp_path / "selection.json").read_text())
    assert not document["ground_truth"] and document["evidence"] == "agreement and trust (weaker)"
    entries = {e["method"]: e for e in document["ranking"]}
    assert set(entries) == {"UNet 2D Nuclei Broad", "tiny-dsb", "Otsu+watershed"}
    assert all(0 <= e["value"] <= 1 for e in entries.values())
    # the trained package carries a training fingerprint: its trust note judged every image
    assert entries["tiny-dsb"]["trusted"] is not None and entries["Otsu+watershed"]["trusted"] is None
    assert not (tmp_path / "qc").exists()
    assert "Weaker evidence" in (tmp_path / "selection.html").read_text()


def test_images_to_separate_follows_the_bootstrap_spread() -> None:
    assert images_to_separate(10, 0.02, -0.01, 0.05) == 23  # half-width 0.03 on 10 images
    assert images_to_separate(40, 0.01, -0.02, 0.04) == 360  # three times the difference: nine times the images
    assert images_to_separate(10, 0.0, -0.01, 0.01) is None


def test_zoo_models_that_cannot_take_the_images_are_left_out_with_the_reason() -> None:
    single = {"inputs": [{"axes": "bcyx", "sizes": ["batch: any", "channel: 1 (raw)", "y: 64", "x: 64"]}]}
    four = {"inputs": [{"axes": "bcyx", "sizes": ["batch: any", "channel: 4 (a, b, c, d)", "y: 64", "x: 64"]}]}
    assert unfit_input(single, 3) is None and unfit_input(four, 4) is None
    assert unfit_input(four, 3) == "it takes 4 channels and the images have 3"
    assert "z axis" in (unfit_input({"inputs": [{"axes": "bczyx", "sizes": []}]}, 1) or "")


def test_select_finds_the_zoo_example_for_instances(
    zoo_server, published_example: tuple[str, str], dsb_test: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICROZOO_CACHE", str(tmp_path / "cache"))
    found = zoo_candidates(zoo_server.url, "instances", image_channels=3)
    name, version = published_example
    assert [c.title for c in found.candidates] == [f"{name}/{version}"]
    assert found.candidates[0].origin == "zoo" and Path(found.candidates[0].source).is_file()
    with pytest.raises(DataError, match="no published 2-D model"):
        zoo_candidates(zoo_server.url, "restoration", image_channels=1)
    # select with --zoo alone: the zoo's model and the baseline, ranked on the user's images
    selection = select_models(
        images_dir=dsb_test / "images", truth_dir=dsb_test / "truth", task="instances", zoo=zoo_server.url,
        out_dir=tmp_path / "select",
    )  # fmt: skip
    assert [c.origin for c in selection.candidates] == ["zoo"]
    assert {e.method for e in selection.ranking.entries} == {"UNet 2D Nuclei Broad", "Otsu+watershed"}


def test_finetune_trains_the_best_trainable_candidate_and_ranks_it_on_other_images(
    dsb_test: Path, example_model: Path, trained_package: Path, tmp_path: Path
) -> None:
    selection = select_models(
        images_dir=dsb_test / "images", truth_dir=dsb_test / "truth", task="instances",
        models=[str(example_model), str(trained_package)], out_dir=tmp_path, finetune=True, finetune_steps=2,
    )  # fmt: skip
    ranking = selection.ranking
    (tuned,) = [e for e in ranking.entries if e.kind == "fine-tuned"]
    assert tuned.method == "finetuned-tiny-dsb" and len(ranking.entries) == 4
    # half the images fine-tuned, the other half ranked every method: none is scored on its training images
    tuned_on = {p.stem for p in (tmp_path / "finetune" / "tune" / "images").iterdir()}
    ranked_on = set(json.loads(selection.paths["json"].read_text())["images"])
    assert len(tuned_on) == len(ranked_on) == N_IMAGES // 2 and not tuned_on & ranked_on
    assert ranking.n_images == N_IMAGES // 2
    # the zoo example's network is not microzoo's U-Net: the microzoo-trained package is the parent
    package = next(c for c in selection.candidates if c.origin == "fine-tuned")
    description = yaml.safe_load(Path(package.source).read_text())
    assert description["config"]["microzoo"]["parent"]["name"] == "tiny-dsb"
