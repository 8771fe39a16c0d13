"""Prediction throughput of microzoo against bioimageio.core and the bare engine, on real data.

    .venv/bin/python benchmarks/predict_throughput.py [--sizes 2048 4096] [--formats onnx torchscript]

For each image size (a mosaic of DSB2018 fluorescence test images) and weight format it prints
megapixels per second of:
- the bare engine limit: pixels / (tiles the model's sizes force x median time of one bare forward
  of a 512x512 tile with onnxruntime / torch.jit directly);
- microzoo and bioimageio.core, prediction alone (in this process, model already loaded);
- microzoo and bioimageio.core, the whole process as a user runs it (start-up, loading, reading,
  predicting, writing: `microzoo predict` against benchmarks/_core_predict.py), with peak memory;
and the ratios ours / bare limit (target >= 0.95) and ours / core (target >= 1.1 for the whole
process at 4096, never below 1.0 for prediction alone). Outputs of both must agree within the
spec tolerance. Last, on a synthetic model with parameterized sizes, throughput against tile size.

    .venv/bin/python benchmarks/predict_throughput.py --pairs 5 [--before-src OTHER_TREE/src]

``--pairs N``: only the whole processes, at the first size and format: `microzoo predict` and
bioimageio.core run in turn N times (A B A B ...; with ``--before-src``, a second microzoo from
another source tree, e.g. the main branch, runs in each round too: before, after, core), each
run's seconds with the load average before it, and the median of the per-round ratios
core / microzoo (the issue's target at 4096, onnx: >= 1.15).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MICROZOO_SHARED_DATA", REPO.parent / "shared" / "data"))
MODEL = DATA / "bmz" / "unet2d_nuclei_broad"
BIN = Path(sys.executable).parent


def mosaic(size: int) -> np.ndarray:
    """A size x size uint8 image tiled from DSB2018 fluorescence test images (real nuclei)."""
    import imageio.v3 as iio

    pieces = []
    for path in sorted((DATA / "dsb2018" / "test" / "images").glob("*.png")):
        rgb = iio.imread(path)[..., :3].astype(np.float32)
        if rgb.std(axis=-1).mean() < 1 and rgb.mean() < 60:  # grayscale, dark background
            pieces.append(rgb[..., 0].astype(np.uint8)[:256, :256])
    pieces = [p for p in pieces if p.shape == (256, 256)]
    rows = []
    k = 0
    for _ in range(size // 256):
        row = []
        for _ in range(size // 256):
            row.append(pieces[k % len(pieces)])
            k += 1
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)


class Bare:
    """The framework alone: one forward of a 1x1x512x512 tile, median of ``repeats`` (25: a short
    burst of forwards can catch a quiet moment that the long prediction does not)."""

    def __init__(self, weight_format: str) -> None:
        self.x = np.random.default_rng(0).standard_normal((1, 1, 512, 512)).astype(np.float32)
        if weight_format == "onnx":
            import onnxruntime as ort

            self.session = ort.InferenceSession(str(MODEL / "weights.onnx"), providers=["CPUExecutionProvider"])
            name = self.session.get_inputs()[0].name
            self.run = lambda: self.session.run(None, {name: self.x})
        else:
            import torch

            module = torch.jit.load(str(MODEL / "weights.pt")).eval()
            tensor = torch.from_numpy(self.x)

            def run() -> None:
                with torch.inference_mode():
                    module(tensor)

            self.run = run
        self.run()

    def seconds(self, repeats: int = 25) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.run()
            times.append(time.perf_counter() - start)
        return statistics.median(times)


class Ours:
    def __init__(self, weight_format: str) -> None:
        import microzoo

        self.model = microzoo.load_model(MODEL, weights=weight_format)
        self.model.predict(np.zeros((512, 512), np.uint8) + 10, axes="yx")  # warm up

    def seconds(self, image: np.ndarray) -> tuple[float, int, np.ndarray]:
        start = time.perf_counter()
        prediction = self.model.predict_image(image, axes="yx")
        seconds = time.perf_counter() - start
        return seconds, prediction.n_tiles, next(iter(prediction.outputs.values()))


class Core:
    def __init__(self, weight_format: str) -> None:
        from bioimageio.core import create_prediction_pipeline
        from bioimageio.spec import load_model_description

        descr = load_model_description(MODEL / "bioimageio.yaml")
        self.pipeline = create_prediction_pipeline(descr, weight_format=weight_format)
        self.block = {"raw": {"batch": 1, "channel": 1, "y": 512, "x": 512}}
        self.seconds(np.zeros((512, 512), np.uint8) + 10)  # warm up

    def seconds(self, image: np.ndarray) -> tuple[float, np.ndarray]:
        from bioimageio.core import predict

        start = time.perf_counter()
        sample = predict(
            model=self.pipeline, inputs={"raw": image[None, None].astype(np.float32)}, input_block_shape=self.block
        )
        seconds = time.perf_counter() - start
        return seconds, np.squeeze(next(iter(sample.members.values())).data.values)


def run_process(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak resident memory (MiB) and stdout of a command run as its own process.

    Peak memory is the process's and its children's (a Dask cluster's workers), summed, sampled
    every 20 ms with psutil (``ru_maxrss`` of a child also counts the memory of this process at
    the fork, so it cannot tell two children apart).
    """
    import psutil

    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watched, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            tree = [watched, *watched.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        rss = 0
        for member in tree:
            try:
                rss += member.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        peak = max(peak, rss)
        time.sleep(0.02)
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    return seconds, peak / 2**20, stdout


def mismatch_per_million(a: np.ndarray, b: np.ndarray, rtol: float = 1e-3, atol: float = 1e-3) -> float:
    a, b = np.squeeze(a).astype(np.float64), np.squeeze(b).astype(np.float64)
    return float((np.abs(a - b) > atol + rtol * np.abs(b)).sum() / b.size * 1e6)


def parameterized_gain(workdir: Path) -> list[tuple[int, int, float]]:
    """(tile, tiles, MPix/s) on a synthetic parameterized-size model, 2048x2048 image."""
    sys.path.insert(0, str(REPO / "tests"))
    from _packages import build_parameterized  # the synthetic packages of the test suite

    import microzoo

    rdf = build_parameterized(workdir / "parameterized")
    model = microzoo.load_model(rdf, weights="onnx")
    image = mosaic(2048).astype(np.float32)
    rows = []
    for tile in (64, 128, 256, 512, 1024):
        model.predict(image[:256, :256], axes="yx", tile=tile)
        start = time.perf_counter()
        prediction = model.predict_image(image, axes="yx", tile=tile)
        seconds = time.perf_counter() - start
        rows.append((tile, prediction.n_tiles, image.size / seconds / 1e6))
    return rows


def process_pairs(args: argparse.Namespace, workdir: Path) -> None:
    """Whole processes only, in turn: (before,) microzoo, core; per-round ratios and their median."""
    size, weight_format = args.sizes[0], args.formats[0]
    path = workdir / f"mosaic_{size}.tif"
    tifffile.imwrite(path, mosaic(size))
    ours_src = Path(__import__("microzoo").__file__).resolve().parents[1]
    tools = {"microzoo": ours_src, "core": None}
    if args.before_src:
        tools = {"before": args.before_src.resolve(), **tools}
    print(
        f"== whole process, {weight_format}, {size}x{size}, {args.pairs} rounds of {', '.join(tools)} in turn; "
        f"microzoo from {ours_src}" + (f", before from {args.before_src}" if args.before_src else ""),
        flush=True,
    )
    seconds: dict[str, list[float]] = {name: [] for name in tools}
    for round_ in range(args.pairs):
        line = []
        for name, src in tools.items():
            target = workdir / f"{name}_{size}.tif"
            target.unlink(missing_ok=True)
            load = os.getloadavg()[0]
            if src is None:
                command = [
                    sys.executable,
                    str(REPO / "benchmarks" / "_core_predict.py"),
                    str(MODEL),
                    str(path),
                    str(target),
                    weight_format,
                ]
                run = run_process(command)
            else:
                command = [
                    sys.executable,
                    "-m",
                    "microzoo.cli",
                    "predict",
                    str(MODEL),
                    str(path),
                    "-o",
                    str(target),
                    "--weights",
                    weight_format,
                ]
                run = run_process(command, env={**os.environ, "PYTHONPATH": str(src)})
            seconds[name].append(run[0])
            line.append(f"{name} {run[0]:6.1f} s (load {load:4.1f}, peak {run[1]:.0f} MiB)")
        print(f"   round {round_ + 1}: " + "; ".join(line), flush=True)
    for name in tools:
        if name == "core":
            continue
        ratios = [c / o for c, o in zip(seconds["core"], seconds[name], strict=True)]
        print(
            f"   core / {name}: per round {[round(r, 3) for r in ratios]}, median {statistics.median(ratios):.3f}; "
            f"median seconds {name} {statistics.median(seconds[name]):.1f}, "
            f"core {statistics.median(seconds['core']):.1f}"
        )
    if args.before_src:
        ratios = [b / a for b, a in zip(seconds["before"], seconds["microzoo"], strict=True)]
        print(
            f"   before / microzoo: per round {[round(r, 3) for r in ratios]}, median {statistics.median(ratios):.3f}"
        )
    agree = mismatch_per_million(
        tifffile.imread(workdir / f"microzoo_{size}.tif"), tifffile.imread(workdir / f"core_{size}.tif")
    )
    print(f"   outputs: {agree:.1f} mismatched per million (rtol 1e-3, atol 1e-3; allowed 100)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--formats", nargs="+", default=["onnx", "torchscript"])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the fastest counts")
    parser.add_argument("--skip-parameterized", action="store_true")
    parser.add_argument("--pairs", type=int, default=0, help="only the whole processes, N rounds in turn (see above)")
    parser.add_argument("--before-src", type=Path, default=None, help="with --pairs: a second microzoo source tree")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="microzoo-bench-"))
    if args.pairs:
        process_pairs(args, workdir)
        return
    print(f"model: {MODEL.name}; machine: {os.cpu_count()} cores; work folder {workdir}")
    for weight_format in args.formats:
        bare, ours, core = Bare(weight_format), Ours(weight_format), Core(weight_format)
        for size in args.sizes:
            image = mosaic(size)
            path = workdir / f"mosaic_{size}.tif"
            tifffile.imwrite(path, image)
            pixels = image.size
            # interleaved repeats; the fastest of each is the least disturbed by other work
            forwards, ours_times, core_times, ours_runs, core_runs = [], [], [], [], []
            for _ in range(args.repeats):
                forwards.append(bare.seconds())
                ours_s, n_tiles, ours_out = ours.seconds(image)
                ours_times.append(ours_s)
                core_s, core_out = core.seconds(image)
                core_times.append(core_s)
                ours_runs.append(
                    run_process(
                        [
                            str(BIN / "microzoo"),
                            "predict",
                            str(MODEL),
                            str(path),
                            "-o",
                            str(workdir / f"ours_{size}_{weight_format}.tif"),
                            "--weights",
                            weight_format,
                        ]
                    )
                )
                core_runs.append(
                    run_process(
                        [
                            sys.executable,
                            str(REPO / "benchmarks" / "_core_predict.py"),
                            str(MODEL),
                            str(path),
                            str(workdir / f"core_{size}_{weight_format}.tif"),
                            weight_format,
                        ]
                    )
                )
            forward, ours_s, core_s = min(forwards), min(ours_times), min(core_times)
            ours_proc = min(ours_runs, key=lambda r: r[0])
            core_proc = min(core_runs, key=lambda r: r[0])
            limit = pixels / (n_tiles * forward) / 1e6
            agree = mismatch_per_million(ours_out, core_out)
            agree_files = mismatch_per_million(
                tifffile.imread(workdir / f"ours_{size}_{weight_format}.tif"),
                tifffile.imread(workdir / f"core_{size}_{weight_format}.tif"),
            )
            print(
                f"\n== {weight_format}, {size}x{size} ({pixels / 1e6:.1f} MPix), {n_tiles} tiles; "
                f"fastest of {args.repeats} interleaved runs"
            )
            print(f"   bare forward, one 512 tile {forward * 1000:6.1f} ms")
            print(f"   bare-engine limit          {limit:6.2f} MPix/s")
            print(f"   microzoo, prediction       {pixels / ours_s / 1e6:6.2f} MPix/s  ({ours_s:.1f} s)")
            print(f"   bioimageio.core, predict.  {pixels / core_s / 1e6:6.2f} MPix/s  ({core_s:.1f} s)")
            print(
                f"   microzoo, whole process    {pixels / ours_proc[0] / 1e6:6.2f} MPix/s  ({ours_proc[0]:.1f} s, "
                f"peak {ours_proc[1]:.0f} MiB)"
            )
            print(
                f"   core, whole process        {pixels / core_proc[0] / 1e6:6.2f} MPix/s  ({core_proc[0]:.1f} s, "
                f"peak {core_proc[1]:.0f} MiB)"
            )
            print(f"   ratio ours / bare limit    {pixels / ours_s / 1e6 / limit:6.3f}   (target >= 0.95)")
            print(f"   ratio ours / core, predict {core_s / ours_s:6.3f}   (target >= 1.0)")
            print(f"   ratio ours / core, process {core_proc[0] / ours_proc[0]:6.3f}   (target >= 1.1 at 4096)")
            print(
                f"   outputs: {agree:.1f} mismatched per million in process, {agree_files:.1f} in the files "
                "(rtol 1e-3, atol 1e-3; allowed 100)"
            )
    if not args.skip_parameterized:
        print("\n== synthetic model with parameterized sizes (min 32, step 16, halo 8), onnx, 2048x2048")
        for tile, tiles, mpix in parameterized_gain(workdir):
            print(f"   tile {tile:5d}: {tiles:5d} tiles, {mpix:7.2f} MPix/s")


if __name__ == "__main__":
    main()
