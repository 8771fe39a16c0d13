"""Streamed percentiles (runtime/stats.py) against np.quantile on the same data: error and time.

    .venv/bin/python benchmarks/stream_statistics.py [--size 4096] [--block 512] [--rounds 3]

The image: a mosaic of the real W2S widefield test captures (8-bit), turned into float32 as a
restoration or a flat-field correction would (a gain per field plus Gaussian noise of 0.3
grey levels, fixed seed), so almost every value is distinct; and the same mosaic as uint16.
Statistics: what ``scale_range`` (percentiles 1 and 99.8, ``linear``) and ``clip`` per sample
(``inverted_cdf``) need, with mean and std, over (y, x).

It prints, per dtype:
- the largest difference between the streamed percentiles and ``np.quantile`` (float64, as
  ``runtime.ops`` computes them in memory), absolute and relative to the value range; the
  method is exact by construction, so anything but 0 is a bug;
- the passes over the data and the peak memory the pass allocates (tracemalloc) against the
  image's size;
- seconds of the streamed pass (A) and of ``np.quantile`` on the whole image in memory (B),
  run A B A B ... ``--rounds`` times, their medians and the median of the per-round ratios A/B;
- for contrast, the error of the anchor tools on the same data and blocks: bioimageio.core's
  ``MeanQuantilesCalculator`` (the average of per-block percentiles, which core itself warns is
  not correct) and ``dask.array.percentile`` (approximate, per-chunk percentiles merged).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import tifffile

from microzoo.runtime.stats import StatRequest, stream_statistics

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MICROZOO_SHARED_DATA", REPO.parent / "shared" / "data"))
AXES = ("batch", "channel", "y", "x")
QS = (0.01, 0.998)


def mosaic(size: int) -> np.ndarray:
    """``size`` x ``size`` uint8 from the W2S test captures, tile after tile."""
    files = sorted((DATA / "w2s" / "test" / "noisy").glob("*.tif"))
    tiles = [tifffile.imread(f) for f in files]
    out = np.zeros((size, size), np.uint8)
    k = 0
    for y in range(0, size, 512):
        for x in range(0, size, 512):
            t = tiles[k % len(tiles)]
            k += 1
            out[y : y + 512, x : x + 512] = t[: size - y, : size - x]
    return out


def as_float(image: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    gain = np.repeat(np.repeat(rng.uniform(0.8, 1.25, size=(-(-image.shape[0] // 512),) * 2), 512, 0), 512, 1)
    x = image * gain[: image.shape[0], : image.shape[1]] + rng.normal(0.0, 0.3, size=image.shape)
    return x.astype(np.float32)


def requests() -> list[StatRequest]:
    yx = ("y", "x")
    out = [StatRequest("t", "quantile", yx, q, "linear") for q in QS]
    out += [StatRequest("t", "quantile", yx, q, "inverted_cdf") for q in QS]
    return out + [StatRequest("t", "mean", yx), StatRequest("t", "std", yx)]


def streamed(x: np.ndarray, block: int) -> tuple[dict[str, np.ndarray], int]:
    passes: set[str] = set()
    result = stream_statistics(x, AXES, requests(), block=(1, 1, block, block), progress=lambda d, t, s: passes.add(s))
    return result, len(passes)


def in_memory(x: np.ndarray) -> dict[str, np.ndarray]:
    x64 = x.astype(np.float64)
    out = {}
    for method in ("linear", "inverted_cdf"):
        values = np.quantile(x64, list(QS), axis=(2, 3), keepdims=True, method=method)
        out.update({f"t|quantile|y,x|{method}|{q!r}": v for q, v in zip(QS, values, strict=True)})
    return out


def core_mean_of_blocks(x: np.ndarray, block: int) -> dict[float, float]:
    from bioimageio.core.axis import AxisId
    from bioimageio.core.common import MemberId
    from bioimageio.core.sample import Sample
    from bioimageio.core.stat_calculators import MeanQuantilesCalculator
    from bioimageio.core.tensor import Tensor

    calc = MeanQuantilesCalculator(MemberId("t"), [AxisId("batch"), AxisId("y"), AxisId("x")], QS)  # batch of 1
    for y in range(0, x.shape[2], block):
        for xx in range(0, x.shape[3], block):
            part = x[:, :, y : y + block, xx : xx + block]
            calc.update(Sample(members={MemberId("t"): Tensor(part, dims=AXES)}, stat={}, id=None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {m.q: float(np.asarray(v).ravel()[0]) for m, v in calc.finalize().items()}


def dask_percentile(x: np.ndarray, block: int) -> dict[float, float]:
    import dask.array as da

    flat = da.from_array(x.reshape(-1), chunks=block * block)
    values = da.percentile(flat, [100 * q for q in QS], method="linear").compute(scheduler="synchronous")
    return dict(zip(QS, (float(v) for v in values), strict=True))


def report(name: str, x: np.ndarray, block: int, rounds: int) -> None:
    print(f"\n{name}: {x.shape[2]}x{x.shape[3]} {x.dtype}, {x.nbytes / 2**20:.0f} MiB, blocks {block}x{block}")
    tracemalloc.start()
    got, passes = streamed(x, block)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    want = in_memory(x)
    span = float(x.max()) - float(x.min())
    worst = max(float(np.max(np.abs(got[k] - want[k]))) for k in want)
    print(f"  streamed vs np.quantile: max |difference| {worst:g} ({worst / span:.2g} of the value range)")
    mib = peak / 2**20
    print(f"  passes over the data: {passes}; peak memory of the pass {mib:.1f} MiB (image {x.nbytes / 2**20:.0f} MiB)")
    a_times, b_times = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        streamed(x, block)
        a_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        in_memory(x)
        b_times.append(time.perf_counter() - t0)
    ratios = [a / b for a, b in zip(a_times, b_times, strict=True)]
    print(f"  A streamed (all 4 percentiles + mean/std) s: {' '.join(f'{t:.2f}' for t in a_times)}")
    print(f"  B np.quantile (the 4 percentiles)        s: {' '.join(f'{t:.2f}' for t in b_times)}")
    print(f"  median A {statistics.median(a_times):.2f} s, B {statistics.median(b_times):.2f} s, "
          f"median ratio A/B {statistics.median(ratios):.2f}")  # fmt: skip
    exact = {q: float(want[f"t|quantile|y,x|linear|{q!r}"].ravel()[0]) for q in QS}
    for tool, values in (("bioimageio.core mean of blocks", core_mean_of_blocks(x, block)),
                         ("dask.array.percentile", dask_percentile(x, block))):  # fmt: skip
        errors = ", ".join(
            f"p{100 * q:g}: {values[q] - exact[q]:+.4g} ({(values[q] - exact[q]) / span:+.2g} of range)" for q in QS
        )
        print(f"  {tool}: error {errors}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    image = mosaic(args.size)
    report("float32", as_float(image)[None, None], args.block, args.rounds)
    report("uint16", (image.astype(np.uint16) * 257)[None, None], args.block, args.rounds)


if __name__ == "__main__":
    main()
