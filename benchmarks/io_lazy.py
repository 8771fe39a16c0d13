"""Lazy reading and OME-Zarr writing: time and memory of region reads and pyramids.

    .venv/bin/python benchmarks/io_lazy.py [--size 8192] [--region 512]

Builds a size x size uint16 image from DSB2018 nuclei, writes it as a tiled zlib TIFF and reads
one region lazily (against reading the whole file), then writes it chunk by chunk with
OmeZarrWriter (256-chunks) and builds its pyramid, printing seconds, MB/s and the peak of the
memory each step allocates (tracemalloc, which sees NumPy's and Python's allocations; the
decoders' own buffers are not counted).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import tifffile

from microzoo.io.ome_zarr import OmeZarrWriter
from microzoo.io.read import read_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def peak_mib() -> float:
    """The peak of traced memory since the last call, in MiB."""
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.reset_peak()
    return peak


def nuclei(size: int) -> np.ndarray:
    import imageio.v3 as iio

    paths = sorted((DATA / "dsb2018" / "train" / "images").glob("*.png"))
    pieces = [iio.imread(p)[:256, :256, 0].astype(np.uint16) * 257 for p in paths[:64]]
    pieces = [p for p in pieces if p.shape == (256, 256)]
    n = size // 256
    return np.block([[pieces[(r * n + c) % len(pieces)] for c in range(n)] for r in range(n)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--region", type=int, default=512)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    image = nuclei(args.size)
    mb = image.nbytes / 1e6
    tif = folder / "big.tif"
    tifffile.imwrite(tif, image, tile=(256, 256), compression="zlib")
    del image
    tracemalloc.start()
    r = args.region
    t = time.perf_counter()
    lazy = read_image(tif, lazy=True)
    print(f"lazy TIFF open (imports zarr, parses the file): {time.perf_counter() - t:.3f} s")
    lazy.data[0:r, 0:r]  # zarr starts its event loop on the first read
    t = time.perf_counter()
    block = lazy.data[1000 : 1000 + r, 3000 : 3000 + r]
    print(f"lazy TIFF region {r}x{r}: {time.perf_counter() - t:.4f} s, peak {peak_mib():.0f} MiB")
    t = time.perf_counter()
    whole = read_image(tif)
    print(f"whole TIFF read ({mb:.0f} MB): {time.perf_counter() - t:.2f} s, peak {peak_mib():.0f} MiB")
    assert np.array_equal(whole.data[1000 : 1000 + r, 3000 : 3000 + r], block)
    lazy.data.close()

    writer = OmeZarrWriter.create(
        folder / "big.ome.zarr", shape=whole.data.shape, dtype="uint16", axes="yx", chunks=(256, 256)
    )
    t = time.perf_counter()
    for y in range(0, args.size, 256):
        writer.write((slice(y, y + 256), slice(None)), whole.data[y : y + 256])
    seconds = time.perf_counter() - t
    print(f"OmeZarrWriter.write, 256-row stripes: {seconds:.2f} s, {mb / seconds:.0f} MB/s")
    del whole
    peak_mib()
    t = time.perf_counter()
    levels = writer.build_pyramid(method="mean")
    seconds = time.perf_counter() - t
    print(f"build_pyramid(mean) {levels}: {seconds:.2f} s, {mb / seconds:.0f} MB/s of level 0, "
          f"peak {peak_mib():.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
