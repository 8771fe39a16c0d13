"""Cancel: a progress callback raising Cancelled (a front end's cancel button) stops the work
between tiles or batches, leaves nothing half written, and a streamed job continues afterwards."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from microzoo.errors import Cancelled
from microzoo.progress import ProgressCallback, cancellable
from microzoo.runtime.predict import Model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Model:
    """A small 2-D conv net (fast: many tiles in little time)."""
    from _packages import build_parameterized

    return Model.open(build_parameterized(tmp_path_factory.mktemp("tiny") / "package"), threads=1)


def cancel_after(calls: int) -> tuple[list[float], list[tuple[int, int, str]], ProgressCallback]:
    """A cancel (a front end's button) pressed at the ``calls``-th progress call, so that the
    next call raises Cancelled: when it was pressed (``time.perf_counter``), the calls seen, and
    the callback."""
    stop = threading.Event()
    seen: list[tuple[int, int, str]] = []
    pressed: list[float] = []

    def count(done: int, total: int, description: str) -> None:
        seen.append((done, total, description))
        if len(seen) == calls:
            pressed.append(time.perf_counter())
            stop.set()

    return pressed, seen, cancellable(count, stop)


def stream_threads() -> list[str]:
    """The streaming runner's threads still alive (reader, forwards, writer)."""
    return [t.name for t in threading.enumerate() if any(f"({n})" in t.name for n in ("reader", "forward", "writer"))]


def test_predict_image_stops_between_tiles(tiny: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    image = np.random.default_rng(0).normal(100, 20, (512, 512)).astype(np.float32)
    forwards: list[int] = []
    engine = tiny.engine
    original = engine.forward
    monkeypatch.setattr(engine, "forward", lambda *arrays: forwards.append(1) or original(*arrays))
    pressed, seen, progress = cancel_after(2)
    with pytest.raises(Cancelled, match="cancelled at [0-9]+/[0-9]+: predicting tiles"):
        tiny.predict_image(image, axes="yx", tile=64, memory_budget=16 * 2**20, progress=progress)
    total = seen[0][1]
    assert seen[1][0] < total and len(forwards) == 2  # the batch begun when cancelled ran, no other
    # not cancelled: the same call runs to the end
    assert tiny.predict_image(image, axes="yx", tile=64, memory_budget=16 * 2**20).outputs.only.shape == (512, 512)


def test_predict_stream_stops_between_batches_and_continues_to_the_same_bytes(tiny: Model, tmp_path: Path) -> None:
    import dask.array as da
    import zarr

    from microzoo.runtime.stream import predict_stream
    from microzoo.runtime.stream_job import job_folder

    image = np.random.default_rng(1).normal(100, 20, (1024, 1024)).astype(np.float32)
    store = zarr.open_array(tmp_path / "in.zarr", mode="w", shape=image.shape, chunks=(256, 256), dtype=image.dtype)
    store[...] = image
    options = {"axes": "yx", "tile": 256, "memory_budget": 32 * 2**20, "threads": 1}
    whole = predict_stream(tiny, da.from_zarr(store), tmp_path / "whole.ome.zarr", **options)
    assert whole.n_batches > 4

    out = tmp_path / "out.ome.zarr"
    pressed, seen, progress = cancel_after(4)  # statistics, start, then 2 batches written
    with pytest.raises(Cancelled):
        predict_stream(tiny, da.from_zarr(store), out, progress=progress, **options)
    assert time.perf_counter() - pressed[0] < 5  # within a batch or two
    assert not stream_threads()  # the reader, forward and writer threads have ended
    assert not out.exists() and job_folder(out).is_dir()  # no half output: the job waits to continue
    done = len(list((job_folder(out) / "done").glob("batch-*.json")))
    assert 1 <= done < whole.n_batches

    # run again (a new Dask array over the same store): it continues and equals the whole run
    again = predict_stream(tiny, da.from_zarr(store), out, **options)
    assert again.resumed == done
    expected = zarr.open_array(tmp_path / "whole.ome.zarr" / "0", mode="r")[...]
    np.testing.assert_array_equal(zarr.open_array(out / "0", mode="r")[...], expected)


def test_predict_files_cancelled_leaves_only_whole_outputs(tiny: Model, tmp_path: Path) -> None:
    from microzoo.io.read import read_image
    from microzoo.io.write import write_image
    from microzoo.runtime.batch import predict_files

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(2)
    for name in ("a", "b", "c"):
        write_image(images / f"{name}.tif", rng.normal(100, 20, (128, 128)).astype(np.float32), "yx")
    inputs = sorted(images.iterdir())
    pressed, seen, progress = cancel_after(2)  # cancelled while the second file runs
    with pytest.raises(Cancelled, match="cancelled at 2/3: c.tif"):
        predict_files(tiny, inputs, tmp_path / "out", progress=progress)
    written = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in written] == ["a.tif", "b.tif"]  # the third never started; no temporary left
    assert all(read_image(p).data.shape == (128, 128) for p in written)
    # run again (overwrite the finished one): every file
    results = predict_files(tiny, inputs, tmp_path / "out", overwrite=True)
    assert len(results) == 3 and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.tif", "b.tif", "c.tif"]


def test_a_cancelled_array_prediction_continues_when_run_again(tiny: Model, tmp_path: Path) -> None:
    """The napari Run widget's path: a Dask layer cancelled part way, then run again into the
    same folder (overwrite: replace a finished result there, but continue this unfinished one)."""
    import dask.array as da

    from microzoo.trust.note import predict_array_with_note

    lazy = da.random.default_rng(3).normal(100, 20, (768, 768), chunks=256).astype(np.float32)
    options = {"axes": "yx", "tile": 256, "memory_budget": 32 * 2**20, "stream_to": tmp_path, "overwrite": True}
    pressed, seen, progress = cancel_after(3)
    with pytest.raises(Cancelled):
        predict_array_with_note(tiny, lazy, progress=progress, **options)
    assert not (tmp_path / "prob.ome.zarr").exists()
    again = predict_array_with_note(tiny, lazy, **options)
    assert again.notices[0].startswith("continued an unfinished job: ")
    expected = tiny.predict_image(lazy.compute(), axes="yx", tile=256, memory_budget=32 * 2**20).outputs.only
    np.testing.assert_allclose(np.asarray(again.outputs["prob"]), expected, rtol=1e-4, atol=1e-4)
    # a finished result there is replaced by the next run (overwrite), which starts afresh
    assert predict_array_with_note(tiny, lazy, **options).notices == ()


def test_an_array_prediction_stops_in_the_trust_notes_flip_check(tiny: Model) -> None:
    """In memory, the note's flip check predicts the image again (flipped): a cancel pressed as
    the check begins stops it after its first prediction."""
    from microzoo.trust.note import predict_array_with_note

    image = np.random.default_rng(4).normal(100, 20, (256, 256)).astype(np.float32)
    stop = threading.Event()
    seen: list[str] = []

    def press_at_the_check(done: int, total: int, description: str) -> None:
        seen.append(description)
        if description.startswith("checking"):
            stop.set()

    with pytest.raises(Cancelled, match=r"cancelled at 1/2: checking the prediction \(trust note\)"):
        predict_array_with_note(tiny, image, axes="yx", progress=cancellable(press_at_the_check, stop))
    assert seen.count("checking the prediction (trust note)") == 1
