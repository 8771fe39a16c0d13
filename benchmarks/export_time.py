"""Export time against training time for small Noise2Void models, 2-D and 3-D, on W2S.

    .venv/bin/python benchmarks/export_time.py                               # this tree
    .venv/bin/python benchmarks/export_time.py --tree /work/base-1a06668 --tree .

Each run trains a small N2V2 U-Net (depth 2, 16 features; 2-D: 4 fields of 256x256, patches
64x64, batches of 4; 3-D: 3 stacks of 20x256x256 W2S fields, patches 16x32x32, batches of 2)
for ``--epochs`` x ``--steps`` steps and exports its package, in a subprocess whose
``PYTHONPATH`` is ``TREE/src``. Training time is the run's own (its curves' ``seconds``);
export time runs from the first export progress message to the end of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MICROZOO_SHARED_DATA", ROOT.parent / "shared" / "data"))

_CHILD = r"""
import json, sys, time
from microzoo.train.config import n2v_config
from microzoo.train.run import train

images, dims, epochs, steps, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
config = n2v_config(images=images, spatial_dims=dims, patch_size=(16, 32, 32) if dims == 3 else 64,
                    batch_size=2 if dims == 3 else 4, epochs=epochs)
config.network.depth, config.network.base_features = 2, 16
config.training.steps_per_epoch = steps
marks = {}
def progress(done, total, description):
    if description == "saving the weights" and "export" not in marks:
        marks["export"] = time.perf_counter()
result = train(config, out_dir=out, progress=progress)
end = time.perf_counter()
print("TIMES " + json.dumps({"train_s": result.history[-1]["seconds"], "export_s": end - marks["export"]}))
"""


def write_data(work: Path) -> dict[int, Path]:
    """2-D: 4 W2S noisy fields cropped to 256x256; 3-D: 3 stacks of 20 fields cropped to 256x256."""
    noisy = DATA / "w2s" / "train" / "noisy"
    folders = {2: work / "d2", 3: work / "d3"}
    for folder in folders.values():
        folder.mkdir(parents=True)
    for i in range(4):
        tifffile.imwrite(folders[2] / f"{i}.tif", tifffile.imread(noisy / f"{i + 1:03d}.tif")[:256, :256])
    for v in range(3):
        planes = [tifffile.imread(noisy / f"{v * 20 + i + 1:03d}.tif")[:256, :256] for i in range(20)]
        tifffile.imwrite(folders[3] / f"{v}.tif", np.stack(planes))
    return folders


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", type=Path, action="append", help="a source tree (repeat for two; default: this one)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--steps", type=int, default=10, help="steps per epoch")
    p.add_argument("--dims", type=int, nargs="+", default=[2, 3], choices=[2, 3])
    args = p.parse_args()
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    print("| tree | dims | training (s) | export (s) | export / training |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folders = write_data(Path(tmp))
        for dims in args.dims:
            for index, tree in enumerate(trees):
                out = Path(tmp) / f"out-{dims}-{index}"
                command = [sys.executable, "-c", _CHILD, str(folders[dims]), str(dims), str(args.epochs),
                           str(args.steps), str(out)]  # fmt: skip
                run = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(tree / "src")},
                                     capture_output=True, text=True, check=False)  # fmt: skip
                lines = [line for line in run.stdout.splitlines() if line.startswith("TIMES ")]
                if run.returncode or not lines:
                    raise SystemExit(f"the run with {tree} failed:\n{run.stderr[-3000:]}")
                times = json.loads(lines[-1].removeprefix("TIMES "))
                print(f"| {tree.name} | {dims}-D | {times['train_s']:.1f} | {times['export_s']:.1f} | "
                      f"{times['export_s'] / times['train_s']:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
