"""Classical baselines: denoising, parameter search, thresholds, watershed, folder runner."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from skimage import draw

from microzoo.errors import ConfigError, DataError
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
        "median",
        heavy,
        [clean],
        data_range=1.0,
        criterion="psnr_fitted",
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
        "gaussian",
        in_dir,
        tmp_path / "out",
        params={"sigma": 1.0},
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


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("gaussian", {"sigma": -1.0}, r"sigma=-1.0 is out of range for gaussian: gaussian takes sigma in \(0, 100\)"),
        ("gaussian", {"sigma": float("nan")}, "out of range"),
        ("gaussian", {"width": 2.0}, r"unknown parameter 'width' for gaussian: gaussian takes sigma in"),
        ("median", {"size": 2.5}, "size=2.5 must be a whole number"),
        ("local", {"block_size": 4}, "block_size=4 must be odd"),
        (
            "watershed",
            {"min_distance": 0},
            r"watershed takes smoothing_sigma in \[0, 100\].*min_distance in \[1, 1000\]",
        ),
    ],
)
def test_parameters_are_checked_against_each_methods_names_and_ranges(tmp_path: Path, method, params, message):
    with pytest.raises(ConfigError, match=message):
        classical.run_classical_on_folder(method, tmp_path, tmp_path / "out", params=params)
    assert not (tmp_path / "out").exists()


def test_cli_baseline_with_a_bad_parameter_prints_one_message(tmp_path: Path, noisy_pair):
    import subprocess
    import sys

    tifffile.imwrite(tmp_path / "a.tif", noisy_pair[0].astype(np.float32))
    for param, words in (("sigma=-1", "sigma=-1.0 is out of range"), ("radius=2", "unknown parameter 'radius'")):
        result = subprocess.run([sys.executable, "-m", "microzoo.cli", "baseline", "gaussian", "--images",
                                 str(tmp_path), "-o", str(tmp_path / "out"), "--param", param],
                                capture_output=True, text=True, timeout=300)  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert words in result.stderr and "Traceback" not in result.stderr


def test_task_baselines_on_planes_and_volumes():
    from microzoo.qc.baselines import baselines_for, instances_baseline, restoration_baselines, semantic_baseline

    rng = np.random.default_rng(1)
    volume = np.stack([_discs(shape=(48, 48), centres=((14, 14), (34, 30)), radius=8)] * 6) * 100
    noisy = volume + rng.normal(0, 20, volume.shape)
    (gaussian,) = restoration_baselines(train_noisy=[noisy], train_clean=[volume])
    assert gaussian.name == f"Gaussian (sigma {gaussian.params['sigma']:g})" and gaussian.notice is None
    assert _psnr(gaussian(noisy), volume, 100) > _psnr(noisy, volume, 100) + 3
    (untuned,) = restoration_baselines()
    assert untuned.params == {"sigma": 1.0} and "fixed parameters" in untuned.notice
    with pytest.raises(ConfigError, match="2-D images"):
        classical.denoise(noisy, method="nl_means", params={})
    assert instances_baseline()(volume + rng.normal(0, 2, volume.shape)).max() == 2  # 3-D: Otsu, connected parts
    dark = 255 - _discs() * 200  # dark objects on a bright background
    otsu = semantic_baseline(train_images=[dark], train_classes=[_discs().astype(int)])
    found, discs = otsu(dark) == 1, _discs() > 0
    assert otsu.name == "Otsu (dark)" and (found & discs).sum() / (found | discs).sum() > 0.95
    with pytest.raises(DataError, match="no classical baseline for task 'detection'"):
        baselines_for("detection")
