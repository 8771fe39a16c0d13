"""Metrics: hand-worked cases for every family, and checks on real DSB2018 and W2S images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tifffile
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.segmentation import find_boundaries

from microzoo.errors import DataError
from microzoo.qc.metrics import (
    DEFAULT_THRESHOLDS,
    affine_fit,
    instance_metrics_dataset,
    mae,
    match_instances,
    match_points,
    nrmse,
    psnr,
    restoration_metrics,
    semantic_metrics,
    ssim,
)

# ---------------------------------------------------------------- restoration


def test_psnr_by_hand_and_against_skimage():
    assert psnr(np.zeros(4), np.full(4, 0.1), data_range=1.0) == pytest.approx(20.0)
    assert psnr(np.ones((3, 3)), np.ones((3, 3)), data_range=1.0) == math.inf
    rng = np.random.default_rng(0)
    truth, pred = rng.random((32, 32)), rng.random((32, 32))
    assert psnr(truth, pred, data_range=1.0) == pytest.approx(peak_signal_noise_ratio(truth, pred, data_range=1.0))


def test_ssim_matches_skimage_and_is_one_for_equal_images():
    rng = np.random.default_rng(1)
    truth, pred = rng.random((32, 32)), rng.random((32, 32))
    assert ssim(truth, truth, data_range=1.0) == pytest.approx(1.0)
    assert ssim(truth, pred, data_range=1.0) == pytest.approx(structural_similarity(truth, pred, data_range=1.0))
    with pytest.raises(DataError, match="7 pixels"):
        ssim(np.zeros((4, 40)), np.zeros((4, 40)), data_range=1.0)


def test_nrmse_and_mae_by_hand():
    truth = np.array([3.0, 4.0])
    assert nrmse(truth, np.zeros(2)) == pytest.approx(1.0)  # as far off as zeros
    assert nrmse(truth, truth) == 0.0
    assert nrmse(np.zeros(2), np.zeros(2)) == 0.0
    assert nrmse(np.zeros(2), np.ones(2)) == math.inf
    assert mae(truth, np.array([1.0, 6.0])) == pytest.approx(2.0)


def test_affine_fit_removes_scale_and_offset_and_leaves_inputs_alone():
    rng = np.random.default_rng(2)
    truth = rng.random((16, 16))
    pred = 2 * truth + 3
    before = pred.copy()
    np.testing.assert_allclose(affine_fit(pred, truth), truth, atol=1e-12)
    np.testing.assert_array_equal(pred, before)
    np.testing.assert_allclose(affine_fit(np.full((4, 4), 7.0), truth[:4, :4]), truth[:4, :4].mean())


def test_restoration_metrics_keys_and_fit_never_hurts_psnr():
    rng = np.random.default_rng(3)
    truth = rng.random((32, 32))
    pred = 0.5 * truth + 0.2 + 0.05 * rng.standard_normal((32, 32))
    figures = restoration_metrics(truth, pred, data_range=1.0)
    assert set(figures) == {
        f"{name}{suffix}" for name in ("psnr", "ssim", "nrmse", "mae") for suffix in ("", "_fitted")
    }
    assert figures["psnr_fitted"] > figures["psnr"]
    assert figures["mae_fitted"] < figures["mae"]


def test_restoration_errors_name_the_problem():
    with pytest.raises(DataError, match="differ in shape"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)), data_range=1.0)
    with pytest.raises(DataError, match="data_range"):
        psnr(np.zeros(4), np.ones(4), data_range=0)


def test_w2s_noisy_against_clean(shared_data):
    clean = tifffile.imread(shared_data / "w2s" / "test" / "clean" / "081.tif")
    noisy = tifffile.imread(shared_data / "w2s" / "test" / "noisy" / "081.tif")
    figures = restoration_metrics(clean, noisy, data_range=255)
    # the README measures 20.38 dB raw / 20.53 fitted on average over the test fields
    assert 15 < figures["psnr"] < 28
    assert figures["psnr_fitted"] >= figures["psnr"]
    assert 0 < figures["ssim"] < 1


# ---------------------------------------------------------------- semantic


def test_semantic_by_hand():
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    pred = np.array([[0, 0, 0, 1], [0, 0, 0, 1]])
    figures = semantic_metrics(truth, pred)
    assert figures["pixel_accuracy"] == pytest.approx(6 / 8)
    assert figures["iou"] == {0: pytest.approx(4 / 6), 1: pytest.approx(2 / 4)}
    assert figures["dice"][1] == pytest.approx(2 * 2 / (4 + 2))
    assert figures["mean_iou"] == pytest.approx((4 / 6 + 0.5) / 2)
    assert figures["counts"][1] == {"intersection": 2, "truth": 4, "pred": 2}


def test_semantic_class_in_neither_map_is_undefined_not_zero():
    truth = np.array([0, 1, 1])
    figures = semantic_metrics(truth, truth, classes=(0, 1, 2))
    assert math.isnan(figures["iou"][2])
    assert figures["mean_iou"] == 1.0


def test_semantic_rejects_float_maps():
    with pytest.raises(DataError, match="integer class ids"):
        semantic_metrics(np.zeros(3), np.zeros(3))


# ---------------------------------------------------------------- instances


def _squares(shape=(20, 20), boxes=(), ids=None):
    labels = np.zeros(shape, np.int32)
    for index, (y0, y1, x0, x1) in enumerate(boxes):
        labels[y0:y1, x0:x1] = ids[index] if ids else index + 1
    return labels


def test_empty_prediction():
    truth = _squares(boxes=[(0, 4, 0, 4), (10, 14, 10, 14)])
    m = match_instances(truth, np.zeros_like(truth)).at(0.5)
    assert (m["tp"], m["fp"], m["fn"]) == (0, 0, 2)
    assert math.isnan(m["precision"])  # StarDist writes 0: undefined here
    assert m["recall"] == 0 and m["f1"] == 0 and m["accuracy"] == 0 and m["panoptic_quality"] == 0


def test_empty_truth():
    pred = _squares(boxes=[(0, 4, 0, 4), (10, 14, 10, 14)])
    m = match_instances(np.zeros_like(pred), pred).at(0.5)
    assert (m["tp"], m["fp"], m["fn"]) == (0, 2, 0)
    assert m["precision"] == 0 and math.isnan(m["recall"]) and m["f1"] == 0


def test_both_empty_is_undefined_and_does_not_weigh_on_the_data_set():
    empty = np.zeros((8, 8), np.uint16)
    m = match_instances(empty, empty)
    assert m.n_true == m.n_pred == 0
    assert np.isnan(m.f1).all() and np.isnan(m.accuracy).all()
    truth = _squares(boxes=[(0, 4, 0, 4)])
    pooled = instance_metrics_dataset([m, match_instances(truth, truth)])
    assert pooled.f1.tolist() == [1.0] * len(DEFAULT_THRESHOLDS)


def test_one_object_split_in_two():
    truth = _squares(boxes=[(0, 10, 0, 10)])  # 100 pixels
    pred = _squares(boxes=[(0, 10, 0, 6), (0, 10, 6, 10)])  # 60 and 40 pixels: IoU 0.6, 0.4
    m = match_instances(truth, pred, thresholds=(0.5, 0.6, 0.65))
    assert m.tp.tolist() == [1, 1, 0]
    assert m.fp.tolist() == [1, 1, 2]
    assert m.fn.tolist() == [0, 0, 1]
    at = m.at(0.5)
    assert at["precision"] == 0.5 and at["recall"] == 1.0
    assert at["f1"] == pytest.approx(2 / 3)
    assert at["accuracy"] == pytest.approx(1 / 2)
    assert at["mean_matched_iou"] == pytest.approx(0.6)
    assert at["panoptic_quality"] == pytest.approx(0.6 / (1 + 1 / 2))
    assert m.pairs[0].tolist() == [[1.0, 1.0, pytest.approx(0.6)]]


def test_touching_objects_kept_apart_or_merged():
    truth = _squares(boxes=[(0, 4, 0, 4), (0, 4, 4, 8)])  # share an edge
    swapped = _squares(boxes=[(0, 4, 0, 4), (0, 4, 4, 8)], ids=[7, 3])
    assert match_instances(truth, swapped).f1.tolist() == [1.0] * len(DEFAULT_THRESHOLDS)
    merged = _squares(boxes=[(0, 4, 0, 8)])  # IoU 16/32 = 0.5 with each
    m = match_instances(truth, merged, thresholds=(0.5, 0.55))
    assert m.tp.tolist() == [1, 0]
    assert m.fn.tolist() == [1, 2]


def test_non_consecutive_ids_are_reported_as_given():
    truth = _squares(boxes=[(0, 4, 0, 4), (10, 14, 10, 14)], ids=[5, 100])
    pred = _squares(boxes=[(10, 14, 10, 14), (0, 4, 0, 4)], ids=[3, 65000]).astype(np.uint16)
    m = match_instances(truth, pred, thresholds=(0.5,))
    assert m.tp.tolist() == [2]
    assert sorted(map(tuple, m.pairs[0][:, :2].tolist())) == [(5.0, 65000.0), (100.0, 3.0)]


def test_three_d_shifted_cube():
    truth = np.zeros((8, 8, 8), np.uint8)
    truth[1:5, 1:5, 1:5] = 1
    pred = np.zeros_like(truth)
    pred[2:6, 1:5, 1:5] = 9  # one slice off: overlap 48, union 80
    m = match_instances(truth, pred, thresholds=(0.6, 0.65))
    assert m.tp.tolist() == [1, 0]
    assert m.at(0.6)["mean_matched_iou"] == pytest.approx(0.6)


def test_hungarian_beats_greedy_below_one_half():
    # one row of pixels: truth A=[0,10) B=[10,20); pred Q=[0,3) P=[3,14)
    truth = np.zeros((1, 24), np.int32)
    truth[0, :10], truth[0, 10:20] = 1, 2
    pred = np.zeros_like(truth)
    pred[0, :3], pred[0, 3:14] = 1, 2
    # IoU: A-P 7/14=0.5, A-Q 3/10=0.3, B-P 4/17; greedy by IoU would match A-P only
    m = match_instances(truth, pred, thresholds=(0.2, 0.3))
    assert m.tp.tolist() == [2, 1]
    assert m.sum_matched_iou[1] == pytest.approx(0.5)  # the best pair counts at 0.3


def test_pooling_sums_counts_like_stardist_matching_dataset():
    truth = _squares(boxes=[(0, 4, 0, 4), (10, 14, 10, 14)])
    pred = _squares(boxes=[(0, 4, 0, 4)])
    pooled = instance_metrics_dataset([match_instances(truth, pred), match_instances(truth, truth)])
    at = pooled.at(0.5)
    assert (at["tp"], at["fp"], at["fn"], at["n_true"], at["n_pred"]) == (3, 0, 1, 4, 3)
    assert at["recall"] == pytest.approx(3 / 4)


def test_instance_errors_name_the_problem():
    with pytest.raises(DataError, match="integers"):
        match_instances(np.zeros((4, 4)), np.zeros((4, 4), int))
    with pytest.raises(DataError, match="shape"):
        match_instances(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(DataError, match="not computed"):
        match_instances(np.zeros((4, 4), int), np.zeros((4, 4), int)).at(0.42)


def _count_pairs_by_brute_force(truth, pred, threshold):
    """Independent count for thresholds >= 0.5: every pair reaching it is unique."""
    count = 0
    for label in np.unique(truth)[1:]:
        mask = truth == label
        ids, overlaps = np.unique(pred[mask], return_counts=True)
        for other, overlap in zip(ids, overlaps, strict=True):
            if other and overlap / (mask.sum() + (pred == other).sum() - overlap) >= threshold:
                count += 1
    return count


def test_dsb2018_labels_against_themselves_and_an_eroded_copy(shared_data):
    path = sorted((shared_data / "dsb2018" / "test" / "labels").glob("*.tif"))[0]
    truth = tifffile.imread(path)
    same = match_instances(truth, truth)
    assert same.f1.tolist() == [1.0] * 10 and same.panoptic_quality.tolist() == [1.0] * 10
    eroded = truth.copy()
    eroded[find_boundaries(truth, mode="inner")] = 0
    m = match_instances(truth, eroded)
    assert m.n_pred <= m.n_true
    assert m.f1[0] > 0.8
    assert m.f1[-1] < m.f1[0]  # thin rims cost the strict thresholds
    for k, threshold in enumerate(m.thresholds[::3]):
        assert m.tp[k * 3] == _count_pairs_by_brute_force(truth, eroded, threshold)


# ---------------------------------------------------------------- detection


def test_points_by_hand_and_hungarian():
    truth = np.array([[0.0, 0.0], [0.0, 3.0]])
    # P is within reach of both, Q only of the first: nearest-first would match one pair
    pred = np.array([[0.0, 1.0], [0.0, -1.5]])
    m = match_points(truth, pred, tolerance=2.0)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert m.mean_distance == pytest.approx((2.0 + 1.5) / 2)
    far = match_points(truth, np.array([[50.0, 50.0]]), tolerance=2.0)
    assert (far.tp, far.fp, far.fn, far.precision, far.recall) == (0, 1, 2, 0.0, 0.0)


def test_points_empty():
    m = match_points(np.zeros((0, 2)), np.zeros((0, 2)), tolerance=1.0)
    assert (m.tp, m.fp, m.fn) == (0, 0, 0) and math.isnan(m.f1)
    m = match_points(np.array([[1.0, 1.0]]), np.zeros((0, 2)), tolerance=1.0)
    assert m.fn == 1 and m.recall == 0 and math.isnan(m.precision)
