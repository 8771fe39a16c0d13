"""The napari plugin's test set-up: a virtual display (Xvfb) for the viewer, and the warnings napari raises.

napari draws its canvas with OpenGL, which Qt's ``offscreen`` platform does not provide here, so
the viewer runs on an Xvfb display that this plugin starts for the session (the set-up installs
Xvfb and the xcb libraries Qt needs: ``make system``). Without Xvfb or a Qt binding the napari tests
skip, with the reason in the summary. The display is started before the QApplication because
pytest-qt's ``qapp`` asks ``qapp_args`` first, which depends on it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: warnings napari and its Qt stack raise that are not ours (the suite turns warnings into errors)
NAPARI_WARNINGS = [
    pytest.mark.filterwarnings("ignore:System theme detection requires a Qt6 backend:UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:napari.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:vispy.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:npe2.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:app_model.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:magicgui.*"),
    pytest.mark.filterwarnings("ignore::FutureWarning:napari.*"),
]


def _why_no_viewer() -> str | None:
    try:
        import napari  # noqa: F401
        import qtpy  # noqa: F401  (raises when no Qt binding is installed)
    except Exception as error:  # noqa: BLE001 - any failure to import is the reason to skip
        return f"napari or a Qt binding is not installed ({error}): pip install -e '.[napari-tests]'"
    if not os.environ.get("DISPLAY") and shutil.which("Xvfb") is None:
        return "Xvfb is not installed (napari's canvas needs a display): run 'make system' as root"
    return None


@pytest.fixture(scope="session")
def napari_display() -> Iterator[str]:
    """A display for Qt: ``$DISPLAY`` when set, else an Xvfb server started for the session."""
    reason = _why_no_viewer()
    if reason:
        pytest.skip(reason)
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    read, write = os.pipe()
    os.set_inheritable(write, True)
    server = _spawn_ending_with_us(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "1600x1200x24", "-nolisten", "tcp"]
    )
    os.close(write)
    with os.fdopen(read) as handle:
        number = handle.readline().strip()
    if not number:
        os.kill(server, 9)
        pytest.skip("Xvfb did not start: check that it runs ('Xvfb :99' in a terminal)")
    os.environ["DISPLAY"] = f":{number}"
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    # No teardown: the QApplication outlives every fixture, and Qt ends the process (exit code 1,
    # before pytest's summary) when its display goes away. Xvfb ends with this process instead.
    yield os.environ["DISPLAY"]


def _spawn_ending_with_us(command: list[str]) -> int:
    """Start ``command`` (inheriting open descriptors) so that Linux sends it SIGTERM when this process ends.

    Forked by hand rather than with ``subprocess``: a ``Popen`` of a process still running at exit
    warns, and this one is meant to run until then.
    """
    import ctypes
    import signal

    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 1)
            os.dup2(null, 2)
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    return pid


@pytest.fixture(scope="session")
def qapp_args(napari_display: str) -> list[str]:
    """pytest-qt's QApplication arguments; asking for the display first starts Xvfb before Qt."""
    return ["microzoo-tests"]


@pytest.fixture(autouse=True)
def napari_settings_in_tmp(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """In the napari test modules (``test_napari*``): the plugin's settings file, its cache folder and
    microzoo's download cache (zoo packages, extracted zips) in a fresh temporary folder per test, so
    that no test reads or writes the user's home folder."""
    if not request.module.__name__.startswith("test_napari"):
        yield
        return
    folder = tmp_path_factory.mktemp("napari-settings")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MICROZOO_NAPARI_SETTINGS", str(folder / "napari.json"))
        patch.setenv("MICROZOO_NAPARI_CACHE", str(folder / "cache"))
        patch.setenv("MICROZOO_CACHE", str(folder / "downloads"))
        yield


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where widget screenshots go: ``$MICROZOO_SCREENSHOTS`` when set (to look at them), else a temporary folder."""
    folder = Path(os.environ.get("MICROZOO_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_screenshot(widget: Any, path: Path) -> Path:
    """Save a Qt widget (a dock widget, a dialog) as PNG at ``path`` and check it is a real picture."""
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    pixmap = widget.grab()
    size = f"{pixmap.width()}x{pixmap.height()}"
    assert pixmap.width() > 50 and pixmap.height() > 50, f"{path.name}: the widget is {size}"
    assert pixmap.save(str(path)), f"could not save {path}"
    return path
