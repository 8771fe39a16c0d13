"""Predicting an array (a napari layer's data) with the trust note: in memory for NumPy, streamed
for lazy arrays; the same figures and verdict as predicting the image's file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import microzoo
from microzoo.io.read import read_image


@pytest.fixture(scope="module")
def nuclei_image(shared_data: Path) -> Path:
    """A DSB2018 fluorescence test image (256 x 256)."""
    return sorted((shared_data / "dsb2018" / "test" / "images").glob("*.png"))[0]


def test_a_numpy_array_gives_the_outputs_and_note_of_its_file(
    example_model: Path, nuclei_image: Path, tmp_path: Path
) -> None:
    from microzoo.trust.note import predict_array_with_note, predict_files_with_note

    model = microzoo.load_model(example_model, weights="onnx")
    image = read_image(nuclei_image)
    calls: list[tuple[int, int, str]] = []
    result = predict_array_with_note(
        model, np.asarray(image.data), axes=image.axes, name=nuclei_image.name,
        progress=lambda *call: calls.append(call),
    )  # fmt: skip
    run = predict_files_with_note(model, [nuclei_image], tmp_path / "out")
    (file_result,) = run.results
    (output_id,) = model.output_ids
    written = read_image(file_result.outputs[output_id])
    assert result.axes == file_result.prediction.axes and result.paths == {} and result.uncertainty is None
    assert isinstance(result.outputs[output_id], np.ndarray)
    np.testing.assert_allclose(result.outputs[output_id], np.asarray(written.data), rtol=1e-5, atol=1e-6)
    assert result.notices == file_result.prediction.notices
    # the same verdict, score and reasons as the file's, and the same note written as JSON
    assert result.note == run.trust
    assert json.loads(json.dumps(result.note.to_dict())) == json.loads(run.trust_file.read_text())
    assert result.note.images[0].verdict == "similar"
    assert calls and calls[-1] == (1, 1, "checking the prediction (trust note)")


def test_with_uncertainty_the_spread_of_the_first_output_comes_back(example_model: Path, nuclei_image: Path) -> None:
    from microzoo.runtime.uncertainty import predict_with_uncertainty
    from microzoo.trust.note import predict_array_with_note

    model = microzoo.load_model(example_model, weights="onnx")
    image = read_image(nuclei_image)
    data = np.asarray(image.data)
    result = predict_array_with_note(model, data, axes=image.axes, uncertainty="tta")
    expected = predict_with_uncertainty(model, data, axes=image.axes, method="tta")
    (output_id,) = model.output_ids
    assert result.uncertainty is not None and result.uncertainty.shape == result.outputs[output_id].shape
    np.testing.assert_allclose(result.uncertainty, expected.spread[output_id], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.outputs[output_id], expected.prediction.outputs[output_id], atol=1e-6)
    assert result.note.images[0].checked[-1] == "all 8 flips and rotations"
