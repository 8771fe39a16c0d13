"""Good-practice checks: leakage, test-set size, label balance, OOD, quantification, task; CLI."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from microzoo.cli import app
from microzoo.errors import ConfigError, DataError
from microzoo.io.axes import to_grayscale
from microzoo.io.files import list_images
from microzoo.io.read import read_array as read_image
from microzoo.trust import checks
from microzoo.trust.fingerprint import fingerprint_images
from microzoo.trust.leakage import find_near_duplicates, perceptual_hash


@pytest.fixture(scope="module")
def dsb(shared_data) -> tuple[list[np.ndarray], list[np.ndarray]]:
    train = [read_image(p) for p in list_images(shared_data / "dsb2018" / "train" / "images")[:20]]
    test = [read_image(p) for p in list_images(shared_data / "dsb2018" / "test" / "images")[:12]]
    return train, test


def _planted(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """A training image with noise, a new intensity scale and offset, flipped."""
    rng = np.random.default_rng(seed)
    grey = to_grayscale(image)
    return (0.6 * grey + 12 + rng.normal(0, 4, grey.shape))[:, ::-1]


def test_leakage_finds_a_planted_duplicate_and_nothing_else(dsb):
    train, test = dsb
    before = train[7].copy()
    assert find_near_duplicates(train, test) == []
    planted = [*test[:5], _planted(train[7]), *test[5:]]
    found = find_near_duplicates(train, planted)
    assert [(p.train_index, p.test_index, p.transform) for p in found] == [(7, 5, "flipped left-right")]
    np.testing.assert_array_equal(train[7], before)
    findings = checks.check_leakage(train, planted, test_names=[f"t{i}" for i in range(len(planted))])
    assert findings[0].severity == "warning" and "t5 ~ train 7" in findings[0].what
    assert checks.check_leakage(train, test)[0].severity == "note"


def test_hash_survives_noise_and_scaling_but_tells_images_apart(dsb):
    train, _ = dsb
    same = np.count_nonzero(perceptual_hash(train[3]) != perceptual_hash(_planted(train[3])[:, ::-1]))
    other = np.count_nonzero(perceptual_hash(train[3]) != perceptual_hash(train[4]))
    assert same <= 6 < 14 <= other


def test_test_set_size_binomial_and_bootstrap():
    small = checks.check_test_set_size(requested_precision=0.05, n_test=20)[0]
    assert small.severity == "warning" and "385" in small.action
    assert checks.check_test_set_size(requested_precision=0.05, n_test=1000)[0].severity == "note"
    scores = np.random.default_rng(0).normal(0.7, 0.1, 40)
    assert checks.check_test_set_size(requested_precision=0.01, per_image_scores=scores)[0].severity == "warning"
    assert checks.check_test_set_size(requested_precision=0.1, per_image_scores=scores)[0].severity == "note"
    with pytest.raises(ConfigError, match="n_test or per_image_scores"):
        checks.check_test_set_size(requested_precision=0.1)


def test_label_balance_semantic_and_instances():
    balanced = np.zeros((40, 40), np.uint8)
    balanced[:, :15] = 255
    assert checks.check_label_balance([balanced])[0].severity == "note"
    rare = np.zeros((40, 40), np.uint8)
    rare[:3, :3] = 1
    finding = checks.check_label_balance([rare])[0]
    assert finding.severity == "warning" and "class(es) 1" in finding.what.lower()
    even = np.zeros((100, 100), np.int32)
    for k in range(12):
        even[(k // 4) * 30 : (k // 4) * 30 + 8, (k % 4) * 25 : (k % 4) * 25 + 8] = k + 1
    assert checks.check_label_balance([even])[0].severity == "note"
    uneven = even.copy()
    uneven[95:, 95:] = 0
    uneven[60:100, 0:60] = 20
    uneven[0, 99] = 21
    assert checks.check_label_balance([uneven], kind="instances")[0].severity == "warning"
    with pytest.raises(DataError, match="no label images"):
        checks.check_label_balance([])


def _blobs(seed: int, noise: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96]
    image = sum(120 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 30) for y, x in rng.uniform(8, 88, (10, 2)))
    return np.clip(image + 10 + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8)


def test_out_of_distribution_quantification_and_task_findings():
    fingerprint = fingerprint_images([_blobs(s) for s in range(12)])
    quiet = checks.check_out_of_distribution(fingerprint, [_blobs(40)])[0]
    loud = checks.check_out_of_distribution(fingerprint, [_blobs(41, noise=30)], names=["noisy.tif"])[0]
    assert quiet.severity == "note" and loud.severity == "warning" and "noisy.tif" in loud.what
    warning = checks.check_quantification_use(model_tags=["denoising", "care"], intended_use="intensity quantification")
    assert warning[0].severity == "warning" and "residual map" in warning[0].action
    assert checks.check_quantification_use(model_tags=["nuclei"], intended_use="intensity quantification") == []
    assert checks.check_quantification_use(model_tags=["denoising"], intended_use="counting") == []
    mismatch = checks.check_task_and_modality(
        model_tags=["nuclei", "fluorescence"], task="denoising", images=[255 - _blobs(1), 255 - _blobs(2)]
    )
    assert [f.check for f in mismatch] == ["task", "modality"]
    assert (
        checks.check_task_and_modality(model_tags=["nuclei", "fluorescence"], task="instances", images=[_blobs(1)])
        == []
    )


def test_run_checks_orders_warnings_first():
    train = [_blobs(s) for s in range(8)]
    findings = checks.run_checks(
        train_images=train,
        test_images=[_blobs(30), train[2]],
        requested_precision=0.01,
        model_tags=["denoising"],
        intended_use="quantification",
    )
    severities = [f.severity for f in findings]
    assert severities == sorted(severities, key=lambda s: s != "warning")
    assert {f.check for f in findings if f.severity == "warning"} >= {"leakage", "test set size", "quantification"}


def test_model_claims_from_a_fingerprint_and_from_a_package(tmp_path: Path, example_model):
    path = fingerprint_images([_blobs(s) for s in range(6)]).save(tmp_path / "fp.json")
    fingerprint, tags = checks.load_model_claims(path)
    assert fingerprint is not None and fingerprint.n_images == 6 and tags == []
    fingerprint, tags = checks.load_model_claims(example_model)
    assert fingerprint is None and tags


def test_cli_check_prints_findings_and_exits_by_severity(tmp_path: Path):
    train, test = tmp_path / "train", tmp_path / "test"
    train.mkdir()
    test.mkdir()
    for seed in range(6):
        iio.imwrite(train / f"{seed}.png", _blobs(seed))
    iio.imwrite(test / "new.png", _blobs(20))
    runner = CliRunner()
    clean = runner.invoke(app, ["check", "--train", str(train), "--test", str(test)])
    assert clean.exit_code == 0, clean.output
    assert "NOTE" in clean.output and "what to do" in clean.output
    tifffile.imwrite(test / "leaked.tif", _planted(_blobs(3)).astype(np.float32))
    leaked = runner.invoke(app, ["check", "--train", str(train), "--test", str(test)])
    assert leaked.exit_code == 1 and "WARNING" in leaked.output and "leaked.tif ~ 3.png" in leaked.output


def test_check_folders_pairs_labels_with_the_test_images(tmp_path: Path):
    test, labels = tmp_path / "test", tmp_path / "labels"
    test.mkdir()
    labels.mkdir()
    for name in ("a", "b.v1"):
        iio.imwrite(test / f"{name}.png", _blobs(1))
        tifffile.imwrite(labels / f"{name}.tif", (_blobs(1) > 60).astype(np.uint8))
    findings = checks.check_folders(test_dir=test, labels_dir=labels)
    assert any(f.check == "label balance" for f in findings)
    (labels / "b.v1.tif").rename(labels / "c.tif")
    with pytest.raises(DataError, match=r"no file of the same name in the labels: b\.v1.*not among the test images: c"):
        checks.check_folders(test_dir=test, labels_dir=labels)


@pytest.mark.parametrize("pixel_size", [0.0, -0.5, float("nan")])
def test_a_pixel_size_that_is_not_positive_is_refused(tmp_path: Path, pixel_size: float):
    iio.imwrite(tmp_path / "a.png", _blobs(1))
    with pytest.raises(ConfigError, match="pixel size must be a positive number"):
        checks.check_folders(test_dir=tmp_path, pixel_size=pixel_size)
    result = CliRunner().invoke(app, ["check", "--test", str(tmp_path), "--pixel-size", "0"])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)


def test_too_few_training_images_for_the_out_of_distribution_check_say_so(dsb):
    """With 3 training images no fingerprint can be learned: the findings say the check did not run
    (and how to make it run) instead of leaving it out silently; with 5 it runs."""
    train, test = dsb
    findings = checks.run_checks(train_images=train[:3], test_images=test[:2])
    ood = [f for f in findings if f.check == "out of distribution"]
    assert len(ood) == 1 and ood[0].severity == "note"
    assert "Not checked: 3 training image(s)" in ood[0].what and "at least 5" in ood[0].action
    with_five = checks.run_checks(train_images=train[:5], test_images=test[:2])
    assert not any(f.what.startswith("Not checked") for f in with_five)
