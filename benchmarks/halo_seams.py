"""Tile seams against the halo: how far a trained U-Net's tiled output departs from its whole-image output.

    PYTHONPATH=src .venv/bin/python benchmarks/halo_seams.py CHECKPOINT [CHECKPOINT ...] \
        [--depth 2] [--features 16] [--tile 256] [--halos 8 16 24 32 48]

Each CHECKPOINT is a microzoo training checkpoint (``run/checkpoints/best.pt`` or ``last.pt``) of a
one-channel restoration U-Net (N2V, CARE) with the given depth and base features. On W2S noisy test
fields 081-090 (normalised as the package normalises: percentiles 1 and 99.8), the network's output
for the whole field is set against the same output put together from tiles of ``--tile`` pixels
that overlap by twice the halo and keep their inner part, as microzoo's and bioimageio.core's
tiling do. Only the seams between tiles are compared: the outer 64 pixels, which a runner pads
alike in both but this script does not, are left out. Both are mapped back to the image's units
(0-255) and compared with the tolerance of a zoo package's test (``rtol = atol = 1e-3``). Printed
per halo: the values per million beyond that tolerance, the largest difference, and the compute
per pixel kept (``(tile / (tile - 2 halo))^2``).

Also printed: the network's receptive-field radius, measured as the largest distance from one
output pixel at which an input pixel changes it at all (the gradient of that pixel is non-zero).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _training_common import DATA, table  # noqa: E402

#: pixels at the image's border left out of the comparison: a runner pads the border of the whole image and
#: of its border tiles alike, while this script pads each side differently; seams lie inside
INTERIOR = 64


def _network(checkpoint: Path, depth: int, features: int, variant: str):
    from microzoo.train.loop import load_checkpoint
    from microzoo.train.models import UNet

    state = load_checkpoint(checkpoint)["network"]
    network = UNet(in_channels=1, out_channels=1, spatial_dims=2, depth=depth, base_features=features,
                   n2v2=variant == "n2v2")  # fmt: skip
    network.load_state_dict(state)
    return network.eval()


def receptive_radius(network, size: int = 192) -> int:
    """The largest distance (Chebyshev, pixels) from the centre output pixel with a non-zero gradient."""
    import torch

    x = torch.randn(1, 1, size, size, requires_grad=True)
    network(x)[0, 0, size // 2, size // 2].backward()
    ys, xs = np.nonzero(x.grad[0, 0].abs().numpy() > 0)
    return int(max(np.abs(ys - size // 2).max(), np.abs(xs - size // 2).max()))


def _forward(network, image: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return network(torch.from_numpy(np.ascontiguousarray(image[None, None], np.float32)))[0, 0].numpy()


def tiled(network, image: np.ndarray, *, tile: int, halo: int) -> np.ndarray:
    """The output put together from tiles: tile ``k`` reads ``[k d - halo, k d - halo + tile)`` (``d`` = tile -
    2 halo, mirror padding outside the image) and keeps its inner ``[k d, (k + 1) d)``."""
    stride = tile - 2 * halo
    height, width = image.shape
    rows, cols = -(-height // stride), -(-width // stride)
    pad = ((halo, rows * stride - height + halo), (halo, cols * stride - width + halo))
    padded = np.pad(image, pad, mode="symmetric")
    out = np.zeros((rows * stride, cols * stride), np.float32)
    for r in range(rows):
        for c in range(cols):
            block = _forward(network, padded[r * stride : r * stride + tile, c * stride : c * stride + tile])
            out[r * stride : (r + 1) * stride, c * stride : (c + 1) * stride] = block[halo:-halo, halo:-halo]
    return out[:height, :width]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", type=Path, nargs="+")
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument(
        "--variant",
        choices=("n2v2", "plain"),
        default="n2v2",
        help="n2v2: microzoo's N2V2 U-Net (UNet(n2v2=True)); plain: the other tasks'",
    )
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--halos", type=int, nargs="+", default=[8, 16, 24, 32, 48])
    parser.add_argument("--fields", type=int, default=10, help="W2S test fields used (081 onwards)")
    args = parser.parse_args()

    import tifffile
    import torch

    torch.set_num_threads(2)
    paths = sorted((DATA / "w2s" / "test" / "noisy").glob("*.tif"))[: args.fields]
    rows = []
    for checkpoint in args.checkpoints:
        network = _network(checkpoint, args.depth, args.features, args.variant)
        radius = receptive_radius(network)
        print(f"{checkpoint}: receptive-field radius {radius} pixels", flush=True)
        for halo in args.halos:
            beyond, total, largest = 0, 0, 0.0
            for path in paths:
                raw = tifffile.imread(path).astype(np.float32)
                low, high = np.percentile(raw, (1.0, 99.8))
                image = (raw - low) / (high - low + 1e-6)
                margin = INTERIOR
                whole = _forward(network, np.pad(image, margin, mode="symmetric"))[margin:-margin, margin:-margin]
                whole = whole * (high - low) + low
                pieces = tiled(network, image, tile=args.tile, halo=halo) * (high - low) + low
                inner = (slice(INTERIOR, -INTERIOR),) * 2  # the seams inside; the border is padded alike in a runner
                difference = np.abs(pieces - whole)[inner]
                beyond += int(np.count_nonzero(difference > 1e-3 + 1e-3 * np.abs(whole[inner])))
                total += difference.size
                largest = max(largest, float(difference.max()))
            cost = (args.tile / (args.tile - 2 * halo)) ** 2
            rows.append([checkpoint.parent.parent.parent.name + "/" + checkpoint.name, radius, halo,
                         round(1e6 * beyond / total, 1), round(largest, 4), round(cost, 3)])  # fmt: skip
            print(f"  halo {halo}: {rows[-1][3]} per million beyond the tolerance, largest {largest:.4f}", flush=True)
    table(["checkpoint", "receptive radius", "halo", "per million beyond rtol=atol=1e-3", "largest |diff| (0-255)",
           "compute per pixel kept"], rows)  # fmt: skip


if __name__ == "__main__":
    main()
