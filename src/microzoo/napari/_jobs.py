"""Library work in a thread worker, with progress and a cancel that stops between units.

The viewer's event loop must keep answering while a model runs or trains, so every widget
starts its work here: ``work(progress)`` runs in a napari thread worker; ``progress`` reports
back to the Qt main thread (a queued signal) and raises :class:`~microzoo.errors.Cancelled` at
the next tile, batch or step once :meth:`Job.cancel` was called.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, Signal

from microzoo.errors import Cancelled, MicrozooError
from microzoo.progress import ProgressCallback, cancellable


class Job(QObject):
    """One piece of library work off the main thread.

    Signals (delivered in the main thread): ``progressed(done, total, description)``,
    ``succeeded(result)``, ``failed(message)`` (a user-facing message: the library's error, or
    the exception's type and text with the traceback printed to the log) and
    ``cancelled(message)``; ``ended()`` after any of the last three.
    """

    progressed = Signal(int, int, str)
    succeeded = Signal(object)
    failed = Signal(str)
    cancelled = Signal(str)
    ended = Signal()

    def __init__(self, work: Callable[[ProgressCallback], Any], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._work = work
        self._stop = threading.Event()
        self._worker: Any = None
        self._done = threading.Event()  # set in the worker when the work returned
        self._delivered = False  # set in the main thread once the last signal arrived
        self.ended.connect(self._mark_delivered)
        self.result: Any = None
        self.error: str | None = None

    def start(self) -> Job:
        """Start the work in a thread worker; returns itself."""
        from napari.qt.threading import create_worker

        report = cancellable(self._report, self._stop)
        self._worker = create_worker(self._run, report, _start_thread=False)
        self._worker.start()
        return self

    def cancel(self) -> None:
        """Ask the work to stop at its next tile, batch or step."""
        self._stop.set()

    @property
    def running(self) -> bool:
        """Started, and its last signal (``ended``) not yet handled in the main thread.

        So ``qtbot.waitUntil(lambda: not job.running)`` returns only after the widgets showed
        the result, not merely once the worker finished."""
        return self._worker is not None and not self._delivered

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the work returned in its thread (signals may still be queued); True within ``timeout``."""
        return self._done.wait(timeout)

    def _mark_delivered(self) -> None:
        self._delivered = True

    def _report(self, done: int, total: int, description: str) -> None:
        self.progressed.emit(int(done), int(total), str(description))

    def _run(self, report: ProgressCallback) -> None:
        try:
            self.result = self._work(report)
        except Cancelled as error:
            self.error = str(error)
            self.cancelled.emit(str(error))
        except MicrozooError as error:
            self.error = str(error)
            self.failed.emit(str(error))
        except Exception as error:  # noqa: BLE001 - shown to the user, traceback to the log
            traceback.print_exc()
            self.error = f"{type(error).__name__}: {error}"
            self.failed.emit(self.error)
        else:
            self.succeeded.emit(self.result)
        finally:
            self._done.set()
            self.ended.emit()
