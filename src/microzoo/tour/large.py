"""Step 6: an 8192x8192 image predicted by streaming, its peak memory beside the in-memory runner's.

The image is a mosaic of real W2S noisy test fields (512x512 each), written once as OME-Zarr
(chunks of 1024x1024) and once as TIFF. Each prediction is a whole ``microzoo predict``
process, as a user runs it: OME-Zarr in and out streams (:mod:`microzoo.runtime.stream`, tiles
read, predicted and written region by region), TIFF in and out runs in memory. Each process's
peak resident memory is its high-water mark as the kernel counts it (``VmHWM``), which covers
everything PyTorch allocated. The model is the small Noise2Void network of step 3.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from microzoo.tour.common import StepResult, TourContext, command, mib

#: the mosaic's side, the memory budget of one forward while streaming
SIDE, QUICK_SIDE = 8192, 2048
BUDGET = "256MB"
#: the outputs are also compared without this many pixels along the image's edges
EDGE = 64
PIECE, CHUNK = 512, 1024


def build_mosaic(fields: list[Path], side: int, folder: Path) -> tuple[Path, Path]:
    """``side`` x ``side`` uint8 mosaic of ``fields`` (512x512 each, repeated in file order), as
    ``mosaic.ome.zarr`` (written one band of chunks at a time) and ``mosaic.tif``; both paths."""
    import tifffile

    from microzoo.io.atomic import atomic_output
    from microzoo.io.ome_zarr import OmeZarrWriter
    from microzoo.io.read import read_array

    pieces = [np.asarray(read_array(p), dtype=np.uint8)[:PIECE, :PIECE] for p in fields]
    zarr_path, tiff_path = folder / "mosaic.ome.zarr", folder / "mosaic.tif"
    for path in (zarr_path, tiff_path):
        if path.exists():
            import shutil

            shutil.rmtree(path) if path.is_dir() else path.unlink()
    writer = OmeZarrWriter.create(zarr_path, shape=(side, side), dtype=np.uint8, axes="yx",
                                  chunks=(min(CHUNK, side),) * 2, name="mosaic")  # fmt: skip
    whole = np.empty((side, side), np.uint8)
    k = 0
    band_rows = min(CHUNK, side)
    for row in range(0, side, band_rows):
        for y in range(row, row + band_rows, PIECE):
            for x in range(0, side, PIECE):
                whole[y : y + PIECE, x : x + PIECE] = pieces[k % len(pieces)]
                k += 1
        writer.write((slice(row, row + band_rows), slice(0, side)), whole[row : row + band_rows])
    with atomic_output(tiff_path) as tmp:
        tifffile.imwrite(tmp, whole)
    return zarr_path, tiff_path


def run_measured(arguments: list[str], log: Path) -> tuple[float, int]:
    """Run ``python -m microzoo.cli ARGS``; its wall time (s) and peak resident memory (bytes).

    The peak is the child's ``VmHWM`` (the high-water mark of its own memory since it started
    Python), read from ``/proc`` every 50 ms until it exits. Not ``ru_maxrss``: on Linux a child's
    ``ru_maxrss`` starts at its parent's resident size when it was forked, and the tour's own
    process holds a gigabyte by then. Without ``/proc``, ``ru_maxrss`` it is (an upper bound)."""
    start = time.perf_counter()
    peak = 0
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "microzoo.cli", *arguments], stdout=out,
                                   stderr=subprocess.STDOUT)  # fmt: skip
        status_file = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            peak = max(peak, _high_water(status_file))
            time.sleep(0.05)
        if not peak:
            import resource

            peak = int(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) * 1024
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        from microzoo.tour.zoo_steps import TourError

        tail = log.read_text(errors="replace")[-1500:]
        raise TourError(f"`microzoo {' '.join(arguments)}` failed (exit {process.returncode}): {tail}")
    return seconds, peak


def _high_water(status: Path) -> int:
    """``VmHWM`` of a running process in bytes (0 when it cannot be read)."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def agreement(streamed: Path, in_memory: Path, *, rows: int = 1024, margin: int = 0) -> tuple[float, float]:
    """(max |difference|, values outside the format's tolerance per million) between the two outputs,
    compared band by band (rtol 1e-3, atol 1e-3), leaving out ``margin`` pixels along the image's edges."""
    from microzoo.io.read import read_image

    left = read_image(streamed, lazy=True).data
    right = read_image(in_memory, lazy=True).data
    if tuple(left.shape) != tuple(right.shape):
        from microzoo.tour.zoo_steps import TourError

        raise TourError(f"the streamed output is {tuple(left.shape)}, the in-memory one {tuple(right.shape)}")
    worst, bad, total = 0.0, 0, 0
    y_axis = len(left.shape) - 2
    for start in range(0, int(left.shape[y_axis]), rows):
        stop = min(start + rows, int(left.shape[y_axis]) - margin)
        if stop <= max(start, margin):
            continue
        box = (slice(None),) * y_axis + (slice(max(start, margin), stop), slice(margin, int(left.shape[-1]) - margin))
        a, b = np.asarray(left[box], np.float64), np.asarray(right[box], np.float64)
        worst = max(worst, float(np.max(np.abs(a - b))))
        bad += int((~np.isclose(a, b, rtol=1e-3, atol=1e-3)).sum())
        total += a.size
    return worst, bad / max(total, 1) * 1e6


def step_large(ctx: TourContext) -> StepResult:
    """Step 6: stream an 8192x8192 mosaic into OME-Zarr, and predict it in memory, each peak measured."""
    from microzoo.tour.zoo_steps import TourError

    start = time.perf_counter()
    if ctx.trained is None:
        raise TourError("step 6 predicts with the model of step 3, which did not run")
    side = QUICK_SIDE if ctx.quick else SIDE
    folder = ctx.folder("large")
    ctx.progress(0, 3, f"building a {side}x{side} mosaic of W2S fields")
    fields = sorted((ctx.data / "w2s" / "test" / "noisy").glob("*.tif"))
    zarr_path, tiff_path = build_mosaic(fields, side, folder)
    package = ctx.trained
    streamed_out, memory_out = folder / "streamed.ome.zarr", folder / "in_memory.tif"
    for path in (streamed_out, memory_out):
        if path.is_dir():
            import shutil

            shutil.rmtree(path)
        path.unlink(missing_ok=True) if path.is_file() else None
    same = ["--memory-budget", BUDGET, "--flip-check", "off"]  # the same tile budget; no flip check (see below)
    stream_args = ["predict", str(package), str(zarr_path), "-o", str(streamed_out), *same]
    memory_args = ["predict", str(package), str(tiff_path), "-o", str(memory_out), *same]
    ctx.progress(1, 3, f"streaming {side}x{side} into OME-Zarr (a child process)")
    stream_seconds, stream_peak = run_measured(stream_args, folder / "streamed.log")
    ctx.progress(2, 3, "the same image in memory (a child process)")
    memory_seconds, memory_peak = run_measured(memory_args, folder / "in_memory.log")
    ctx.progress(3, 3, "comparing the two outputs")
    worst, per_million = agreement(streamed_out, memory_out)
    inner_worst, inner_per_million = agreement(streamed_out, memory_out, margin=EDGE)
    megapixels = side * side / 1e6
    image_bytes = side * side * 4  # one float32 plane: the input as the model sees it, or the output
    return StepResult(
        number=6,
        title="An image larger than you would like in memory",
        what=(
            f"A {side}x{side} image ({megapixels:.0f} megapixels, a mosaic of W2S fields) is denoised by the "
            "Noise2Void model of step 3 twice, each a `microzoo predict` process: streamed from OME-Zarr into "
            "OME-Zarr region by region, and in memory from a TIFF; each process's peak memory is the kernel's count."
        ),
        why=(
            "Slide scanners and light-sheet microscopes make images larger than a computer's memory; streaming keeps "
            "memory flat whatever the image's size (its peak is set by the tile budget, not the image); the last "
            "figures say how closely its pixels match the in-memory runner's."
        ),
        commands=(
            command(*stream_args[:2], Path(stream_args[2]), "-o", streamed_out, *same),
            command(*memory_args[:2], Path(memory_args[2]), "-o", memory_out, *same),
        ),
        summary=(f"{side}x{side}: streamed peak {mib(stream_peak)} in {stream_seconds:.0f} s, in memory peak "
                 f"{mib(memory_peak)} in {memory_seconds:.0f} s; max |difference| {worst:.3g}"),  # fmt: skip
        figures=(
            ("image", f"{side}x{side} uint8 ({megapixels:.0f} MP); one float32 plane of it: {mib(image_bytes)}"),
            ("model", "the Noise2Void package of step 3 (U-Net depth 2, 8 features)"),
            ("streamed (OME-Zarr in and out)", f"peak {mib(stream_peak)}, {stream_seconds:.0f} s "
                                               f"({megapixels / stream_seconds:.2f} MP/s), tile budget {BUDGET}"),
            ("in memory (TIFF in and out)", f"peak {mib(memory_peak)}, {memory_seconds:.0f} s "
                                            f"({megapixels / memory_seconds:.2f} MP/s)"),
            ("streamed peak / in-memory peak", f"{stream_peak / memory_peak:.2f}"),
            ("the two outputs", f"max |difference| {worst:.3g}; {per_million:.1f} values per million outside "
                                "the format's tolerance (rtol 1e-3, atol 1e-3)"),
            (f"the two outputs, {EDGE} px from the edges",
             f"max |difference| {inner_worst:.3g}; {inner_per_million:.1f} per million outside the tolerance"),
        ),  # fmt: skip
        lines=(
            "Peak memory is each process's high-water resident set size (VmHWM, read every 50 ms), Python and "
            "PyTorch included: "
            "a few hundred MiB of it is the same in both runs.",
            "Both runs leave out the trust note's flip check (--flip-check off): in memory it would predict the "
            "whole image twice more (a streamed image is judged on an overview without it).",
        ),
        reports=(("streaming log", folder / "streamed.log"), ("in-memory log", folder / "in_memory.log")),
        seconds=time.perf_counter() - start,
        facts={"side": side, "stream_peak": stream_peak, "memory_peak": memory_peak, "max_difference": worst,
               "per_million": per_million, "inner_max_difference": inner_worst,
               "inner_per_million": inner_per_million, "stream_seconds": stream_seconds,
               "memory_seconds": memory_seconds},
    )  # fmt: skip
