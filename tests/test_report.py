"""The HTML report: self-contained, escaped, with the sections each task needs."""

from __future__ import annotations

import re

import numpy as np
import pytest

from microzoo.qc.evaluate import evaluate
from microzoo.qc.report import render_report


def _assert_self_contained(html: str) -> None:
    assert not re.search(r"(src|href)=\"(?!data:)", html), "only data: URLs may be referenced"
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html and "<link" not in html
    assert html.count("data:image/png;base64,") >= 2


@pytest.fixture(scope="module")
def instances():
    rng = np.random.default_rng(0)
    truths, preds, inputs = [], [], []
    for _ in range(4):
        labels = np.zeros((40, 40), np.uint16)
        for k, (y, x) in enumerate([(3, 3), (3, 22), (22, 12)]):
            dy, dx = rng.integers(0, 4, 2)
            labels[y + dy : y + dy + 8, x + dx : x + dx + 8] = k + 1
        truths.append(labels)
        shifted = np.roll(labels, 2, axis=1)
        shifted[30:36, 30:36] = 9  # a false positive
        preds.append(shifted)
        inputs.append(np.stack([labels > 0] * 3 + [np.ones_like(labels)], axis=-1).astype(np.uint8) * 200)
    return truths, preds, inputs


def test_instances_report_has_every_section(instances):
    truths, preds, inputs = instances
    result = evaluate({"net": preds, "<b>copy</b>": truths}, truths, task="instances", n_bootstrap=100)
    html, numbers = render_report(
        result, truths=truths, predictions={"net": preds, "<b>copy</b>": truths}, inputs=inputs
    )
    _assert_self_contained(html)
    for heading in (
        "Summary",
        "Pairwise differences",
        "Distributions over images",
        "Matching vs IoU threshold",
        "Worst images",
        "Examples",
        "Settings",
        "How to read this",
    ):
        assert heading in html
    assert "&lt;b&gt;copy&lt;/b&gt;" in html and "<b>copy</b>" not in html  # names are escaped
    assert "no clear difference" in html or "better" in html
    curve = numbers["threshold_curves"]["net"]
    assert curve["threshold"][0] == 0.5 and len(curve["f1"]) == 10
    assert numbers["distributions"]["f1@0.5"]["net"].shape == (4,)
    assert numbers["worst_images"][0]["image"].startswith("image_")
    assert 1 <= len(numbers["panels"]) <= 4


def test_restoration_report_without_inputs_and_without_curves():
    rng = np.random.default_rng(1)
    truths = [rng.random((24, 24)) for _ in range(3)]
    preds = [2 * t + rng.normal(0, 0.1, t.shape) for t in truths]
    result = evaluate({"denoiser": preds}, truths, task="restoration", data_range=1.0, n_bootstrap=50)
    html, numbers = render_report(result, truths=truths, predictions={"denoiser": preds})
    _assert_self_contained(html)
    assert "Matching vs IoU threshold" not in html and "Pairwise differences" not in html
    assert "fitted prediction" in html  # the error maps follow the main metric
    assert "intervals are rough" in html  # 3 images: say so
    assert "threshold_curves" not in numbers


def test_semantic_volume_and_detection_reports_render():
    truth = np.zeros((9, 20, 20), np.uint8)
    truth[3:6, 5:15, 5:15] = 1
    pred = np.roll(truth, 1, axis=2)
    result = evaluate({"seg": [pred, truth]}, [truth, truth], task="semantic", n_bootstrap=50)
    html, _ = render_report(result, truths=[truth, truth], predictions={"seg": [pred, truth]})
    _assert_self_contained(html)
    assert "iou[1]" in html
    points_true = [np.array([[5.0, 5.0], [15.0, 15.0]])] * 2
    points_pred = [np.array([[5.0, 6.0], [30.0, 1.0]])] * 2
    result = evaluate({"spots": points_pred}, points_true, task="detection", tolerance=2.0, n_bootstrap=50)
    html, _ = render_report(
        result, truths=points_true, predictions={"spots": points_pred}, inputs=[np.zeros((32, 32))] * 2
    )
    _assert_self_contained(html)
    assert "mean_distance" in html
