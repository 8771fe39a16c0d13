"""Training steps per second of the four tasks, for one source tree or two compared in turn.

    .venv/bin/python benchmarks/train_steps.py                                   # this tree
    .venv/bin/python benchmarks/train_steps.py --tree /work/base-1a06668 --tree .  # old against new

Each task (semantic and instances on DSB2018, care and n2v on W2S: a few training images each)
trains with a fixed configuration (``--patch``, ``--batch``, ``--depth``, ``--features``) in a
subprocess whose ``PYTHONPATH`` is ``TREE/src``; after ``--warmup`` steps, ``--steps`` steps are
timed from the library's progress callback, then the run is cut off (no validation, QC or
export). The configurations are YAML files with the task names both the old and the new code
read. With two trees the runs alternate A B A B (``--repeats`` each) and the median of the
per-repeat ratios (new / old steps per second) is printed, so load from other processes on a
shared machine falls on both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MICROZOO_SHARED_DATA", ROOT.parent / "shared" / "data"))
TASKS = ("semantic", "instances", "care", "n2v")

# Runs in the subprocess: train each YAML config, time steps warmup..warmup+steps, stop.
_CHILD = r"""
import json, sys, time
from microzoo.train.run import train

class Enough(Exception):
    pass

warmup, steps, jobs = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
rates = {}
for task, config, out in jobs:
    times = {}
    def progress(done, total, description):
        if description.startswith("epoch"):
            times[done] = time.perf_counter()
            if done == warmup + steps:
                raise Enough
    try:
        train(config, out_dir=out, progress=progress)
    except Enough:
        pass
    rates[task] = steps / (times[warmup + steps] - times[warmup])
print("RATES " + json.dumps(rates))
"""


def _subset(folder: Path, target: Path, count: int) -> Path:
    """Links to the first ``count`` files of ``folder`` (sorted) in ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(folder.iterdir())[:count]:
        (target / path.name).symlink_to(path)
    return target


def write_configs(work: Path, args: argparse.Namespace) -> dict[str, Path]:
    """One YAML config per task, on a few images of DSB2018 (segmentation) and W2S (restoration)."""
    dsb, w2s = DATA / "dsb2018" / "train", DATA / "w2s" / "train"
    images = _subset(dsb / "images", work / "dsb" / "images", args.images)
    labels = work / "dsb" / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    for image in images.iterdir():
        (labels / f"{Path(image.name).stem}.tif").symlink_to(dsb / "labels" / f"{Path(image.name).stem}.tif")
    noisy = _subset(w2s / "noisy", work / "w2s" / "noisy", args.images)
    clean = _subset(w2s / "clean", work / "w2s" / "clean", args.images)
    common = {
        "network": {"depth": args.depth, "base_features": args.features},
        "training": {"epochs": 1, "steps_per_epoch": args.warmup + args.steps + 1, "batch_size": args.batch,
                     "threads": args.threads, "export": False, "early_stopping_patience": None},
    }  # fmt: skip
    patch = [args.patch, args.patch]
    data = {
        "semantic": {"images": str(images), "labels": str(labels)},
        "instances": {"images": str(images), "labels": str(labels)},
        "care": {"images": str(noisy), "targets": str(clean)},
        "n2v": {"images": str(noisy)},
    }
    paths = {}
    for task in TASKS:
        config = {"task": task, "data": {**data[task], "patch_size": patch}, **common}
        if task == "care":
            config["network"] = {**common["network"], "residual": True}
        if task == "n2v":
            config["network"] = {**common["network"], "n2v2": True}
        paths[task] = work / f"{task}.yaml"
        paths[task].write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return paths


def measure(tree: Path, configs: dict[str, Path], work: Path, args: argparse.Namespace, run: int) -> dict[str, float]:
    """Steps per second of each task with the sources of ``tree``."""
    jobs = [(task, str(path), str(work / "runs" / f"{run}-{task}")) for task, path in configs.items()]
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    command = [sys.executable, "-c", _CHILD, str(args.warmup), str(args.steps), json.dumps(jobs)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RATES ")]
    if result.returncode or not lines:
        raise SystemExit(f"the run with {tree} failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RATES "))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tree", type=Path, action="append", help="a source tree (repeat for two; default: this one)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--images", type=int, default=6, help="training images per data set")
    args = p.parse_args()
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        configs = write_configs(work, args)
        rates: list[list[dict[str, float]]] = [[] for _ in trees]
        for repeat in range(args.repeats):
            for index, tree in enumerate(trees):
                rates[index].append(measure(tree, configs, work, args, repeat * len(trees) + index))
                shown = ", ".join(f"{t} {r:.2f}" for t, r in rates[index][-1].items())
                print(f"repeat {repeat + 1} tree {tree}: {shown} steps/s", flush=True)
    print(
        f"\npatch {args.patch}x{args.patch}, batch {args.batch}, depth {args.depth}, {args.features} features, "
        f"{args.threads} threads; {args.steps} steps after {args.warmup}; median of {args.repeats} repeats\n"
    )
    header = ["task"] + [f"steps/s {tree.name}" for tree in trees] + (["median ratio"] if len(trees) == 2 else [])
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for task in TASKS:
        row = [task] + [f"{statistics.median(r[task] for r in runs):.2f}" for runs in rates]
        if len(trees) == 2:
            ratios = [new[task] / old[task] for old, new in zip(*rates, strict=True)]
            row.append(f"{statistics.median(ratios):.3f}")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
