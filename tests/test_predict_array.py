"""Predicting an array (a napari layer's data) with the trust note: in memory for NumPy, streamed
for lazy arrays; the same figures and verdict as predicting the image's file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _mosaic import assert_within_spec_tolerance, dsb_mosaic

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


# --- lazy arrays stream -------------------------------------------------------------------------


def zarr_array(path: Path, image: np.ndarray, chunks: tuple[int, ...]) -> Any:
    import zarr

    array = zarr.open_array(path, mode="w", shape=image.shape, chunks=chunks, dtype=image.dtype)
    array[...] = image
    return array


def test_a_dask_array_streams_into_ome_zarr_and_equals_the_in_memory_prediction(
    example_model: Path, shared_data: Path, tmp_path: Path
) -> None:
    import dask.array as da
    import zarr

    from microzoo.trust.note import predict_array_with_note

    mosaic = dsb_mosaic(shared_data, 4, 4, split="test")  # 1024 x 1024 uint16, 3 x 3 tiles
    lazy = da.from_zarr(zarr_array(tmp_path / "in.zarr", mosaic, (256, 256)))
    model = microzoo.load_model(example_model, weights="onnx")
    calls: list[tuple[int, int, str]] = []
    result = predict_array_with_note(
        model, lazy, axes="yx", stream_to=tmp_path / "cache", name="mosaic", progress=lambda *call: calls.append(call)
    )
    in_memory = predict_array_with_note(model, mosaic, axes="yx", name="mosaic")
    assert result.paths == {"probability": tmp_path / "cache" / "probability.ome.zarr"}
    assert isinstance(result.outputs["probability"], zarr.Array)  # opened lazily, level 0 of the pyramid
    assert result.axes == in_memory.axes == {"probability": "yx"} and result.uncertainty is None
    assert_within_spec_tolerance(np.asarray(result.outputs["probability"]), in_memory.outputs["probability"])
    assert any(c[:2] == (9, 9) and c[2].startswith("tile 9/9") for c in calls)  # progress per tile
    # the note compares the input (an overview: the whole of this one) and says what it checked
    (verdict,) = result.note.images
    assert verdict.name == "mosaic" and verdict.verdict == "similar" and verdict.checked == ("input features",)
    assert result.note.notes == ()  # 1024 x 1024: the overview is the whole image


def test_a_streamed_array_refuses_uncertainty_and_needs_a_folder(example_model: Path, tmp_path: Path) -> None:
    import dask.array as da

    from microzoo.errors import AxesError, ImageError, OutputError
    from microzoo.runtime.stream import predict_stream
    from microzoo.trust.note import predict_array_with_note

    model = microzoo.load_model(example_model, weights="onnx")
    lazy = da.zeros((512, 512), dtype=np.uint16, chunks=256)
    with pytest.raises(ImageError, match="uncertainty needs the whole image in memory"):
        predict_array_with_note(model, lazy, axes="yx", uncertainty="tta", stream_to=tmp_path)
    with pytest.raises(OutputError, match="give stream_to"):
        predict_array_with_note(model, lazy, axes="yx")
    with pytest.raises(AxesError, match="give the axes of the array"):
        predict_stream(model, lazy, tmp_path / "out.ome.zarr")
    assert not any(tmp_path.iterdir())


def test_a_large_array_streams_with_memory_that_does_not_grow_with_it(tmp_path: Path) -> None:
    """Streaming a 64 MiB Dask array: the peak of traced (NumPy) memory and of RSS growth stay
    below its size and within a few MiB of those for a 4 MiB array (tiles and blocks, not the
    array). The trust note after it looks at an overview of at most 2048 x 2048 pixels."""
    import dask.array as da
    from _packages import build_parameterized

    from microzoo.runtime.predict import Model
    from microzoo.trust.note import predict_array_with_note

    model = Model.open(build_parameterized(tmp_path / "package"), threads=1)
    rng = np.random.default_rng(0)
    peaks = {}
    for size in (512, 1024, 4096):  # the first run pays the fixed costs (threads, libraries, the engine)
        store = zarr_array(tmp_path / f"in{size}.zarr", np.zeros((size, size), np.float32), (256, 256))
        for row in range(0, size, 256):
            store[row : row + 256] = rng.normal(100, 20, (256, size)).astype(np.float32)
        lazy = da.from_zarr(store)
        with PeakMemory() as peak:
            result = predict_array_with_note(
                model, lazy, axes="yx", stream_to=tmp_path / f"out{size}", tile=256, memory_budget=32 * 2**20,
                progress=peak.mark,  # the last call ends the streaming: the note comes after
            )  # fmt: skip
        peaks[size] = (peak.marked, lazy.nbytes)
        assert result.outputs["prob"].shape == (size, size)
    (traced, rss), nbytes = peaks[4096]
    assert nbytes == 64 * 2**20
    assert traced < 0.6 * nbytes and traced - peaks[1024][0][0] < 8 * 2**20, peaks
    assert rss < nbytes, peaks
    expected = model.predict(np.asarray(store[1024:1536, 2048:2560]), axes="yx").only
    streamed = np.asarray(result.outputs["prob"][1024 + 16 : 1536 - 16, 2048 + 16 : 2560 - 16])
    np.testing.assert_allclose(streamed, expected[16:-16, 16:-16], rtol=1e-4, atol=1e-5)


class PeakMemory:
    """Peaks of traced allocations (tracemalloc: NumPy's included) and of the process' RSS above
    its value at the start (sampled every 5 ms), in bytes: ``marked`` holds both at the last
    call of :meth:`mark` (a progress callback)."""

    def __enter__(self) -> PeakMemory:
        import threading
        import tracemalloc

        self.start = self._rss()
        self.rss = 0
        self.marked = (0, 0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        tracemalloc.start()
        return self

    def mark(self, *progress: object) -> None:
        import tracemalloc

        self.rss = max(self.rss, self._rss() - self.start)
        self.marked = (tracemalloc.get_traced_memory()[1], self.rss)

    def __exit__(self, *exc: object) -> None:
        import tracemalloc

        tracemalloc.stop()
        self.stop.set()
        self.thread.join()

    def _sample(self) -> None:
        while not self.stop.wait(0.005):
            self.rss = max(self.rss, self._rss() - self.start)

    @staticmethod
    def _rss() -> int:
        import os

        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
