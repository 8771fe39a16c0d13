"""Instance stitching on real nuclei: tiled labels against whole-image decoding, and their cost.

Builds a 2048x2048 mosaic of 256x256 crops of DSB2018 training label images, turns it into the
three maps an instance network outputs (``targets_from_labels``, smoothed by a Gaussian of
sigma 1 as a network's output is), and decodes it

- whole (``instances_from_output``), and
- tile by tile as a streamed job does (``runtime/stitch.py``: each tile's whole output decoded,
  objects kept by centre, saved to npz, then painted chunk by chunk), for tile sizes 256 and
  512 with a halo of 32 (the zoo example model's),

and prints the time of each, the objects, how many the tiles flagged as possibly cut (the
notice), and how many stitched objects differ from the whole image's (and are not flagged).

    PYTHONPATH=src python benchmarks/stitch_instances.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi

from microzoo.runtime.geometry import (
    AxisGeometry,
    FixedSize,
    ModelGeometry,
    ParameterizedSize,
    SizeReference,
    TensorGeometry,
)
from microzoo.runtime.instances import InstanceSettings, instances_from_output
from microzoo.runtime.stitch import LabelPainter, load_objects, save_objects, tile_objects, tile_window
from microzoo.runtime.tiling import plan_tiles
from microzoo.train.tasks.instance_targets import targets_from_labels

DSB = Path("/work/shared/data/dsb2018/train/labels")
SIZE, CROP, HALO = 2048, 256, 32


def mosaic() -> np.ndarray:
    crops = [tifffile.imread(p)[:CROP, :CROP] for p in sorted(DSB.glob("*.tif"))]
    crops = [c for c in crops if c.shape == (CROP, CROP)]
    n = SIZE // CROP
    labels, offset = np.zeros((SIZE, SIZE), np.uint32), 0
    for k in range(n * n):
        crop = crops[k % len(crops)].astype(np.uint32)
        y, x = divmod(k, n)
        labels[y * CROP : (y + 1) * CROP, x * CROP : (x + 1) * CROP] = np.where(crop > 0, crop + offset, 0)
        offset += int(crop.max())
    return labels


def geometry() -> ModelGeometry:
    batch = AxisGeometry("batch", "batch", None)
    space_in = (AxisGeometry(a, "space", ParameterizedSize(64, 16)) for a in "yx")
    space_out = (AxisGeometry(a, "space", SizeReference("raw", a), halo=HALO) for a in "yx")
    raw = TensorGeometry("raw", (batch, AxisGeometry("channel", "channel", FixedSize(1)), *space_in))
    out = TensorGeometry("maps", (batch, AxisGeometry("channel", "channel", FixedSize(3)), *space_out))
    return ModelGeometry(inputs=(raw,), outputs=(out,))


def differing_objects(whole: np.ndarray, stitched: np.ndarray) -> set[int]:
    """The stitched ids whose pixels are not exactly one whole-image object's (0: background)."""
    pairs = np.unique(np.stack([whole.ravel(), stitched.ravel()]), axis=1)
    per_whole = dict(zip(*np.unique(pairs[0], return_counts=True), strict=True))
    per_stitched = dict(zip(*np.unique(pairs[1], return_counts=True), strict=True))
    return {int(b) for a, b in pairs.T if per_whole[a] > 1 or per_stitched[b] > 1}


def flagged(folder: str, windows: list, painter: LabelPainter) -> set[int]:
    """The final ids of the objects the tiles flagged as possibly cut."""
    ids = set()
    for window in windows:
        objects = load_objects(folder, window.index)
        ids |= {int(painter.ids[window.index]) + k for k in np.flatnonzero(objects.may_be_cut)}
    return ids


def main() -> None:
    settings = InstanceSettings()
    maps = ndi.gaussian_filter(targets_from_labels(mosaic()), sigma=(0, 1, 1))
    start = time.perf_counter()
    whole = instances_from_output(maps, settings=settings)
    print(f"whole image {SIZE}x{SIZE}: {whole.max()} objects, decoded in {time.perf_counter() - start:.2f} s")
    for tile in (256, 512):
        plan = plan_tiles(geometry(), {"raw": {"batch": 1, "channel": 1, "y": SIZE, "x": SIZE}},
                          tile={"y": tile, "x": tile}, last_keeps_inner=False)  # fmt: skip
        tensor = plan.geometry.outputs[0]
        windows = [tile_window(plan, t, tensor) for t in plan.tiles]
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            for window in windows:
                part = maps[(slice(None), *window.inside[1:])]
                save_objects(folder, tile_objects(part, window, settings=settings, edge_band=HALO // 2))
            decoded = time.perf_counter() - start
            start = time.perf_counter()
            painter = LabelPainter(folder, windows)
            stitched = np.zeros((1, SIZE, SIZE), np.uint32)
            for window in windows:
                stitched[window.kept] = painter.paint(window.kept)
            painted = time.perf_counter() - start
            size = sum(p.stat().st_size for p in Path(folder).iterdir())
            differ = differing_objects(whole, stitched[0]) - {0}
            unflagged = differ - flagged(folder, windows, painter)
        print(
            f"tile {tile} (halo {HALO}, {plan.n_tiles} tiles): decode + save {decoded:.2f} s, paint {painted:.2f} s, "
            f"objects files {size / 1e6:.1f} MB; {painter.n_objects} objects, {painter.n_may_be_cut} flagged as "
            f"possibly cut; {len(differ)} differ from the whole image's, {len(unflagged)} of them not flagged"
        )


if __name__ == "__main__":
    sys.exit(main())
