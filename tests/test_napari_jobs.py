"""The plugin's Job: library work in a thread worker, progress in the main thread, cancel between units."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from _napari import NAPARI_WARNINGS

from microzoo.errors import DataError

pytestmark = NAPARI_WARNINGS


def _collect(job: Any) -> dict[str, list[Any]]:
    seen: dict[str, list[Any]] = {"progressed": [], "succeeded": [], "failed": [], "cancelled": [], "ended": []}
    job.progressed.connect(lambda *a: seen["progressed"].append((a, threading.current_thread().name)))
    job.succeeded.connect(lambda r: seen["succeeded"].append(r))
    job.failed.connect(lambda m: seen["failed"].append(m))
    job.cancelled.connect(lambda m: seen["cancelled"].append(m))
    job.ended.connect(lambda: seen["ended"].append(True))
    return seen


def test_a_job_reports_progress_in_the_main_thread_and_returns_its_result(qtbot: Any) -> None:
    from microzoo.napari._jobs import Job

    worker_threads = []

    def work(progress: Any) -> int:
        worker_threads.append(threading.current_thread())
        for step in range(3):
            progress(step + 1, 3, f"tile {step + 1}")
        return 42

    job = Job(work)
    seen = _collect(job)
    job.start()
    qtbot.waitUntil(lambda: bool(seen["ended"]), timeout=10_000)
    assert seen["succeeded"] == [42] and job.result == 42 and not job.running
    assert [a for a, _ in seen["progressed"]] == [(1, 3, "tile 1"), (2, 3, "tile 2"), (3, 3, "tile 3")]
    assert {name for _, name in seen["progressed"]} == {threading.main_thread().name}
    assert worker_threads[0] is not threading.main_thread()


def test_cancel_stops_the_work_at_its_next_progress_call(qtbot: Any) -> None:
    from microzoo.napari._jobs import Job

    started, steps_done = threading.Event(), []

    def work(progress: Any) -> None:
        for step in range(1000):
            progress(step, 1000, "step")
            steps_done.append(step)
            started.set()
            threading.Event().wait(0.005)

    job = Job(work)
    seen = _collect(job)
    job.start()
    assert started.wait(10)
    job.cancel()
    qtbot.waitUntil(lambda: bool(seen["ended"]), timeout=10_000)
    assert seen["cancelled"] and not seen["succeeded"] and not seen["failed"]
    assert len(steps_done) < 1000


@pytest.mark.parametrize(
    ("error", "shown"),
    [(DataError("the folder holds no image: choose another"), "the folder holds no image: choose another"),
     (ValueError("bad value"), "ValueError: bad value")],
)  # fmt: skip
def test_a_failure_is_a_message_in_words(qtbot: Any, error: Exception, shown: str, capsys: Any) -> None:
    from microzoo.napari._jobs import Job

    def work(progress: Any) -> None:
        raise error

    job = Job(work)
    seen = _collect(job)
    job.start()
    qtbot.waitUntil(lambda: bool(seen["ended"]), timeout=10_000)
    assert seen["failed"] == [shown] and job.error == shown and not seen["succeeded"]
