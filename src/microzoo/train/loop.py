"""The training loop every task shares.

:func:`fit` trains a network on batches a task draws, one epoch of ``steps_per_epoch``
batches at a time. After each epoch it validates, adapts the learning rate, saves two
checkpoints in ``OUT/checkpoints/`` and the loss curves in ``OUT/curves/``:

- ``best.pt``: the weights with the best validation figure so far;
- ``last.pt``: everything needed to resume (weights, optimizer, scheduler, random states,
  history), so a run interrupted at any point continues from the last finished epoch to the
  same result it would have reached without interruption;
- ``loss.csv`` and ``loss.png``: training loss, validation figures and learning rate per epoch
  (the CSV after every epoch; the drawing, which costs more than a short epoch's validation,
  after the first epoch, then at most every :data:`CURVES_INTERVAL_S` seconds, and after the last).

It stops after ``epochs``, earlier when the validation figure has not improved for
``early_stopping_patience`` epochs, when ``max_minutes`` have passed, or when the caller's
``should_stop()`` says so (checked after every step: a front end's "stop early"); the current
epoch is validated and saved first, so what was learnt is kept. On the CPU with
``deterministic`` the same seed gives the same weights; on a GPU results are close but not
bit-identical.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from microzoo.errors import ConfigError
from microzoo.io.atomic import atomic_output
from microzoo.progress import ProgressCallback, no_progress
from microzoo.runtime.resources import thread_count
from microzoo.train.config import TrainingConfig

__all__ = ["LoopResult", "RunState", "choose_device", "fit", "predict_batches", "torch_settings"]

BatchSampler = Callable[[np.random.Generator], tuple[np.ndarray, ...]]
LossFunction = Callable[..., torch.Tensor]
Validator = Callable[[torch.nn.Module], dict[str, float]]
#: which way the monitored figure improves
Mode = Literal["min", "max"]
#: the loss curves' PNG is redrawn at most this often (and after the last epoch)
CURVES_INTERVAL_S = 30.0
#: ``LoopResult.stopped`` when the caller's ``should_stop`` ended training
USER_STOP = "stopped by the user"
#: reasons to stop that a resumed run continues past
_RESUMABLE = ("time limit", USER_STOP)


def _never() -> bool:
    return False


@dataclass(frozen=True)
class LoopResult:
    """What :func:`fit` did and where it wrote it."""

    best_checkpoint: Path
    last_checkpoint: Path
    curves_csv: Path
    curves_png: Path
    history: list[dict[str, float]]
    best_epoch: int
    best_value: float
    monitor: str
    stopped: str  # "epochs", "early stopping", "time limit" or "stopped by the user"

    def kept(self, keep: str) -> tuple[Path, int]:
        """The checkpoint and epoch that ``training.keep`` chooses: ``"best"`` (validation figure) or ``"last"``."""
        return (self.best_checkpoint, self.best_epoch) if keep == "best" else (self.last_checkpoint, len(self.history))


def choose_device(setting: str) -> torch.device:
    """``"auto"``: the GPU when there is one, else the CPU."""
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device is 'cuda' but no GPU is available; use 'auto' or 'cpu'")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


@contextlib.contextmanager
def torch_settings(settings: TrainingConfig, device: torch.device) -> Iterator[None]:
    """Every core, and deterministic algorithms on the CPU, for the duration of training."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    benchmark = torch.backends.cudnn.benchmark
    torch.set_num_threads(thread_count(settings.threads or None))
    if settings.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.benchmark = benchmark


def predict_batches(network: torch.nn.Module, inputs: np.ndarray, *, batch_size: int = 8) -> np.ndarray:
    """The network's raw output for a stack of patches ``(n, c, *spatial)``, in eval mode."""
    device = next(network.parameters()).device
    outputs = []
    network.eval()
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(inputs[start : start + batch_size])).to(device)
            outputs.append(network(batch).float().cpu().numpy())
    return np.concatenate(outputs)


def cosine_rate(settings: TrainingConfig, done_steps: int, minutes: float) -> float:
    """The cosine schedule's rate: from ``learning_rate`` down to a hundredth of it over the run.

    The run's end is its last step or, when ``max_minutes`` is set and comes sooner, its time
    budget: a time-limited run anneals fully by its deadline instead of stopping at a high rate.
    The time counts from the start of this run (a resumed run has a new budget, as it does for
    stopping).
    """
    fraction = done_steps / (settings.epochs * settings.steps_per_epoch)
    if settings.max_minutes is not None:
        fraction = max(fraction, minutes / settings.max_minutes)
    low = settings.learning_rate / 100
    return low + (settings.learning_rate - low) * (1 + math.cos(math.pi * min(fraction, 1.0))) / 2


def _scheduler(
    settings: TrainingConfig, optimizer: torch.optim.Optimizer, mode: Mode
) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """The plateau scheduler; the cosine (:func:`cosine_rate`) is set step by step in the loop."""
    if settings.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=0.5, patience=settings.plateau_patience, min_lr=settings.learning_rate / 100
        )
    return None


def _improved(value: float, best: float, mode: Mode) -> bool:
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value < best - 1e-8 if mode == "min" else value > best + 1e-8


def _save(state: dict[str, Any], path: Path) -> None:
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _write_csv(history: list[dict[str, float]], csv_path: Path) -> None:
    with atomic_output(csv_path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)


def _draw_curves(history: list[dict[str, float]], png_path: Path, monitor: str) -> None:
    columns = list(history[0])
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.5), layout="constrained")
    FigureCanvasAgg(figure)
    epochs = [row["epoch"] for row in history]
    losses, metric = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    losses.plot(epochs, [row["train_loss"] for row in history], label="training loss")
    if "val_loss" in columns:
        losses.plot(epochs, [row["val_loss"] for row in history], label="validation loss")
    losses.set(xlabel="epoch", ylabel="loss", title="loss")
    losses.legend()
    metric.plot(epochs, [row[monitor] for row in history], color="tab:green")
    metric.set(xlabel="epoch", ylabel=monitor, title=f"validation: {monitor}")
    with atomic_output(png_path) as tmp:
        figure.savefig(tmp, dpi=100)


@dataclass
class RunState:
    """Where a run stands after each epoch: all that :func:`fit` carries from one epoch to the next."""

    rng: np.random.Generator
    history: list[dict[str, float]] = field(default_factory=list)
    epoch: int = 0  # epochs finished
    best_value: float = float("nan")
    best_epoch: int = -1
    stale: int = 0  # epochs since the best
    stopped: str = ""  # "", "epochs", "early stopping", "time limit" or "stopped by the user"

    @property
    def seconds(self) -> float:
        """Training time of the epochs finished (of earlier runs too, after a resume)."""
        return float(self.history[-1]["seconds"]) if self.history else 0.0

    def restore(self, state: dict[str, Any], network: torch.nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: Any) -> None:  # fmt: skip
        """Continue from a ``last.pt`` checkpoint (a resumed run gets a new time budget)."""
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        self.rng.bit_generator.state = json.loads(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        self.history, self.epoch = list(state["history"]), int(state["epoch"]) + 1
        self.best_value, self.best_epoch, self.stale = state["best_value"], state["best_epoch"], state["stale"]
        self.stopped = "" if state["stopped"] in _RESUMABLE else state["stopped"]

    def checkpoint(self, network: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
        """Everything ``last.pt`` holds to resume after this epoch."""
        return {"network": network.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else {},
                "rng": json.dumps(self.rng.bit_generator.state), "torch_rng": torch.get_rng_state(),
                "epoch": self.epoch, "history": self.history, "best_value": self.best_value,
                "best_epoch": self.best_epoch, "stale": self.stale, "stopped": self.stopped}  # fmt: skip

    def record(self, row: dict[str, float], value: float, mode: Mode, settings: TrainingConfig,
               cut: str) -> bool:  # fmt: skip
        """Add an epoch's row; return whether it is the best so far; decide whether to stop
        (``cut``: why the epoch ended early, "time limit" or "stopped by the user"; "" when it did not)."""
        self.history.append(row)
        improved = _improved(value, self.best_value, mode)
        if improved:
            self.best_value, self.best_epoch, self.stale = value, self.epoch + 1, 0
        else:
            self.stale += 1
        if cut:
            self.stopped = cut
        elif settings.early_stopping_patience is not None and self.stale >= settings.early_stopping_patience:
            self.stopped = "early stopping"
        elif self.epoch + 1 >= settings.epochs:
            self.stopped = "epochs"
        return improved


def _train_epoch(network: torch.nn.Module, optimizer: torch.optim.Optimizer, run: RunState, *,
                 sample_batch: BatchSampler, loss_fn: LossFunction, settings: TrainingConfig, device: torch.device,
                 started: float, progress: ProgressCallback, last_figure: str,
                 should_stop: Callable[[], bool]) -> tuple[float, str]:  # fmt: skip
    """One epoch of steps; return the mean loss and why it ended early ("time limit",
    "stopped by the user"; "" when it ran all its steps)."""
    network.train()
    losses: list[float] = []
    total_steps = settings.epochs * settings.steps_per_epoch
    for step in range(settings.steps_per_epoch):
        inputs, *targets = (torch.from_numpy(a).to(device) for a in sample_batch(run.rng))
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network(inputs), *targets)
        if not torch.isfinite(loss):
            raise ConfigError(
                f"training diverged: the loss became {loss.item()} in epoch {run.epoch + 1}, step "
                f"{step + 1}; lower training.learning_rate or check the images for NaN values"
            )
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
        done = run.epoch * settings.steps_per_epoch + step + 1
        progress(done, total_steps, f"epoch {run.epoch + 1}/{settings.epochs} loss {np.mean(losses):.4f} {last_figure}")
        minutes = (time.monotonic() - started) / 60
        if settings.scheduler == "cosine":
            for group in optimizer.param_groups:
                group["lr"] = cosine_rate(settings, done, minutes)
        if settings.max_minutes is not None and minutes >= settings.max_minutes:
            return float(np.mean(losses)), "time limit"
        if should_stop():
            return float(np.mean(losses)), USER_STOP
    return float(np.mean(losses)), ""


def fit(
    network: torch.nn.Module,
    *,
    sample_batch: BatchSampler,
    loss_fn: LossFunction,
    validate: Validator,
    monitor: str,
    mode: Mode,
    settings: TrainingConfig,
    out_dir: Path,
    resume: bool = False,
    progress: ProgressCallback | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> LoopResult:
    """Train ``network`` in place and return where the checkpoints and curves are.

    Parameters
    ----------
    sample_batch : draws one training batch ``(inputs, *targets)`` as NumPy arrays from a generator.
    loss_fn : ``loss_fn(output, *targets)`` -> scalar tensor.
    validate : the validation figures of the network (in eval mode), including ``monitor``.
    monitor, mode : the figure that picks the best epoch, and whether lower (``"min"``) or
        higher (``"max"``) is better.
    resume : continue from ``OUT/checkpoints/last.pt``; without it an existing run is an error.
    progress : called after every step as ``progress(step, total_steps, "epoch e/E loss ... monitor ...")``.
    on_epoch : called with each epoch's row of the history (after it was saved), e.g. to draw
        a live loss curve; it runs in the training thread.
    should_stop : checked after every step; when it returns True the epoch ends there, is
        validated and saved, and training stops (``LoopResult.stopped`` "stopped by the user").
        A resumed run continues such a run.
    """
    progress = progress or no_progress
    paths = _RunPaths.under(Path(out_dir))
    if paths.last.exists() and not resume:
        raise ConfigError(
            f"{out_dir} already holds a training run; resume it (--resume, resume=True) or choose another output folder"
        )
    device = choose_device(settings.device)
    network.to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    scheduler = _scheduler(settings, optimizer, mode)
    run = RunState(rng=np.random.default_rng(settings.seed))
    if resume and paths.last.exists():
        run.restore(load_checkpoint(paths.last), network, optimizer, scheduler)
    started, earlier = time.monotonic(), run.seconds
    drawn = -math.inf  # when the PNG was last drawn: the first epoch draws it
    last_figure = f"{monitor} {run.history[-1][monitor]:.4f}" if run.history else f"{monitor} -"
    with torch_settings(settings, device):
        while not run.stopped and run.epoch < settings.epochs:
            loss, cut = _train_epoch(network, optimizer, run, sample_batch=sample_batch, loss_fn=loss_fn,
                                     settings=settings, device=device, started=started, progress=progress,
                                     last_figure=last_figure, should_stop=should_stop or _never)  # fmt: skip
            network.eval()
            with torch.no_grad():
                figures = {name: float(value) for name, value in validate(network).items()}
            value = figures[monitor]
            if scheduler is not None:  # the plateau scheduler, the only one kept as an object
                scheduler.step(value)
            rate = optimizer.param_groups[0]["lr"]
            row = {"epoch": run.epoch + 1, "train_loss": loss, **figures, "learning_rate": rate,
                   "seconds": earlier + time.monotonic() - started}  # fmt: skip
            if run.record(row, value, mode, settings, cut):
                _save({"network": network.state_dict(), "epoch": run.epoch + 1, "monitor": monitor, "value": value},
                      paths.best)  # fmt: skip
            _save(run.checkpoint(network, optimizer, scheduler), paths.last)
            _write_csv(run.history, paths.csv)
            if run.stopped or time.monotonic() - drawn >= CURVES_INTERVAL_S:
                _draw_curves(run.history, paths.png, monitor)
                drawn = time.monotonic()
            last_figure = f"{monitor} {value:.4f}"
            if on_epoch is not None:
                on_epoch(row)
            run.epoch += 1
    if not run.history:
        raise ConfigError(f"nothing was trained: {out_dir} holds no epoch; check training.epochs")
    return LoopResult(paths.best, paths.last, paths.csv, paths.png, run.history, run.best_epoch,
                      float(run.best_value), monitor, run.stopped or "epochs")  # fmt: skip


@dataclass(frozen=True)
class _RunPaths:
    """Where a run writes its checkpoints and curves."""

    best: Path
    last: Path
    csv: Path
    png: Path

    @classmethod
    def under(cls, out: Path) -> _RunPaths:
        checkpoints, curves = out / "checkpoints", out / "curves"
        return cls(checkpoints / "best.pt", checkpoints / "last.pt", curves / "loss.csv", curves / "loss.png")
