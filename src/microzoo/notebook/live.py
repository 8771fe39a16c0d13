"""A live loss plot for :func:`microzoo.train.train`, in a notebook or as text lines elsewhere.

The training loop writes ``OUT/curves/loss.csv`` after every epoch (one row: ``epoch``,
``train_loss``, the validation figures ``val_*``, ``learning_rate``, ``seconds``) and then
calls ``on_epoch``; :class:`LiveLossPlot` reads that file back and redraws, so a resumed run
shows its earlier epochs too. Between epochs ``progress(done, total, description)`` updates
one status line. In a Jupyter kernel both are redrawn in place (an IPython display handle);
anywhere else they are printed as text lines, at most every ``every_seconds``.
"""

from __future__ import annotations

import csv
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from microzoo.errors import ConfigError
from microzoo.notebook.display import Picture

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from microzoo.train import TrainingResult

__all__ = ["LiveLossPlot", "in_jupyter", "loss_figure", "read_loss_csv", "train_live"]

Row = Mapping[str, float]


def read_loss_csv(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """The rows of a ``loss.csv`` as numbers; an empty list while it is not written yet."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]
    except (OSError, ValueError):
        return []


def loss_figure(rows: Sequence[Row]) -> Figure:
    """Training and validation loss per epoch (left), and the validation figures, or the
    learning rate when there are none (right)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 3.3))
    losses, other = figure.subplots(1, 2)
    epochs = [row["epoch"] for row in rows]
    if rows:
        losses.plot(epochs, [row["train_loss"] for row in rows], "o-", label="training loss")
        if "val_loss" in rows[0]:
            losses.plot(epochs, [row["val_loss"] for row in rows], "o-", label="validation loss")
        losses.legend()
        figures = [key for key in rows[0] if key.startswith("val_") and key != "val_loss"]
        for key in figures:
            other.plot(epochs, [row[key] for row in rows], "o-", label=key)
        if not figures and "learning_rate" in rows[0]:
            other.semilogy(epochs, [row["learning_rate"] for row in rows], "o-", label="learning rate")
        other.legend()
    losses.set(xlabel="epoch", ylabel="loss", title="loss")
    other.set(xlabel="epoch", title="validation figures")
    figure.tight_layout()
    return figure


def in_jupyter() -> bool:
    """Whether this runs in a Jupyter kernel (where a display can be redrawn in place)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and hasattr(shell, "kernel")


def _row_text(row: Row) -> str:
    figures = " ".join(f"{key} {value:.4g}" for key, value in row.items() if key not in ("epoch", "seconds"))
    return f"epoch {int(row['epoch'])}: {figures} ({row.get('seconds', 0.0):.0f} s)"


class LiveLossPlot:
    """A progress callback and ``on_epoch`` hook for :func:`microzoo.train.train`.

    Example::

        live = LiveLossPlot("runs/unet")
        result = train(config, out_dir="runs/unet", progress=live, on_epoch=live.on_epoch)
        live.finish(result)

    ``jupyter``: redraw in place (default: when running in a Jupyter kernel); otherwise text
    lines go to ``out`` (default: standard output).
    """

    def __init__(self, out_dir: str | os.PathLike[str], *, every_seconds: float = 3.0,
                 jupyter: bool | None = None, out: IO[str] | None = None) -> None:  # fmt: skip
        self.csv = Path(out_dir) / "curves" / "loss.csv"
        self.every = every_seconds
        self.jupyter = in_jupyter() if jupyter is None else jupyter
        self.out = out
        self.status = ""
        self.redraws = 0
        self._last = -float("inf")
        self._handle: Any = None
        self._png = b""  # the curves as last drawn (redrawn once per epoch, not per status line)
        self._epoch_line = ""

    def rows(self) -> list[dict[str, float]]:
        """The epochs written so far (``OUT/curves/loss.csv``)."""
        return read_loss_csv(self.csv)

    def __call__(self, done: int, total: int, description: str) -> None:
        """The ``progress`` callback: the status line, at most every ``every_seconds``."""
        self.status = f"{description}  [{done}/{total}]"
        now = time.monotonic()
        if now - self._last < self.every and done < total:
            return
        self._last = now
        if self.jupyter:  # the curves as last drawn, under the new status line
            self._update(Picture("", self._png, (self.status, self._epoch_line)))
        else:
            self._print(self.status)

    def on_epoch(self, row: Row) -> None:
        """The ``on_epoch`` hook: redraw the curves from ``loss.csv`` (one text line outside Jupyter)."""
        self._epoch_line = _row_text(row)
        if self.jupyter:
            self._png = Picture.of(loss_figure(self.rows() or [row])).png
            self._update(Picture("", self._png, (self.status, self._epoch_line)))
        else:
            self._print(self._epoch_line)

    def finish(self, result: TrainingResult) -> Picture:
        """Draw the final curves with a summary of the run; returns that picture."""
        lines = summary_lines(result)
        picture = Picture.of(loss_figure(self.rows() or result.history), "loss curves", lines)
        if self.jupyter:
            self._update(picture)
        else:
            self._print("\n".join(lines))
        return picture

    def _update(self, picture: Picture) -> None:
        try:
            from IPython.display import display
        except ImportError:
            raise ConfigError(
                "redrawing the loss plot in place needs IPython, which Jupyter brings: pip install jupyterlab "
                "(or leave jupyter unset for text lines)"
            ) from None
        self.redraws += 1
        if self._handle is None:
            self._handle = display(picture, display_id=True)
        else:
            self._handle.update(picture)

    def _print(self, text: str) -> None:
        print(text, file=self.out or sys.stdout, flush=True)


def summary_lines(result: TrainingResult) -> list[str]:
    """What a finished run did, in a few lines: epochs, time, why it stopped, the epoch kept."""
    minutes = result.history[-1]["seconds"] / 60 if result.history else 0.0
    lines = [
        f"{len(result.history)} epoch{'s' if len(result.history) != 1 else ''} in {minutes:.1f} minutes; "
        f"stopped by {result.stopped}; {result.kept}",
        f"curves: {result.curves_csv} and {result.curves_png.name}",
        *result.notices,
    ]
    check = result.validation
    if check is not None and check.instance_settings:
        lines.append(f"instance settings chosen on the validation images: {dict(check.instance_settings)}")
    return lines


def train_live(config: Any, *, out_dir: str | os.PathLike[str], resume: bool = False,
               every_seconds: float = 3.0) -> TrainingResult:  # fmt: skip
    """:func:`microzoo.train.train` with a :class:`LiveLossPlot`: the curves redraw after every
    epoch, and end with a summary of the run. Returns the :class:`~microzoo.train.TrainingResult`."""
    from microzoo.train import train

    live = LiveLossPlot(out_dir, every_seconds=every_seconds)
    result = train(config, out_dir=out_dir, progress=live, on_epoch=live.on_epoch, resume=resume)
    live.finish(result)
    return result
