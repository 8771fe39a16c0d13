"""Streaming prediction: images larger than memory, tile by tile into OME-Zarr, resumable.

The second path beside :meth:`microzoo.runtime.predict.Model.predict_image`, over the same
tile plan, ops and engines::

    input (read lazily: Zarr, OME-Zarr, TIFF by tile) --ModelView--> model axes
      --statistics pass (whole image, runtime/stats.py) --> bound preprocessing
      --tile plan (last_keeps_inner=False: one tile per output chunk) --> fixed batches
      --per batch: read tiles with halo -> fill non-finite -> preprocess -> forward
        -> postprocess -> crop -> write chunks -> marker (runtime/stream_job.py)
      --pyramid --> target.ome.zarr (or a TIFF when the result fits in memory)

:func:`prepare_stream` (runtime/stream_setup.py) creates the job or resumes the one a killed
run left; :func:`predict_stream` runs it here with reading, the forward and writing overlapped (a reader
thread prefetching the next batch, a writer thread; queues of 2). Memory is a few batches
and chunks: it does not grow with the image. The Dask path (runtime/distributed.py) runs the
same batches elsewhere.

What is exact: every output pixel is computed from the same tile input as an uninterrupted
run; a resumed or repeated run writes identical bytes for the same ``threads`` (torch CPU
results differ by about 1e-6 between thread counts, so the job records them). Compared with
the in-memory path the tiles' last positions differ (within the spec's tolerance).
Postprocessing that needs statistics of the whole raw output is refused (predict in memory).
"""

from __future__ import annotations

import dataclasses
import math
import os
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from microzoo.progress import ProgressCallback
from microzoo.runtime.stream_job import StreamJob
from microzoo.runtime.stream_setup import prepare_stream

__all__ = ["StreamResult", "predict_stream", "prepare_stream", "rate_text", "run_batches"]


@dataclasses.dataclass(frozen=True)
class StreamResult:
    """What :func:`predict_stream` did."""

    outputs: dict[str, Path]
    n_tiles: int
    n_batches: int
    resumed: int  # batches found done when it started
    seconds: float
    notices: tuple[str, ...] = ()


# --- running it here -----------------------------------------------------------------------


def predict_stream(
    model: Any,
    source: str | os.PathLike[str],
    target: str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]],
    *,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> StreamResult:
    """Stream ``model`` over ``source`` into ``target`` on this machine (options: those of
    :func:`prepare_stream`); reading, the forward and writing overlap. A job a killed run left
    is continued."""
    start = time.perf_counter()
    job = prepare_stream(model, source, target, progress=progress, **options)
    model = model.with_threads(job.threads)
    pending = job.pending_batches()
    resumed = job.n_batches - len(pending)
    run_batches(job, model, pending, progress=progress)
    notices = job.notices()
    outputs = job.finish(progress=progress)
    return StreamResult(
        outputs=outputs,
        n_tiles=job.plan.n_tiles,
        n_batches=job.n_batches,
        resumed=resumed,
        seconds=time.perf_counter() - start,
        notices=notices,
    )


def run_batches(job: StreamJob, model: Any, batches: Sequence[int], *, progress: ProgressCallback | None) -> None:
    """Run ``batches`` of ``job`` with a reader thread and a writer thread around the forward.

    Queues of 2 between them. An error ends the run without losing finished work: after a
    reading error the batches read before it still run; after an error of the forward (or an
    interruption) the batches computed before it are still written; after a writing error
    nothing more is computed. The first error is raised.
    """
    reads: queue.Queue[Any] = queue.Queue(maxsize=2)
    writes: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()  # end early: the writer failed, or the main thread did
    failures: list[BaseException] = []
    meter = _Meter(job, progress)

    def reader() -> None:
        try:
            for index in batches:
                if stop.is_set() or not _put(reads, job.read_batch(index), stop):
                    break
        except BaseException as error:  # noqa: BLE001 - raised by the main thread
            failures.append(error)
        finally:
            reads.put(None)  # always: the main thread takes it, or drains the queue until this thread ends

    def writer() -> None:
        try:
            while (item := writes.get()) is not None:
                job.write_batch(*item)
                meter.done(item[0])
        except BaseException as error:  # noqa: BLE001 - raised by the main thread
            failures.append(error)
            stop.set()
            while writes.get() is not None:  # drain, so the main thread never blocks
                pass

    threads = [threading.Thread(target=reader, daemon=True), threading.Thread(target=writer, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        meter.start()
        while (batch := reads.get()) is not None and not stop.is_set():
            writes.put((batch, job.forward(model, batch)))
    except BaseException:
        stop.set()
        raise
    finally:
        writes.put(None)
        stop.set()
        while threads[0].is_alive():  # let the reader end
            try:
                reads.get(timeout=0.05)
            except queue.Empty:
                pass
        for thread in threads:
            thread.join()
    if failures:
        raise failures[0]


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put ``item`` into ``q`` unless ``stop`` is set first; whether it was put."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


class _Meter:
    """Progress: tiles done, megapixels per second and the time left."""

    def __init__(self, job: StreamJob, progress: ProgressCallback | None) -> None:
        self.job, self.progress = job, progress
        self.total = job.plan.n_tiles
        self.pixels_per_tile = math.prod(
            n for a, n in zip(job.view.model_axes, job.view.shape, strict=True) if a != "channel"
        ) / max(self.total, 1)
        self.lock = threading.Lock()

    def start(self) -> None:
        self.tiles_done = self.total - sum(len(self.job.batch_tiles(i)) for i in self.job.pending_batches())
        self.t0, self.ran = time.perf_counter(), 0
        self._report()

    def done(self, batch: Any) -> None:
        with self.lock:
            self.tiles_done += len(batch.tiles)
            self.ran += len(batch.tiles)
            self._report()

    def _report(self) -> None:
        if self.progress is None:
            return
        seconds = time.perf_counter() - self.t0
        rate = self.ran * self.pixels_per_tile / seconds / 1e6 if seconds > 0 and self.ran else 0.0
        left = (self.total - self.tiles_done) * self.pixels_per_tile / 1e6 / rate if rate else None
        self.progress(self.tiles_done, self.total, rate_text(self.tiles_done, self.total, rate, left))


def rate_text(done: int, total: int, mp_per_s: float, seconds_left: float | None) -> str:
    """``"tile 120/1225, 3.1 MP/s, ETA 5 min"``."""
    eta = "ETA ?" if seconds_left is None else f"ETA {_duration(seconds_left)}"
    return f"tile {done}/{total}, {mp_per_s:.1f} MP/s, {eta}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
