"""Progress reporting without a terminal.

Library code below the front ends never prints. Long work takes an optional
``progress`` callback and calls it as ``progress(done, total, description)``;
the CLI turns that into a rich progress bar, napari into its own progress widget.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from microzoo.errors import Cancelled

__all__ = ["Cancelled", "ProgressCallback", "cancellable", "no_progress"]

ProgressCallback = Callable[[int, int, str], None]


def cancellable(progress: ProgressCallback | None, stop: threading.Event) -> ProgressCallback:
    """``progress`` that raises :class:`Cancelled` once ``stop`` is set.

    Long work calls its progress callback between units (tiles, batches, steps), so a front
    end cancels it there by setting ``stop``: nothing is left half-written, because outputs
    are written atomically (a streamed job stays resumable).
    """

    def report(done: int, total: int, description: str) -> None:
        if stop.is_set():
            raise Cancelled(f"cancelled at {done}/{total}: {description}")
        if progress is not None:
            progress(done, total, description)

    return report


def no_progress(done: int, total: int, description: str) -> None:
    """The default callback: report nothing."""
