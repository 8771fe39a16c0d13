"""Classical baselines: denoising, parameter search, thresholds, watershed, folder runner."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from skimage import draw

from microzoo.errors import ConfigError, DataError, ImageError
from microzoo.qc import classical


def _discs(shape=(96, 96), centres=((30, 30), (30, 52), (70, 60)), radius=11) -> np.ndarray:
    image = np.zeros(shape)
    for centre in centres:
        rr, cc = draw.disk(centre, radius, shape=shape)
        image[rr, cc] = 1.0
    return image


def _psnr(a, b, data_range=1.0):
    return 10 * np.log10(data_range**2 / np.mean((a - b) ** 2))


@pytest.fixture
def noisy_pair():
    rng = np.random.default_rng(0)
    clean = _discs() * 0.6 + 0.2
    return clean + rng.normal(0, 0.1, clean.shape), clean


@pytest.mark.parametrize("method", classical.DENOISING_METHODS)
def test_each_denoiser_improves_psnr_and_does_not_mutate(method, noisy_pair):
    noisy, clean = noisy_pair
    before = noisy.copy()
    output = classical.denoise(noisy, method=method, params=classical.DEFAULT_GRIDS[method][2])
    assert output.shape == noisy.shape
    assert _psnr(clean, output) > _psnr(clean, noisy) + 3
    np.testing.assert_array_equal(noisy, before)


def test_tune_denoiser_follows_the_noise(noisy_pair):
    _, clean = noisy_pair
    rng = np.random.default_rng(1)
    light = [clean + rng.normal(0, 0.02, clean.shape)]
    heavy = [clean + rng.normal(0, 0.3, clean.shape)]
    sigma_light = classical.tune_denoiser("gaussian", light, [clean], data_range=1.0)["sigma"]
    sigma_heavy = classical.tune_denoiser("gaussian", heavy, [clean], data_range=1.0)["sigma"]
    assert sigma_heavy > sigma_light
    # additive Gaussian noise: the estimate is right, so BM3D's best multiple is about one
    best = classical.tune_denoiser(
        "bm3d", heavy, [clean], data_range=1.0, grid=[{"sigma_factor": f} for f in (0.5, 1.0, 3.0)]
    )
    assert best == {"sigma_factor": 1.0}
    calls = []
    classical.tune_denoiser(
        "median", heavy, [clean], data_range=1.0, criterion="psnr_fitted",
        progress=lambda d, t, s: calls.append((d, t)),
    )
    assert calls[-1] == (4, 4)


def test_tune_denoiser_rejects_bad_input(noisy_pair):
    noisy, clean = noisy_pair
    with pytest.raises(DataError, match="matching noisy and clean"):
        classical.tune_denoiser("gaussian", [noisy], [], data_range=1.0)
    with pytest.raises(ConfigError, match="choose one of"):
        classical.tune_denoiser("wiener", [noisy], [clean], data_range=1.0)


def test_polarity_and_thresholds_on_bright_and_dark_objects():
    image = _discs() + np.random.default_rng(2).normal(0, 0.05, (96, 96))
    truth = _discs() > 0
    assert classical.detect_polarity(image) == "bright"
    assert classical.detect_polarity(1 - image) == "dark"
    for method in ("otsu", "local"):
        for picture in (image, 1 - image):
            mask = classical.threshold_segmentation(
                picture, method=method, smoothing_sigma=1.0, block_size=61, offset=0.1
            )
            assert np.mean(mask == truth) > 0.95
    with pytest.raises(ConfigError, match="odd"):
        classical.threshold_segmentation(image, method="local", block_size=10)


def test_watershed_splits_touching_nuclei_in_either_polarity():
    image = _discs()
    for picture in (image, 1 - image, np.stack([255 * (1 - image)] * 3 + [np.full_like(image, 255)], -1)):
        labels = classical.watershed_instances(picture)
        assert labels.max() == 3
    assert classical.watershed_instances(np.zeros((20, 20))).max() == 0


def test_watershed_on_a_real_fluorescence_image(shared_data):
    path = sorted((shared_data / "dsb2018" / "test" / "images").glob("*.png"))[0]
    truth = tifffile.imread(shared_data / "dsb2018" / "test" / "labels" / f"{path.stem}.tif")
    labels = classical.watershed_instances(iio.imread(path))
    assert abs(int(labels.max()) - int(truth.max())) <= 0.3 * truth.max()


def test_run_classical_on_folder_writes_and_times(tmp_path: Path, noisy_pair):
    noisy, _ = noisy_pair
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    for name in ("a", "b"):
        tifffile.imwrite(in_dir / f"{name}.tif", noisy.astype(np.float32))
    calls = []
    run = classical.run_classical_on_folder(
        "gaussian", in_dir, tmp_path / "out", params={"sigma": 1.0},
        progress=lambda d, t, s: calls.append(d),
    )
    assert [p.name for p in run.outputs] == ["a.tif", "b.tif"]
    assert len(run.seconds_per_image) == 2 and run.mean_seconds >= 0
    assert calls == [1, 2]
    labels = classical.run_classical_on_folder("watershed", in_dir, tmp_path / "labels")
    assert tifffile.imread(labels.outputs[0]).dtype == np.int32
    with pytest.raises(ConfigError, match="is the input folder"):
        classical.run_classical_on_folder("otsu", in_dir, in_dir)
    with pytest.raises(DataError, match="no images"):
        classical.run_classical_on_folder("otsu", tmp_path / "out" / "..", tmp_path / "x")
