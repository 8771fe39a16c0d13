"""Training-data fingerprint and out-of-distribution check, on synthetic and real images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from microzoo.errors import DataError, ImageError
from microzoo.io.files import list_images
from microzoo.io.read import read_array as read_image
from microzoo.qc.image_features import guess_modality, image_features
from microzoo.trust.fingerprint import Fingerprint, fingerprint_images
from microzoo.trust.ood import check_images


def is_fluorescence(image: np.ndarray) -> bool:
    """The benchmark's rule for DSB2018 RGBA PNGs: grey (R = G = B), median grey value below 128."""
    rgb = image[..., :3]
    grey = bool(np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]))
    return grey and float(np.median(rgb[..., 0])) < 128


def _fluorescence(folder: Path, count: int) -> list[np.ndarray]:
    images = []
    for path in list_images(folder):
        image = read_image(path)
        if is_fluorescence(image):
            images.append(image)
        if len(images) == count:
            break
    return images


@pytest.fixture(scope="module")
def dsb_fingerprint(shared_data) -> Fingerprint:
    return fingerprint_images(_fluorescence(shared_data / "dsb2018" / "train" / "images", 40))


def _blobs(seed: int, noise: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros((128, 128))
    yy, xx = np.mgrid[:128, :128]
    for y, x in rng.uniform(10, 118, (12, 2)):
        image += 120 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 40)
    return np.clip(image + 10 + rng.normal(0, noise, image.shape), 0, 255).astype(np.uint8)


def test_features_and_modality_of_simple_images():
    blobs = _blobs(0)
    features = image_features(blobs)
    assert set(features) == {"noise_level", "background_level", "contrast", "spectral_slope", "colour", "brightness"}
    assert features["background_level"] < 0.2 and features["colour"] == 0
    assert image_features(_blobs(0, noise=20))["noise_level"] > 3 * features["noise_level"]
    assert "brightness" not in image_features(blobs.astype(np.float32))
    assert guess_modality(blobs) == "fluorescence"
    assert guess_modality(255 - blobs) == "brightfield"
    pink = np.stack([np.full((32, 32), 230), 255 - blobs[:32, :32], np.full((32, 32), 200)], -1).astype(np.uint8)
    assert guess_modality(pink) == "colour"
    with pytest.raises(ImageError, match="too small"):
        image_features(np.zeros((4, 4)))


def test_fingerprint_round_trips_and_flags_the_odd_ones(tmp_path: Path):
    training = [_blobs(seed) for seed in range(20)]
    before = training[0].copy()
    fingerprint = fingerprint_images(training, pixel_size=0.65)
    np.testing.assert_array_equal(training[0], before)
    assert fingerprint.n_images == 20 and fingerprint.shapes == [[128, 128]] and fingerprint.dtypes == ["uint8"]
    for suffix in (".json", ".yaml"):
        assert Fingerprint.load(fingerprint.save(tmp_path / f"fp{suffix}")) == fingerprint
    results = check_images(
        fingerprint, [_blobs(50), _blobs(51, noise=25), 255 - _blobs(52)], names=["same", "noisy", "inverted"]
    )
    assert [r.out_of_distribution for r in results] == [False, True, True]
    assert "noise_level" in {d.feature for d in results[1].deviations}
    assert "noisier" in results[1].summary and "training" in results[1].summary
    assert any(d.feature == "background_level" for d in results[2].deviations)
    scaled = check_images(fingerprint, [_blobs(50)], pixel_size=0.2)[0]
    assert scaled.out_of_distribution and "rescale" in scaled.summary


def test_fingerprint_and_check_reject_bad_input(tmp_path: Path):
    with pytest.raises(DataError, match="at least 5"):
        fingerprint_images([_blobs(0)])
    fingerprint = fingerprint_images([_blobs(seed) for seed in range(5)])
    with pytest.raises(DataError, match="one name per image"):
        check_images(fingerprint, [_blobs(0)], names=["a", "b"])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not a readable training fingerprint"):
        Fingerprint.load(tmp_path / "bad.json")


def test_w2s_is_flagged_and_dsb_test_fluorescence_mostly_not(dsb_fingerprint, shared_data):
    w2s = [read_image(p) for p in list_images(shared_data / "w2s" / "test" / "noisy")[:5]]
    assert all(r.out_of_distribution for r in check_images(dsb_fingerprint, w2s))
    test = _fluorescence(shared_data / "dsb2018" / "test" / "images", 15)
    flagged = sum(r.out_of_distribution for r in check_images(dsb_fingerprint, test))
    assert flagged <= 2
