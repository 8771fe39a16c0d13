"""Instance segmentation targets, threshold search and loss (train.tasks.instance_targets).

Decoding (runtime.instances) is tested here too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage as ndi

from microzoo.errors import ConfigError, DataError
from microzoo.qc.metrics_instances import instance_metrics_dataset, match_instances
from microzoo.runtime.instances import N_TARGET_CHANNELS, InstanceSettings, instances_from_output
from microzoo.train.tasks.instance_targets import instance_loss, optimize_instance_settings, targets_from_labels

# DSB2018 training labels: four with many touching nuclei, four others (first in name order)
TOUCHING = ("9bb6e39d", "e49fc2b4", "c53326fe", "df53d0b6")
OTHERS = ("00071198", "01d44a26", "0280fa8f", "02903040")


def _dsb_labels(shared_data: Path, prefixes) -> list[np.ndarray]:
    folder = shared_data / "dsb2018" / "train" / "labels"
    return [tifffile.imread(next(folder.glob(f"{prefix}*.tif"))) for prefix in prefixes]


def _touching_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    pairs = set()
    for axis in range(labels.ndim):
        first = np.take(labels, range(labels.shape[axis] - 1), axis=axis)
        second = np.take(labels, range(1, labels.shape[axis]), axis=axis)
        both = (first > 0) & (second > 0) & (first != second)
        pairs |= {tuple(sorted(p)) for p in zip(first[both].tolist(), second[both].tolist(), strict=True)}
    return pairs


def _balls_3d() -> np.ndarray:
    """Five balls of radius 7 in a 32x48x48 volume, overlapping ones cut along their mid-plane."""
    centres = np.array([[16, 14, 14], [16, 14, 26], [16, 26, 20], [10, 34, 34], [23, 33, 36]])
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in (32, 48, 48)], indexing="ij"), axis=-1)
    distances = np.linalg.norm(grid[..., None, :] - centres, axis=-1)
    nearest = np.argmin(distances, axis=-1)
    labels = np.where(distances.min(axis=-1) <= 7, np.array([3, 9, 40, 41, 1000])[nearest], 0)
    return labels.astype(np.uint16)


def test_targets_channels_on_two_touching_squares():
    labels = np.zeros((7, 12), np.uint16)
    labels[1:6, 1:6] = 5
    labels[1:6, 6:11] = 2
    original = labels.copy()
    targets = targets_from_labels(labels)
    np.testing.assert_array_equal(labels, original)
    assert targets.shape == (N_TARGET_CHANNELS, 7, 12) and targets.dtype == np.float32
    np.testing.assert_array_equal(targets[0], labels > 0)
    # inner boundaries: each square's own outline, so the shared edge is two pixels thick
    assert targets[1, 3, 5] == 1 and targets[1, 3, 6] == 1 and targets[1, 3, 3] == 0
    assert np.all(targets[1][labels == 0] == 0)
    # distance: 0 outside, 1 at each centre, low at the shared edge
    assert np.all(targets[2][labels == 0] == 0)
    assert targets[2, 3, 3] == 1 and targets[2, 3, 8] == 1
    assert targets[2, 3, 5] < 0.5 and targets[2, 3, 6] < 0.5
    assert targets.min() >= 0 and targets.max() <= 1


def test_targets_do_not_treat_the_image_border_as_an_edge():
    labels = np.zeros((10, 10), np.uint8)
    labels[:, :4] = 1  # cut by the left border
    distance = targets_from_labels(labels)[2]
    np.testing.assert_allclose(distance[5, :4], [1.0, 0.75, 0.5, 0.25])
    full = targets_from_labels(np.ones((4, 4), np.uint8))
    assert np.all(full[2] == 1) and np.all(full[0] == 1)


@pytest.mark.slow
def test_perfect_output_recovers_dsb2018_nuclei_including_touching_ones(shared_data):
    settings = InstanceSettings()
    matchings, n_pairs, n_pairs_recovered = [], 0, 0
    for labels in _dsb_labels(shared_data, TOUCHING + OTHERS):
        output = instances_from_output(targets_from_labels(labels), settings=settings)
        assert output.dtype == np.uint32 and output.shape == labels.shape
        matching = match_instances(labels, output, thresholds=(0.5,))
        matchings.append(matching)
        matched = set(matching.pairs[0][:, 0].astype(int).tolist())
        pairs = _touching_pairs(labels)
        n_pairs += len(pairs)
        n_pairs_recovered += sum(a in matched and b in matched for a, b in pairs)
    pooled = instance_metrics_dataset(matchings).at(0.5)
    assert pooled["n_true"] > 400
    assert pooled["f1"] >= 0.95
    assert n_pairs > 150 and n_pairs_recovered / n_pairs >= 0.95


def test_3d_touching_balls_are_recovered():
    labels = _balls_3d()
    assert len(_touching_pairs(labels)) >= 3
    output = instances_from_output(targets_from_labels(labels), settings=InstanceSettings())
    matching = match_instances(labels, output, thresholds=(0.5, 0.9)).at(0.9)
    assert matching["n_pred"] == matching["tp"] == 5


def test_non_consecutive_ids_and_consecutive_output():
    labels = np.zeros((40, 40), np.int64)
    labels[2:12, 2:12] = 70000
    labels[2:12, 12:22] = 3
    labels[25:35, 25:38] = 12
    targets = targets_from_labels(labels)
    assert targets[2].max() == 1
    output = instances_from_output(targets, settings=InstanceSettings())
    assert sorted(np.unique(output).tolist()) == [0, 1, 2, 3]
    assert match_instances(labels, output, thresholds=(0.9,)).at(0.9)["tp"] == 3


def test_empty_labels_give_empty_output():
    for shape in ((16, 16), (4, 16, 16)):
        targets = targets_from_labels(np.zeros(shape, np.uint16))
        assert targets.shape == (N_TARGET_CHANNELS, *shape) and not targets.any()
        output = instances_from_output(targets, settings=InstanceSettings())
        assert output.dtype == np.uint32 and output.shape == shape and not output.any()


def test_small_objects_are_removed_and_objects_without_a_seed_kept():
    labels = np.zeros((30, 30), np.uint8)
    labels[2:12, 2:12] = 1
    labels[20:22, 20:22] = 2  # 4 pixels, all boundary: its seed map never passes the threshold
    targets = targets_from_labels(labels)
    assert instances_from_output(targets, settings=InstanceSettings(min_size=10)).max() == 1
    output = instances_from_output(targets, settings=InstanceSettings(min_size=0))
    assert output.max() == 2 and np.all(output[20:22, 20:22] == 2)
    # a noisy speck's seed is dropped, its area kept as an object of its own unless too small
    noisy = targets.copy()
    noisy[:, 25, 5] = 1.0
    assert instances_from_output(noisy, settings=InstanceSettings(min_size=0, min_seed_size=2))[25, 5] == 3
    assert instances_from_output(noisy, settings=InstanceSettings(min_size=2, min_seed_size=2))[25, 5] == 0


def _noisy(targets: np.ndarray, rng: np.random.Generator, *, distance_scale: float) -> np.ndarray:
    """A plausible network output: targets blurred, with noise, the distance peaks too low."""
    noisy = targets + rng.normal(scale=0.25, size=targets.shape).astype(np.float32)
    noisy = ndi.gaussian_filter(noisy, sigma=(0, 1.5, 1.5))
    noisy[2] *= distance_scale
    return np.clip(noisy, 0, 1).astype(np.float32)


@pytest.mark.slow
def test_optimiser_beats_defaults_on_noisy_outputs_and_is_reproducible(shared_data):
    labels = _dsb_labels(shared_data, TOUCHING[:3])
    rng = np.random.default_rng(0)
    outputs = [_noisy(targets_from_labels(lab), rng, distance_scale=0.6) for lab in labels]
    grid = {"foreground_threshold": (0.4, 0.5), "seed_threshold": (0.1, 0.2, 0.3, 0.5)}
    best, table = optimize_instance_settings(outputs, labels, grid=grid)
    again = optimize_instance_settings(outputs, labels, grid=grid)
    assert again[0] == best and again[1] == table

    def pooled_f1(settings):
        return instance_metrics_dataset(
            [
                match_instances(t, instances_from_output(o, settings=settings), thresholds=(0.5,))
                for o, t in zip(outputs, labels, strict=True)
            ]
        ).at(0.5)["f1"]

    assert table["rows"][0]["seed_threshold"] == InstanceSettings().seed_threshold  # defaults first
    assert len(table["rows"]) == 1 + 2 * 4 - 1  # the defaults are also a grid point
    assert table["rows"][table["best"]]["f1"] == pytest.approx(pooled_f1(best))
    assert pooled_f1(best) > pooled_f1(InstanceSettings()) + 0.05
    assert best.seed_threshold < 0.5 and pooled_f1(best) > 0.8


def test_optimiser_input_errors():
    labels = np.zeros((8, 8), np.uint8)
    output = targets_from_labels(labels)
    with pytest.raises(DataError, match="one label image per output"):
        optimize_instance_settings([output], [])
    with pytest.raises(ConfigError, match="unknown settings"):
        optimize_instance_settings([output], [labels], grid={"threshold": (0.5,)})
    with pytest.raises(ConfigError, match="invalid grid values"):
        optimize_instance_settings([output], [labels], grid={"foreground_threshold": (1.5,)})
    with pytest.raises(DataError, match="spatial shape"):
        optimize_instance_settings([output], [np.zeros((8, 9), np.uint8)])


def test_input_errors():
    with pytest.raises(DataError, match="integer ids"):
        targets_from_labels(np.zeros((4, 4), np.float32))
    with pytest.raises(DataError, match="2-D or 3-D"):
        targets_from_labels(np.zeros((2, 2, 4, 4), np.uint8))
    with pytest.raises(DataError, match="foreground, boundary, distance"):
        instances_from_output(np.zeros((2, 4, 4), np.float32), settings=InstanceSettings())
    with pytest.raises(Exception, match="foreground_threshold"):
        InstanceSettings(foreground_threshold=2.0)


def test_settings_round_trip_through_a_dict():
    settings = InstanceSettings(seed_threshold=0.3, min_size=5)
    assert InstanceSettings.model_validate(settings.model_dump()) == settings


def test_loss_is_bce_with_logits_per_channel_and_trains():
    labels = _balls_3d()[16].astype(np.int64)
    target = torch.from_numpy(targets_from_labels(labels))[None]
    zero = instance_loss(torch.zeros_like(target), target)
    assert zero.item() == pytest.approx(3 * np.log(2), rel=1e-5)  # every channel at p = 0.5
    perfect_logits = torch.logit(target.clamp(1e-4, 1 - 1e-4))
    assert instance_loss(perfect_logits, target) < instance_loss(-perfect_logits, target)
    logits = torch.zeros_like(target, requires_grad=True)
    for _ in range(20):  # plain gradient descent; the mean over pixels makes each gradient small
        loss = instance_loss(logits, target)
        (gradient,) = torch.autograd.grad(loss, logits)
        with torch.no_grad():
            logits -= 4 * target[0, 0].numel() * gradient
    assert loss.item() < zero.item() / 2
    with pytest.raises(DataError, match="same shape"):
        instance_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(DataError, match="foreground, boundary"):
        instance_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
