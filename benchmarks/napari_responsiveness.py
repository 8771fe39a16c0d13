"""Does the viewer keep answering while a model runs? The Run widget's thread worker against the main thread (issue 12).

    .venv/bin/python benchmarks/napari_responsiveness.py [--size 2048] [--rounds 3]

A napari viewer (on ``$DISPLAY``, else an Xvfb display started here) shows a SIZE x SIZE image
tiled from a real DSB2018 fluorescence test image. A QTimer asks to tick every 10 ms and each
tick's time is recorded; the gaps between ticks are how long the event loop did not answer
(a redraw, a click, a key press wait as long). The zoo example model (unet2d_nuclei_broad)
predicts the layer with its trust note, in turn:

- A: through the Run widget (``RunWidget.run()``: the library call in a thread worker, a Job);
- B: the same library call (``predict_array_with_note``) in the main thread, as a plugin that
  does not use a worker would (the reference).

For each run it records the largest gap and the 99th percentile of the gaps; it prints the
median over rounds of each, and the ratio reference / worker (how many times longer the viewer
freezes without the worker). Run it with ``nice`` on a shared machine: the figures are gaps
of the event loop, which other load lengthens in both modes alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MICROZOO_SHARED_DATA", REPO.parent / "shared" / "data"))
MODEL = DATA / "bmz" / "unet2d_nuclei_broad"
IMAGE = DATA / "dsb2018" / "test" / "images" / "003cee89357d9fe13516167fd67b609a164651b21934585648c740d2c3d86dc1.png"
TICK_MS = 10


def ensure_display() -> None:
    """An Xvfb server for Qt when ``$DISPLAY`` is not set; it ends with this process (after Qt's last
    word to it: stopping it earlier makes Qt report a broken connection at exit)."""
    if os.environ.get("DISPLAY"):
        return
    if shutil.which("Xvfb") is None:
        sys.exit("no $DISPLAY and no Xvfb: install Xvfb (make system) or run on a desktop")
    read, write = os.pipe()
    subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1600x1200x24", "-nolisten", "tcp"],
                     pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     preexec_fn=_end_with_parent)  # fmt: skip
    os.close(write)
    with os.fdopen(read) as handle:
        os.environ["DISPLAY"] = f":{handle.readline().strip()}"
    os.environ["QT_QPA_PLATFORM"] = "xcb"


def _end_with_parent() -> None:
    """In the child before exec: Linux sends it SIGTERM when the parent ends (PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)


class Ticks:
    """A QTimer every ``TICK_MS`` ms recording when each tick arrived."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.times: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(lambda: self.times.append(time.perf_counter()))

    def start(self) -> None:
        self.times = [time.perf_counter()]
        self.timer.start()

    def stop(self, predicted: float | None = None) -> dict[str, float]:
        """Gap figures; with ``predicted`` (when the result arrived) also the largest gap before it."""
        self.timer.stop()
        self.times.append(time.perf_counter())
        times = np.asarray(self.times)
        gaps = np.diff(times) * 1000.0
        found = {"max_ms": float(gaps.max()), "p99_ms": float(np.percentile(gaps, 99)), "ticks": len(gaps)}
        if predicted is not None:  # the gaps that ended before the layers were added
            found["max_predicting_ms"] = float(gaps[times[1:] <= predicted].max())
        return found


def run_in_worker(widget: Any, ticks: Ticks) -> tuple[dict[str, float], float]:
    """Mode A: the Run widget's Job; the event loop turns until the job ended."""
    from qtpy.QtCore import QEventLoop

    loop = QEventLoop()
    ticks.start()
    start = time.perf_counter()
    job = widget.run()
    predicted = [time.perf_counter()]
    job.succeeded.connect(lambda _: predicted.append(time.perf_counter()))
    job.ended.connect(loop.quit)
    if job.running:
        loop.exec_()
    seconds = time.perf_counter() - start
    if job.error:
        sys.exit(f"the run failed: {job.error}")
    return ticks.stop(predicted[-1]), seconds


def run_in_main_thread(model: Any, image: np.ndarray, ticks: Ticks) -> tuple[dict[str, float], float]:
    """Mode B: the same library call in the main thread, started from the event loop."""
    from qtpy.QtCore import QEventLoop, QTimer

    from microzoo.trust.note import predict_array_with_note

    loop = QEventLoop()
    seconds = 0.0

    def work() -> None:
        nonlocal seconds
        start = time.perf_counter()
        predict_array_with_note(model, image, axes="yx", name="mosaic")
        seconds = time.perf_counter() - start
        QTimer.singleShot(TICK_MS * 3, loop.quit)  # a few ticks after, as the worker's end has

    ticks.start()
    QTimer.singleShot(TICK_MS * 3, work)
    loop.exec_()
    return ticks.stop(), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ensure_display()
    measure(args.size, args.rounds)


def measure(size: int, rounds: int) -> None:
    import napari

    from microzoo.io.read import read_image
    from microzoo.napari._state import ChosenModel, state_of
    from microzoo.napari.run_widget import RunWidget
    from microzoo.runtime.predict import Model

    piece = np.asarray(read_image(IMAGE).data)[..., 0]
    image = np.tile(piece, (size // piece.shape[0] + 1, size // piece.shape[1] + 1))[:size, :size]
    viewer = napari.Viewer(show=True)
    viewer.add_image(image, name="mosaic")
    model = Model.open(MODEL)
    model.predict(piece[:64, :64])  # weights loaded before any timing
    widget = RunWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Run")
    state_of(viewer).choose(ChosenModel(str(MODEL), model))
    ticks = Ticks()
    found: dict[str, list[dict[str, float]]] = {"worker": [], "main thread": []}
    print(
        f"{size}x{size} image, {model.package.name} ({model.weight_format}), timer every {TICK_MS} ms, {rounds} rounds"
    )
    for round_ in range(rounds):
        for mode in ("worker", "main thread"):
            gaps, seconds = (
                run_in_worker(widget, ticks) if mode == "worker" else run_in_main_thread(model, image, ticks)
            )
            gaps["seconds"] = seconds
            found[mode].append(gaps)
            before = f" (before the layers were added: {gaps['max_predicting_ms']:.1f} ms)" if mode == "worker" else ""
            print(f"round {round_ + 1} {mode:>11}: max gap {gaps['max_ms']:8.1f} ms{before}, p99 {gaps['p99_ms']:8.1f} "
                  f"ms, {gaps['ticks']} ticks, prediction {seconds:.1f} s", flush=True)  # fmt: skip
        for layer in [layer for layer in viewer.layers if layer.name != "mosaic"]:
            viewer.layers.remove(layer)
    print("\nmedian over rounds      max gap (ms)   p99 gap (ms)   prediction (s)")
    medians = {}
    for mode, runs in found.items():
        medians[mode] = {key: statistics.median(r[key] for r in runs) for key in ("max_ms", "p99_ms", "seconds")}
        m = medians[mode]
        print(f"{mode:<20} {m['max_ms']:14.1f} {m['p99_ms']:14.1f} {m['seconds']:16.1f}")
    worker, main_thread = medians["worker"], medians["main thread"]
    predicting = statistics.median(r["max_predicting_ms"] for r in found["worker"])
    print(f"worker, largest gap before the output layers were added (median): {predicting:.1f} ms")
    print(f"ratio main thread / worker: max gap {main_thread['max_ms'] / worker['max_ms']:.0f}x, "
          f"p99 gap {main_thread['p99_ms'] / worker['p99_ms']:.0f}x")  # fmt: skip
    viewer.close()


if __name__ == "__main__":
    main()
