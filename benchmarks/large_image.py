"""Images larger than memory: peak memory and speed of streaming prediction (issue 10).

    .venv/bin/python benchmarks/large_image.py [--sizes 8192 32768] [--rounds 3] [--workdir DIR]

Builds uint16 OME-Zarr mosaics of real DSB2018 fluorescence nuclei (256x256 pieces of the test
images, stretched to 16 bits; chunks 1024x1024) and predicts them with the zoo example model
(unet2d_nuclei_broad, TorchScript), each run a whole `microzoo predict` process as a user runs it,
with its peak resident memory (the process and its children, sampled every 20 ms). It prints:

1. streaming peak memory at every size and the ratio largest / smallest (targets: at most
   1 GiB at 32768x32768, ratio at most 1.1);
2. at the smallest size, streaming (OME-Zarr in, OME-Zarr out) against the in-memory runner
   (the same pixels as a TIFF, TIFF out), in turn A B A B ..., megapixels per second and the
   median of the per-round ratios streaming / in-memory (target at least 0.95);
3. bioimageio.core on the same TIFF (benchmarks/_core_predict.py, 512x512 blocks) beside them:
   its speed and peak memory;
4. the Dask path (`--workers 2`, a LocalCluster of 2 single-threaded workers) against the local
   streaming path, in turn: overhead = median of the per-round ratios dask / local seconds - 1
   (target at most 10%);
5. that the outputs agree (streaming, in-memory, Dask) within the spec tolerance.

The largest size runs once (about 17 minutes on 2 idle cores at 1.1 MP/s); its figure is memory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from predict_throughput import mismatch_per_million, run_process  # one way to time a process

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MICROZOO_SHARED_DATA", REPO.parent / "shared" / "data"))
MODEL = DATA / "bmz" / "unet2d_nuclei_broad"
BIN = Path(sys.executable).parent
BUDGET = "512MB"  # the tile budget of the streaming runs
WEIGHTS = "torchscript"


def pieces() -> list[np.ndarray]:
    """256x256 uint16 pieces of the DSB2018 fluorescence test images (grey, dark background)."""
    import imageio.v3 as iio

    found = []
    for path in sorted((DATA / "dsb2018" / "test" / "images").glob("*.png")):
        rgb = iio.imread(path)[..., :3].astype(np.float32)
        if rgb.std(axis=-1).mean() < 1 and rgb.mean() < 60 and min(rgb.shape[:2]) >= 256:
            grey = rgb[:256, :256, 0]
            found.append((grey * 257.0).astype(np.uint16))  # 8 bits stretched to 16
    return found


def build_mosaic(path: Path, size: int) -> None:
    """A size x size uint16 OME-Zarr tiled from ``pieces()``, written one band of rows at a time."""
    from microzoo.io.ome_zarr import OmeZarrWriter

    parts = pieces()
    writer = OmeZarrWriter.create(
        path, shape=(size, size), dtype=np.uint16, axes="yx", chunks=(1024, 1024),
        pixel_size={"y": 0.5, "x": 0.5}, unit="micrometer", name=path.stem,
    )  # fmt: skip
    k = 0
    for row in range(0, size, 1024):
        band = np.empty((1024, size), np.uint16)
        for y in range(0, 1024, 256):
            for x in range(0, size, 256):
                band[y : y + 256, x : x + 256] = parts[k % len(parts)]
                k += 1
        writer.write((slice(row, row + 1024), slice(0, size)), band)


def microzoo(*args: str) -> list[str]:
    return [str(BIN / "python"), "-m", "microzoo.cli", "predict", str(MODEL), *args, "--weights", WEIGHTS]


def stream(source: Path, out: Path, *extra: str) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    seconds, peak, _ = run_process(microzoo(str(source), "-o", str(out), "--memory-budget", BUDGET, *extra))
    return seconds, peak


def in_memory(source: Path, out: Path) -> tuple[float, float]:
    out.unlink(missing_ok=True)
    seconds, peak, _ = run_process(microzoo(str(source), "-o", str(out)))
    return seconds, peak


def core(source: Path, out: Path) -> tuple[float, float]:
    out.unlink(missing_ok=True)
    command = [str(BIN / "python"), str(REPO / "benchmarks" / "_core_predict.py"), str(MODEL / "bioimageio.yaml"),
               str(source), str(out), WEIGHTS, "512"]  # fmt: skip
    seconds, peak, _ = run_process(command)
    return seconds, peak


def level0(path: Path) -> np.ndarray:
    from microzoo.io.read import read_image

    return np.asarray(read_image(path).data[...])


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8192, 32768])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="keep inputs here between runs")
    parser.add_argument("--skip-core", action="store_true")
    parser.add_argument("--skip-dask", action="store_true")
    args = parser.parse_args()
    import tifffile

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="large-image-"))
    workdir.mkdir(parents=True, exist_ok=True)
    small, sizes = min(args.sizes), sorted(args.sizes)
    inputs = {}
    for size in sizes:
        inputs[size] = workdir / f"mosaic_{size}.ome.zarr"
        if not inputs[size].exists():
            print(f"building {inputs[size]}", flush=True)
            build_mosaic(inputs[size], size)
    tiff = workdir / f"mosaic_{small}.tif"
    if not tiff.exists():
        tifffile.imwrite(tiff, level0(inputs[small]))
    megapixels = {size: size * size / 1e6 for size in sizes}

    others = ("" if args.skip_core else " vs bioimageio.core") + ("" if args.skip_dask else " vs Dask (2 workers)")
    print(f"== {small}x{small}: streaming vs in-memory{others}, {args.rounds} rounds in turn", flush=True)
    rows: dict[str, list[tuple[float, float]]] = {"stream": [], "memory": [], "core": [], "dask": []}
    for round_ in range(args.rounds):
        line = [f"round {round_ + 1}"]
        for name in ("stream", "memory", "core", "dask"):
            if (name == "core" and args.skip_core) or (name == "dask" and args.skip_dask):
                continue
            before = load()
            if name == "stream":
                result = stream(inputs[small], workdir / "stream.ome.zarr")
            elif name == "memory":
                result = in_memory(tiff, workdir / "memory.tif")
            elif name == "core":
                result = core(tiff, workdir / "core.tif")
            else:
                result = stream(inputs[small], workdir / "dask.ome.zarr", "--workers", "2")
            rows[name].append(result)
            line.append(f"{name} {result[0]:.1f} s {result[1]:.0f} MiB (load {before})")
        print("  " + "; ".join(line), flush=True)

    reference = level0(workdir / "stream.ome.zarr")
    print(f"  outputs: in-memory vs streaming {mismatch_per_million(level0(workdir / 'memory.tif'), reference):.1f}"
          " ppm beyond rtol/atol 1e-3", flush=True)  # fmt: skip
    if not args.skip_dask:
        dask = level0(workdir / "dask.ome.zarr")
        same = "identical" if np.array_equal(dask, reference) else "not identical (1 thread per forward, not 2)"
        print(f"  Dask vs local streaming: {same}, {mismatch_per_million(dask, reference):.1f} ppm", flush=True)

    def summary(name: str) -> str:
        seconds = [r[0] for r in rows[name]]
        peaks = [r[1] for r in rows[name]]
        median = statistics.median(seconds)
        return f"| {name} | {median:.1f} s | {megapixels[small] / median:.2f} | {statistics.median(peaks):.0f} MiB |"

    print("\n| path | median seconds | MP/s | peak memory |\n|---|---|---|---|")
    for name in rows:
        if rows[name]:
            print(summary(name))
    ratio = statistics.median(m[0] / s[0] for s, m in zip(rows["stream"], rows["memory"], strict=True))
    print(f"\nstreaming / in-memory speed: median of per-round ratios {ratio:.3f} (target >= 0.95)")
    if rows["core"]:
        ratio_core = statistics.median(c[0] / s[0] for s, c in zip(rows["stream"], rows["core"], strict=True))
        print(f"streaming / bioimageio.core speed: {ratio_core:.3f}")
    if rows["dask"]:
        overhead = statistics.median(d[0] / s[0] for s, d in zip(rows["stream"], rows["dask"], strict=True)) - 1
        print(f"Dask (2 workers) overhead against local streaming: {overhead * 100:+.1f}% (target <= 10%)")

    peaks = {small: statistics.median(r[1] for r in rows["stream"])}
    for size in sizes:
        if size == small:
            continue
        before = load()
        seconds, peak = stream(inputs[size], workdir / f"stream_{size}.ome.zarr")
        peaks[size] = peak
        print(f"{size}x{size}: {seconds:.0f} s, {megapixels[size] / seconds:.2f} MP/s, peak {peak:.0f} MiB "
              f"(load before {before})", flush=True)  # fmt: skip
        shutil.rmtree(workdir / f"stream_{size}.ome.zarr", ignore_errors=True)
    largest = sizes[-1]
    listed = ", ".join(f"{s}: {p:.0f} MiB" for s, p in peaks.items())
    ratio_text = f"ratio {largest}/{small}: {peaks[largest] / peaks[small]:.3f}"
    print(f"\npeak memory: {listed}; {ratio_text} (targets: <= 1024 MiB at 32768, ratio <= 1.1)")


if __name__ == "__main__":
    main()
