"""What every step of the tour returns, and the small things the steps share.

A step is a function ``(context) -> StepResult``: it calls the library's own verbs (never a copy
of them) and says what it did in a form the page renders (:mod:`microzoo.tour.page`): two
sentences, the command that does it alone, figures, tables, pictures and links to the reports.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from microzoo.progress import ProgressCallback, no_progress

if TYPE_CHECKING:
    from microzoo.tour.zoo_steps import LocalZoo


@dataclasses.dataclass(frozen=True)
class Picture:
    """A figure embedded in the page (a PNG ``data:`` URI) and its caption."""

    caption: str
    uri: str


@dataclasses.dataclass(frozen=True)
class Table:
    """A small table: a caption, the column names and the rows (strings)."""

    caption: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclasses.dataclass(frozen=True)
class StepResult:
    """One step of the tour, as the page shows it.

    ``what`` and ``why`` are the step's two sentences; ``commands`` the command lines that do it
    alone; ``summary`` the one line a terminal prints; ``figures`` (label, value) pairs; ``lines``
    sentences the step found (a trust note's headline, a learning curve's answer); ``reports``
    (label, path) of every report it wrote; ``facts`` what the step measured, for the tests and
    ``tour.json``.
    """

    number: int
    title: str
    what: str
    why: str
    commands: tuple[str, ...]
    summary: str
    figures: tuple[tuple[str, str], ...] = ()
    lines: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()
    pictures: tuple[Picture, ...] = ()
    reports: tuple[tuple[str, Path], ...] = ()
    notices: tuple[str, ...] = ()
    seconds: float = 0.0
    facts: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TourContext:
    """What the steps share: the output folder, the data, the sizes (quick or full), the local zoo,
    the model step 3 trains (steps 5 and 6 use it) and the progress callback of the current step."""

    out: Path
    data: Path
    quick: bool
    progress: ProgressCallback = no_progress
    zoo: LocalZoo | None = None
    trained: Path | None = None  # the Noise2Void package of step 3
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def folder(self, name: str) -> Path:
        """A new or existing folder under the tour's output."""
        path = self.out / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def shown(path: Path | str) -> str:
    """A path as a command line on the page gives it: relative to the working folder when that is
    short (``../shared/data/...``, ``tour-output/...``), else absolute; quoted for the shell."""
    path = Path(path).resolve()
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive
        relative = str(path)
    text = relative if relative.count("..") <= 2 else str(path)
    return shlex.quote(text)


def command(*words: str | Path) -> str:
    """A ``microzoo`` command line from its words (paths shown by :func:`shown`)."""
    return " ".join(["microzoo", *(shown(w) if isinstance(w, Path) else w for w in words)])


def mib(n_bytes: float) -> str:
    """A size in MiB as the page prints it."""
    return f"{n_bytes / 2**20:,.0f} MiB"


def link_images(sources: list[Path], folder: Path) -> Path:
    """``folder`` holding links (copies where links fail) to ``sources`` under their own names: a
    subset of a data folder that the library's folder verbs read as it is."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for source in sources:
        target = folder / source.name
        if target.exists() or target.is_symlink():
            continue
        try:
            target.symlink_to(source.resolve())
        except OSError:
            shutil.copy2(source, target)
    return folder


def write_json(path: Path, data: Any) -> Path:
    """``data`` as indented JSON at ``path`` (written atomically); the path."""
    import json

    from microzoo.io.atomic import atomic_output
    from microzoo.qc.evaluate import json_safe

    with atomic_output(path) as tmp:
        Path(tmp).write_text(json.dumps(json_safe(data), indent=1), encoding="utf-8")
    return path
