"""Test helper: a Dask cluster on loopback for a test module, and a progress callback that kills a busy worker."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from distributed import Client

from microzoo.runtime import distributed


@pytest.fixture(scope="module", name="cluster")
def loopback_cluster() -> Iterator[Client]:
    """A client of a local cluster of 2 worker processes (127.0.0.1), shared by a module's tests."""
    with distributed.dask_client(workers=2) as client:
        yield client


class WorkerKiller:
    """A progress callback that, at the first completed task, SIGKILLs a worker process that is
    running a task; ``killed`` holds (worker address, its tasks then, its pid)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.pids: dict[str, int] = client.run(os.getpid)
        self.killed: list[tuple[str, tuple[str, ...], int]] = []

    def __call__(self, done: int, total: int, description: str) -> None:
        if done < 1 or self.killed:
            return
        busy = {worker: tasks for worker, tasks in self.client.processing().items() if tasks}
        if busy:
            worker, tasks = next(iter(busy.items()))
            os.kill(self.pids[worker], signal.SIGKILL)
            self.killed.append((worker, tuple(tasks), self.pids[worker]))

    def check_replaced(self) -> None:
        """A worker was killed while it ran a task, and its nanny has started a new process."""
        assert self.killed and self.killed[0][1]
        self.client.wait_for_workers(2, timeout=30)
        assert self.killed[0][2] not in self.client.run(os.getpid).values()
