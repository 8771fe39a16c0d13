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

import contextlib
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

__all__ = [
    "StreamResult",
    "predict_stream",
    "prepare_stream",
    "rate_text",
    "resumed_notice",
    "run_batches",
    "run_stream",
]


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
    source: str | os.PathLike[str] | Any,
    target: str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]],
    *,
    progress: ProgressCallback | None = None,
    forwards: int | None = None,
    **options: Any,
) -> StreamResult:
    """Stream ``model`` over ``source`` (an image file, or an array with ``axes``) into
    ``target`` on this machine (options: those of :func:`prepare_stream`); reading, the
    forwards and writing overlap. A job a killed or cancelled run left is continued.

    ``forwards``: forwards run at once, each with the job's threads (default: as many as the
    cores hold, at most :data:`~microzoo.runtime.resources.MAX_FORWARDS`; see
    :func:`~microzoo.runtime.resources.forward_split`). It does not change a byte of the result
    (batches are fixed by the plan), so a resumed job may use another number.
    """
    start = time.perf_counter()
    job = prepare_stream(model, source, target, progress=progress, **options)
    return run_stream(job, model, progress=progress, forwards=forwards, start=start)


def run_stream(
    job: StreamJob,
    model: Any,
    *,
    progress: ProgressCallback | None = None,
    forwards: int | None = None,
    start: float | None = None,
) -> StreamResult:
    """Run the batches of a prepared ``job`` still to do, then finish it (the second half of
    :func:`predict_stream`; ``start``: when the work began, for :attr:`StreamResult.seconds`)."""
    from microzoo.runtime.resources import forward_split

    start = time.perf_counter() if start is None else start
    model = model.with_threads(job.threads)
    if forwards is None:
        forwards = forward_split(job.threads, device=model.device)[1]
    pending = job.pending_batches()
    resumed = job.n_batches - len(pending)
    run_batches(job, model, pending, progress=progress, forwards=forwards)
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


def resumed_notice(resumed: int, n_batches: int) -> tuple[str, ...]:
    """The notice that a run continued an unfinished job, ``resumed`` of its ``n_batches``
    batches done (none when it started afresh)."""
    if not resumed:
        return ()
    return (f"continued an unfinished job: {resumed} of {n_batches} batches of tiles were done already",)


def run_batches(
    job: StreamJob, model: Any, batches: Sequence[int], *, progress: ProgressCallback | None, forwards: int = 1
) -> None:
    """Run ``batches`` of ``job``: a reader thread, ``forwards`` forward threads, a writer thread.

    Queues of 2 between them. An error ends the run without losing finished work: after a
    reading error the batches read before it still run; after an error of a forward (or an
    interruption) the batches computed before it are still written; after a writing error
    nothing more is computed. The first error is raised. Which forward thread runs a batch
    changes nothing in its bytes (each forward has the job's threads).
    """
    if forwards < 1:
        raise ValueError(f"forwards must be at least 1, not {forwards}")
    reads: queue.Queue[Any] = queue.Queue(maxsize=2)
    writes: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()  # end early: a thread failed, or the main thread was interrupted
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
            reads.put(None)  # always: the forwards pass it on, or drain the queue until this thread ends

    def forward() -> None:
        try:
            while not stop.is_set():
                try:
                    batch = reads.get(timeout=0.05)
                except queue.Empty:
                    continue
                if batch is None:  # the reader's end mark: pass it on to the next forward thread
                    with contextlib.suppress(queue.Full):
                        reads.put_nowait(None)
                    break
                writes.put((batch, job.forward(model, batch)))
        except BaseException as error:  # noqa: BLE001 - raised by the main thread
            failures.append(error)
            stop.set()

    def writer() -> None:
        try:
            while (item := writes.get()) is not None:
                job.write_batch(*item)
                meter.done(item[0])
        except BaseException as error:  # noqa: BLE001 - raised by the main thread
            failures.append(error)
            stop.set()
            while writes.get() is not None:  # drain, so no forward ever blocks
                pass

    _ = model.engine  # loaded before the forwards start: a load (TorchScript freeze) beside a forward changes its bits
    meter.start()
    read_thread = threading.Thread(target=reader, daemon=True)
    forward_threads = [threading.Thread(target=forward, daemon=True) for _ in range(forwards)]
    write_thread = threading.Thread(target=writer, daemon=True)
    for thread in (read_thread, *forward_threads, write_thread):
        thread.start()
    try:
        for thread in forward_threads:
            while thread.is_alive():  # join with a timeout, so Ctrl-C reaches this thread
                thread.join(timeout=0.1)
    except BaseException:
        stop.set()
        raise
    finally:
        stop.set()
        while read_thread.is_alive() or any(t.is_alive() for t in forward_threads):
            try:  # let the reader end (its last put may wait for room) and the forwards see stop
                reads.get(timeout=0.05)
            except queue.Empty:
                pass
        writes.put(None)
        write_thread.join()
        read_thread.join()
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
