"""Shared pieces of the ``benchmarks/train_*.py`` scripts.

Each script trains with :func:`microzoo.train.run.train` on a train split under a time budget
(``--minutes``, the config's ``max_minutes``), reloads the best checkpoint and evaluates it on
the test split beside a classical baseline computed in the same run. Outputs (checkpoints,
curves, the library's own QC on its validation images) go to ``benchmarks/out/<name>/``
(git-ignored); the figures are printed as Markdown for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from microzoo.qc.metrics import affine_fit, psnr

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MICROZOO_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "benchmarks" / "out"

_T0 = time.monotonic()


def log(message: str) -> None:
    """A timestamped progress line (minutes since the script started)."""
    print(f"[{(time.monotonic() - _T0) / 60:6.1f} min] {message}", flush=True)


def parser(description: str, *, minutes: float) -> argparse.ArgumentParser:
    """The options every training script shares."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=minutes, help="training time budget (max_minutes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/out/<name>)")
    p.add_argument("--eval-only", action="store_true", help="evaluate the run already in the output folder")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for training (default: every core)")
    return p


class StepLogger:
    """A progress callback that prints the training description at most every ``every`` seconds."""

    def __init__(self, every: float = 60.0) -> None:
        self.every, self.last = every, 0.0

    def __call__(self, done: int, total: int, description: str) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            log(f"step {done}/{total} {description}")


def apply_budget_settings(config, args) -> None:  # noqa: ANN001
    """The settings every time-budgeted benchmark run shares: network size and learning rate from
    the command line, a cosine schedule that anneals over the time budget, and no early stopping
    (the time limit ends the run; the best validated epoch is kept)."""
    config.network.base_features = args.features
    config.network.depth = args.depth
    config.training.learning_rate = args.lr
    config.training.scheduler = "cosine"
    config.training.early_stopping_patience = None


def train_run(config: Any, out_dir: Path, *, eval_only: bool = False, threads: int | None = None) -> dict[str, Any]:
    """Train ``config`` into a fresh ``out_dir`` (no export); return a summary of the run."""
    import torch

    from microzoo.train.loop import load_checkpoint
    from microzoo.train.run import train

    config.training.export = False
    if threads:
        config.training.threads = threads
        torch.set_num_threads(threads)
    if eval_only:
        state = load_checkpoint(out_dir / "checkpoints" / "last.pt")
        history = state["history"]
        return {"minutes": history[-1]["seconds"] / 60, "epochs": len(history), "best_epoch": state["best_epoch"],
                "stopped": state["stopped"] or "?", "figures": {}, "history": history,
                "steps": len(history) * config.training.steps_per_epoch}  # fmt: skip
    if out_dir.exists():
        shutil.rmtree(out_dir)
    log(f"training {config.task} into {out_dir} for at most {config.training.max_minutes} min")
    result = train(config, out_dir=out_dir, progress=StepLogger())
    history = result.history
    summary = {"minutes": history[-1]["seconds"] / 60, "epochs": len(history), "best_epoch": result.best_epoch,
               "stopped": result.stopped, "figures": result.figures, "history": history,
               "steps": len(history) * config.training.steps_per_epoch}  # fmt: skip
    log(
        f"trained {summary['minutes']:.1f} min, {summary['epochs']} epochs (about {summary['steps']} steps, the last "
        f"epoch may be cut by the time limit), best epoch {summary['best_epoch']}, stopped: {summary['stopped']}; "
        f"library QC on its validation images: {result.figures}"
    )
    return summary


def load_network(config: Any, out_dir: Path, *, in_channels: int, out_channels: int):
    """The network of ``config`` with the best checkpoint of ``out_dir``, on the CPU in eval mode."""
    from microzoo.train.tasks.skeleton import build_network, load_best

    network = build_network(config, in_channels=in_channels, out_channels=out_channels)
    return load_best(network, out_dir / "checkpoints" / "best.pt")


#: How a method scored with test-time augmentation (``tta=True``) is named in the tables.
TTA_SUFFIX = " + 8-fold TTA"


def predict(network: Any, raw: np.ndarray, *, depth: int, percentiles=(1.0, 99.8), tta: bool = False) -> np.ndarray:
    """The network's raw output ``(k, y, x)`` for a 2-D grey image in its own units.

    ``tta``: test-time augmentation, the mean of the outputs for the 8 flips and 90-degree
    rotations of the image, each turned back (as the Noise2Void authors' notebook does; 8 times
    the prediction time). The exported packages predict once, without it.
    """
    import torch

    from microzoo.train.data import normalize_percentiles
    from microzoo.train.tasks.skeleton import predict_image

    low, high = percentiles
    image = normalize_percentiles(np.asarray(raw, np.float32)[None], low=low, high=high)
    with torch.no_grad():
        if not tta:
            return predict_image(network, image, multiple=2**depth)
        outputs = []
        for turns in range(4):
            for flip in (False, True):
                view = np.rot90(image, turns, axes=(-2, -1))
                view = view[..., ::-1] if flip else view
                out = predict_image(network, np.ascontiguousarray(view), multiple=2**depth)
                out = out[..., ::-1] if flip else out
                outputs.append(np.rot90(out, -turns, axes=(-2, -1)))
        return np.mean(outputs, axis=0)


def restore(network: Any, raw: np.ndarray, *, depth: int, percentiles=(1.0, 99.8), tta: bool = False) -> np.ndarray:
    """A restoration network's output for a grey image, mapped back to the image's units."""
    from microzoo.train.tasks.care import to_raw_units

    low, high = percentiles
    out = predict(network, raw, depth=depth, percentiles=percentiles, tta=tta)
    return to_raw_units(out, np.asarray(raw, np.float32)[None], low=low, high=high)[0].astype(np.float64)


def psnr_pair(truth: np.ndarray, pred: np.ndarray, data_range: float = 255.0) -> tuple[float, float]:
    """PSNR raw and after the per-image least-squares fit ``a * pred + b``."""
    truth = np.asarray(truth, np.float64)
    return psnr(truth, pred, data_range=data_range), psnr(truth, affine_fit(pred, truth), data_range=data_range)


def table(header: list[str], rows: list[list[object]]) -> None:
    """Print a Markdown table (floats with 3 decimals)."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")
    print(flush=True)


def run_line(summary: dict[str, Any], settings: str) -> None:
    """One line on how long and how the network was trained."""
    print(
        f"Trained {summary['minutes']:.1f} min on this CPU ({summary['epochs']} epochs, about "
        f"{summary['steps']} steps; best epoch {summary['best_epoch']}; stopped by {summary['stopped']}); "
        f"{settings}.\n",
        flush=True,
    )
