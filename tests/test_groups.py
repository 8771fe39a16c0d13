"""Groups of images: found on real DSB2018 images, figures per group, the sentence when a group loses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from _labels import three_squares

from microzoo.errors import DataError
from microzoo.qc.compare import compare
from microzoo.qc.evaluate import evaluate, write_evaluation
from microzoo.qc.groups import find_groups
from microzoo.qc.image_features import guess_modality
from microzoo.qc.verdict import baseline_verdict


@pytest.fixture(scope="module")
def dsb_paths(shared_data: Path) -> list[Path]:
    """The first 10 fluorescence and 6 colour (histology) DSB2018 test images."""
    paths = []
    wanted = {"fluorescence": 10, "colour": 6}
    for path in sorted((shared_data / "dsb2018" / "test" / "images").glob("*.png")):
        kind = guess_modality(iio.imread(path)[..., :3])
        if wanted.get(kind, 0) > 0:
            wanted[kind] -= 1
            paths.append(path)
    return paths


@pytest.fixture(scope="module")
def dsb_test(dsb_paths: list[Path]) -> tuple[list[np.ndarray], list[str]]:
    """Those images, and their modality."""
    images = [iio.imread(path)[..., :3] for path in dsb_paths]
    return images, [guess_modality(image) for image in images]


def test_fluorescence_and_histology_images_form_two_named_groups(dsb_test) -> None:
    images, kinds = dsb_test
    groups = find_groups(images)
    assert groups is not None and groups.sizes() == (10, 6) and groups.silhouette >= 0.5
    assert groups.names == ("grey, dark background (fluorescence-like)", "colour, bright background (histology-like)")
    assert [groups.names[k] for k in groups.labels] == list(groups.of_images())
    assert [("colour" if k == 1 else "fluorescence") for k in groups.labels] == kinds
    assert groups.to_dict()["sizes"] == [10, 6]


def test_images_alike_or_too_few_form_no_groups(dsb_test) -> None:
    images, kinds = dsb_test
    fluorescence = [image for image, kind in zip(images, kinds, strict=True) if kind == "fluorescence"]
    assert find_groups(fluorescence) is None  # one kind of image: no groups
    assert find_groups(images, min_size=7) is None  # the histology group is smaller than that
    assert find_groups(images[:9]) is None  # fewer than twice min_size
    with pytest.raises(DataError, match="max_groups must be 2 or more"):
        find_groups(images, max_groups=1)


def test_a_method_better_on_average_but_worse_on_a_group_is_said_plainly(tmp_path: Path) -> None:
    # "net" is perfect on 20 fluorescence images and misses a square on 5 histology images,
    # where the watershed is perfect; the watershed misses a square on every fluorescence image
    truths, missing = three_squares(25, seed=0)
    net = truths[:20] + missing[20:]
    watershed = missing[:20] + truths[20:]
    groups = ["fluorescence"] * 20 + ["histology"] * 5
    evaluation = evaluate({"net": net, "watershed": watershed}, truths, task="instances", groups=groups,
                          n_bootstrap=300)  # fmt: skip
    overall = next(d for d in evaluation.differences if d.metric == "f1@0.5")
    assert overall.better == "net"
    assert set(evaluation.by_group) == {"fluorescence", "histology"}
    histology = evaluation.by_group["histology"]
    assert len(histology.images) == 5 and histology.summary["watershed"]["f1@0.5"].value == 1.0
    assert histology.summary["net"]["f1@0.5"].value == pytest.approx(0.8)
    assert next(d for d in histology.differences if d.metric == "f1@0.5").better == "watershed"
    (note,) = evaluation.group_notes
    assert note.startswith("net is better than watershed on f1@0.5 over all images (+")
    assert "but worse on the 5 image(s) of group 'histology' (-0.200 [-0.200, -0.200])" in note
    paths = write_evaluation(evaluation, tmp_path, truths=truths, predictions={"net": net, "watershed": watershed})
    document = json.loads(paths["metrics"].read_text())
    assert document["groups"]["histology"]["images"] == list(histology.images)
    assert document["group_notes"] == [note] and document["settings"]["groups"] == 2
    html = paths["report"].read_text()
    assert "By group of images" in html and "of group &#39;histology&#39;" in html
    verdict = baseline_verdict(evaluation, "net", "watershed")
    assert verdict.kind == "better" and verdict.group_notes == (note,)
    assert verdict.line.endswith(f" But: {note}.") and "the baseline on the group(s) where it loses" in verdict.advice


def test_compare_splits_its_figures_by_the_groups_of_its_images(
    dsb_paths: list[Path], shared_data: Path, tmp_path: Path
) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "truth").mkdir()
    for path in dsb_paths:
        shutil.copy(path, tmp_path / "images")
        shutil.copy(shared_data / "dsb2018" / "test" / "labels" / f"{path.stem}.tif", tmp_path / "truth")
    result = compare([], images_dir=tmp_path / "images", truth_dir=tmp_path / "truth", task="instances",
                     classical=True, out_dir=tmp_path / "out")  # fmt: skip
    groups = result.evaluation.by_group
    assert [len(g.images) for g in groups.values()] == [10, 6]
    assert list(groups)[1] == "colour, bright background (histology-like)"
    watershed = {name: g.summary["Otsu+watershed"]["f1@0.5"] for name, g in groups.items()}
    assert all(0 <= e.low <= e.value <= e.high <= 1 for e in watershed.values())
    assert "By group of images" in (tmp_path / "out" / "report.html").read_text()


def test_without_groups_nothing_changes() -> None:
    truths, missing = three_squares(6, seed=1)
    plain = evaluate({"a": truths, "b": missing}, truths, task="instances", n_bootstrap=100)
    grouped = evaluate({"a": truths, "b": missing}, truths, task="instances", n_bootstrap=100, groups=["g"] * 6)
    assert plain.by_group == {} and plain.group_notes == () and "groups" not in plain.to_dict()["settings"]
    assert grouped.by_group["g"].summary == plain.summary  # one group: the same figures, the same intervals
    with pytest.raises(DataError, match="one group name per image"):
        evaluate({"a": truths}, truths, task="instances", groups=["g"])
