"""N2V2 training speed and quality: microzoo against CAREamics, the same configuration, the same wall time.

    .venv/bin/python benchmarks/train_vs_careamics.py [--seconds 180] [--repeats 3]
        [--careamics-python /work/careamics-venv/bin/python]

Both tools train N2V2 (blur pooling, no top skip; 0.2% of pixels masked per patch, median
replacement) with the same patch, batch, U-Net depth and base features, optimizer steps per
epoch, validation patches and learning rate (Adam-family, each tool's default schedule for N2V:
microzoo a cosine annealed to the time limit, CAREamics halving on a plateau) on the 51 W2S
training fields that microzoo's seeded split trains on (channel 0, noisy images only); each for
``--seconds`` of wall time on this CPU with the same number of threads. Each run is its own
process, microzoo and CAREamics in turn (A B A B ...), so a busy moment of this shared machine
falls on both alike. CAREamics runs in its own environment (benchmarks/_careamics_n2v.py
explains what was installed and stubbed there).

Per run: optimizer steps per second of training (steps / seconds from the first batch to the
end of training, validation and checkpoints included), and the PSNR (peak 255) of the trained
network's predictions on the W2S test fields against their clean images after the per-image
affine fit of microzoo's qc metrics (as benchmarks/train_w2s.py scores). Each tool predicts
with its own default checkpoint for N2V (both the last; microzoo's other checkpoint, the best
validation loss, is scored too)
and its own normalisation; the affine fit makes units irrelevant. Printed: a table per run,
the median ratio of steps per second (microzoo / CAREamics, target >= 1.0) and the median PSNR
difference (target >= 0 dB), with the load average before each run.

Trials of microzoo's own settings: ``--microzoo-only --epochs N [--jitter J] [--weight-decay W]
[--scheduler S] [--keep best|last]`` trains microzoo alone for a fixed number of steps
(deterministic: one run per setting), so the fitted PSNR of two settings compares what the steps
learn, whatever the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _training_common import DATA, psnr_pair, restore, table  # noqa: E402

HERE = Path(__file__).resolve().parent
CAREAMICS_PYTHON = Path(os.environ.get("CAREAMICS_PYTHON", "/work/careamics-venv/bin/python"))


def _config(settings: dict, out: Path):
    from microzoo.train.config import n2v_config

    epochs, minutes = (settings["epochs"], None) if settings.get("epochs") else (100_000, settings["seconds"] / 60)
    config = n2v_config(images=Path(settings["train_folder"]), name="w2s-n2v2", variant="n2v2",
                        patch_size=settings["patch"], batch_size=settings["batch"], epochs=epochs,
                        steps_per_epoch=settings["steps_per_epoch"], seed=settings["seed"],
                        max_minutes=minutes)  # fmt: skip
    if settings.get("jitter") is not None:
        config.data.augmentation.intensity_jitter = settings["jitter"]
    if settings.get("weight_decay") is not None:
        config.training.weight_decay = settings["weight_decay"]
    if settings.get("scheduler") is not None:
        config.training.scheduler = settings["scheduler"]
    if settings.get("keep") is not None:
        config.training.keep = settings["keep"]
    config.masked_fraction = settings["masked_fraction"]
    config.data.validation_patches = settings["val_patches"]
    config.network.depth, config.network.base_features = settings["depth"], settings["features"]
    if settings.get("upsampling") is not None:
        config.network.upsampling = settings["upsampling"]
    config.training.learning_rate = settings["lr"]
    config.training.threads = settings["threads"]
    config.training.early_stopping_patience = None  # CAREamics does not stop early either
    config.training.export = False
    return config


def train_files(settings: dict) -> list[str]:
    """The W2S fields microzoo's seeded split trains on (the rest validate)."""
    from microzoo.train.data import load_samples, split_samples

    config = _config(settings, Path("."))
    train, _ = split_samples(
        load_samples(config.data), fraction=config.data.validation_fraction, seed=config.training.seed
    )
    folder = Path(settings["train_folder"])
    return [str(folder / f"{sample.name}.tif") for sample in train]


def microzoo_worker(settings_path: Path) -> None:
    """The microzoo side (its own process): train, predict the test fields, print the result line."""
    import tifffile
    import torch

    from microzoo.train.run import train

    settings = json.loads(settings_path.read_text())
    torch.set_num_threads(settings["threads"])
    out = Path(settings["out"])
    config = _config(settings, out)
    steps = [0]

    def progress(done: int, total: int, description: str) -> None:
        steps[0] = max(steps[0], done) if "epoch" in description else steps[0]

    result = train(config, out_dir=out / "run", progress=progress)
    train_seconds = float(result.history[-1]["seconds"])
    from microzoo.train.tasks.skeleton import build_network, load_best

    test = [tifffile.imread(p).astype(np.float32) for p in settings["test"]]
    # the checkpoint microzoo keeps (training.keep: the last for N2V) and, for comparison, the other one
    kept, other = ("last.pt", "best.pt") if config.training.keep == "last" else ("best.pt", "last.pt")
    for checkpoint, name in ((kept, "predictions.npy"), (other, "predictions_other.npy")):
        network = load_best(
            build_network(config, in_channels=1, out_channels=1), out / "run" / "checkpoints" / checkpoint
        )
        predictions = np.stack([restore(network, image, depth=settings["depth"]) for image in test])
        np.save(out / name, predictions.astype(np.float32))
    parameters = sum(p.numel() for p in network.parameters())
    print("result=" + json.dumps({"steps": steps[0], "train_seconds": train_seconds, "epochs": len(result.history),
                                  "parameters": parameters}))  # fmt: skip


def run_tool(tool: str, settings: dict, workdir: Path) -> dict:
    """Run one tool as its own process; its result with the load average before it and the fitted PSNR."""
    out = workdir / f"{tool}_{time.strftime('%H%M%S')}"
    out.mkdir(parents=True)
    settings = {**settings, "out": str(out)}
    path = out / "settings.json"
    path.write_text(json.dumps(settings))
    if tool == "microzoo":
        command = [sys.executable, str(Path(__file__).resolve()), "--worker-microzoo", str(path)]
    else:
        command = [str(CAREAMICS_PYTHON), str(HERE / "_careamics_n2v.py"), str(path)]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    process = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{tool} failed:\n{process.stderr[-3000:]}")
    line = next(x for x in process.stdout.splitlines() if x.startswith("result="))
    result = json.loads(line.removeprefix("result="))
    predictions = np.load(out / "predictions.npy")
    import tifffile

    clean = [tifffile.imread(p.replace("/noisy/", "/clean/")) for p in settings["test"]]
    fitted = [psnr_pair(truth, pred.astype(np.float64))[1] for truth, pred in zip(clean, predictions, strict=True)]
    extra = {}
    if (out / "predictions_other.npy").exists():
        other = np.load(out / "predictions_other.npy")
        extra["psnr_fitted_other"] = float(
            np.mean([psnr_pair(t, p.astype(np.float64))[1] for t, p in zip(clean, other, strict=True)])
        )
    return {**result, "tool": tool, "load": load, "wall": wall, "psnr_fitted": float(np.mean(fitted)),
            "steps_per_s": result["steps"] / result["train_seconds"], **extra}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker-microzoo", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=180.0, help="wall time of training, each run")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs (microzoo, CAREamics)")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--val-patches", type=int, default=32)
    parser.add_argument("--masked-fraction", type=float, default=0.002)
    parser.add_argument("--test-fields", type=int, default=30, help="W2S test fields scored (081 onwards)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--seed", type=int, default=0)
    trial = parser.add_argument_group("microzoo trials (runs of microzoo alone, each setting deterministic)")
    trial.add_argument("--microzoo-only", action="store_true", help="run microzoo alone, no CAREamics")
    trial.add_argument("--epochs", type=int, help="a fixed number of epochs instead of --seconds of wall time")
    trial.add_argument("--jitter", type=float, help="microzoo's intensity jitter (default: its N2V default)")
    trial.add_argument("--weight-decay", type=float, help="microzoo's AdamW weight decay (default: its default)")
    trial.add_argument(
        "--scheduler",
        choices=("plateau", "cosine", "none"),
        help="microzoo's learning-rate schedule (default: its N2V default)",
    )
    trial.add_argument("--keep", choices=("best", "last"), help="microzoo's kept checkpoint (default: its N2V default)")
    trial.add_argument(
        "--upsampling", choices=("transposed", "linear"), help="microzoo's U-Net upsampling (default: its N2V default)"
    )
    args = parser.parse_args()
    if args.epochs and not args.microzoo_only:
        parser.error("--epochs fixes microzoo's steps only: use it with --microzoo-only (a pair shares --seconds)")
    if args.worker_microzoo:
        microzoo_worker(args.worker_microzoo)
        return

    w2s = DATA / "w2s"
    keys = ("seconds", "patch", "batch", "depth", "features", "lr", "steps_per_epoch", "val_patches",
            "masked_fraction", "threads", "seed", "epochs", "jitter", "weight_decay", "scheduler", "keep",
            "upsampling")  # fmt: skip
    settings = {key: getattr(args, key) for key in keys}
    settings["train_folder"] = str(w2s / "train" / "noisy")
    settings["train"] = train_files(settings)
    settings["test"] = [str(p) for p in sorted((w2s / "test" / "noisy").glob("*.tif"))[: args.test_fields]]
    workdir = Path(tempfile.mkdtemp(prefix="microzoo-vs-careamics-"))
    length = f"{args.epochs} epochs" if args.epochs else f"{args.seconds:.0f} s"
    print(f"{time.strftime('%Y-%m-%d %H:%M')}: N2V2, patch {args.patch}, batch {args.batch}, depth {args.depth}, "
          f"{args.features} base features, lr {args.lr:g}, {args.steps_per_epoch} steps per epoch, "
          f"{args.val_patches} validation patches, {args.masked_fraction:.1%} masked; {len(settings['train'])} train "
          f"fields, {len(settings['test'])} test fields; {length} each run, {args.threads} threads; "
          f"work folder {workdir}", flush=True)  # fmt: skip
    runs = []
    for repeat in range(args.repeats):
        for tool in ("microzoo",) if args.microzoo_only else ("microzoo", "careamics"):
            run = run_tool(tool, settings, workdir)
            run["repeat"] = repeat + 1
            runs.append(run)
            print(
                f"  pair {repeat + 1} {tool:9s}: {run['steps']} steps in {run['train_seconds']:.0f} s = "
                f"{run['steps_per_s']:.3f} steps/s; fitted PSNR {run['psnr_fitted']:.2f} dB"
                + (f" (other checkpoint {run['psnr_fitted_other']:.2f})" if "psnr_fitted_other" in run else "")
                + f"; {run.get('parameters', 0):,} weights; "
                f"process {run['wall']:.0f} s; load average before {run['load']:.2f}",
                flush=True,
            )
    table(["pair", "tool", "steps", "training s", "steps/s", "PSNR fitted (dB)", "process s", "load average"],
          [[r["repeat"], r["tool"], r["steps"], r["train_seconds"], r["steps_per_s"], r["psnr_fitted"], r["wall"],
            r["load"]] for r in runs])  # fmt: skip
    ours = [r for r in runs if r["tool"] == "microzoo"]
    theirs = [r for r in runs if r["tool"] == "careamics"]
    if not theirs:
        return
    speed = [a["steps_per_s"] / b["steps_per_s"] for a, b in zip(ours, theirs, strict=True)]
    quality = [a["psnr_fitted"] - b["psnr_fitted"] for a, b in zip(ours, theirs, strict=True)]
    print(
        f"steps/s microzoo / CAREamics, per pair {[round(s, 3) for s in speed]}: median {statistics.median(speed):.3f} "
        "(target >= 1.0)"
    )
    print(
        f"fitted PSNR microzoo - CAREamics (dB), per pair {[round(q, 2) for q in quality]}: median "
        f"{statistics.median(quality):+.2f} (target >= 0)"
    )


if __name__ == "__main__":
    main()
