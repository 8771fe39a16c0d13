"""``microzoo tour``: six steps on real data, one page (see :mod:`microzoo.tour`)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from microzoo.errors import MicrozooError
from microzoo.io.atomic import atomic_output
from microzoo.io.files import shared_data_dir
from microzoo.progress import ProgressCallback, no_progress
from microzoo.tour.common import StepResult, TourContext, write_json

#: the steps in order: (title as the terminal shows it, the function's module and name)
STEPS: tuple[tuple[str, str, str], ...] = (
    ("a local zoo and the example model", "zoo_steps", "step_zoo"),
    ("nuclei, the classical method and the trust note", "nuclei", "step_nuclei"),
    ("Noise2Void against BM3D and a Gaussian", "denoise", "step_denoise"),
    ("the learning curve", "curve", "step_curve"),
    ("publish, search, run with bioimageio.core", "zoo_steps", "step_publish"),
    ("an 8192x8192 image, streamed", "large", "step_large"),
)


@dataclasses.dataclass(frozen=True)
class TourResult:
    """The steps that ran, the page, and the steps that failed (``"N. title: the error"``)."""

    steps: tuple[StepResult, ...]
    page: Path
    failed: tuple[str, ...]
    seconds: float
    quick: bool


def run_tour(
    out: str | Path,
    *,
    data: str | Path | None = None,
    quick: bool = False,
    progress: ProgressCallback | None = None,
    on_step: Callable[[StepResult], None] | None = None,
) -> TourResult:
    """Run the six steps into ``out`` and write ``out/tour.html`` (and ``tour.json``).

    ``data``: the shared data (default :func:`~microzoo.io.files.shared_data_dir`); ``quick``:
    the same steps at tiny sizes. ``progress(done, total, description)`` reports within a step,
    its description prefixed by ``"N/6 "``; ``on_step`` receives each step's result as it ends.
    A step that fails with a :class:`~microzoo.errors.MicrozooError` is reported on the page and
    the tour goes on (a step that needs it is then skipped); the local zoo is always stopped.
    """
    import importlib

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    ctx = TourContext(out=out, data=Path(data).resolve() if data else shared_data_dir(), quick=quick)
    report = progress or no_progress
    steps: list[StepResult] = []
    failed: list[str] = []
    start = time.perf_counter()
    try:
        for number, (title, module, name) in enumerate(STEPS, start=1):

            def step_progress(done: int, total: int, what: str, number: int = number) -> None:
                report(done, total, f"{number}/{len(STEPS)} {what}")

            ctx.progress = step_progress
            step_progress(0, 1, title)
            function = getattr(importlib.import_module(f"microzoo.tour.{module}"), name)
            try:
                result = function(ctx)
            except MicrozooError as error:
                failed.append(f"{number}. {title}: {error}")
                continue
            steps.append(result)
            if on_step is not None:
                on_step(result)
    finally:
        if ctx.zoo is not None:
            ctx.zoo.stop()
    seconds = time.perf_counter() - start
    page = write_page(steps, out=out, quick=quick, seconds=seconds, failed=failed)
    write_json(out / "tour.json", {"quick": quick, "seconds": seconds, "failed": failed,
                                   "steps": [_step_json(s) for s in steps]})  # fmt: skip
    return TourResult(tuple(steps), page, tuple(failed), seconds, quick)


def write_page(steps: list[StepResult], *, out: Path, quick: bool, seconds: float, failed: list[str]) -> Path:
    from microzoo.tour.page import render_page

    path = out / "tour.html"
    html = render_page(steps, out=out, quick=quick, seconds=seconds, failed=failed)
    with atomic_output(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return path


def _step_json(step: StepResult) -> dict[str, object]:
    return {
        "number": step.number, "title": step.title, "summary": step.summary, "commands": list(step.commands),
        "figures": dict(step.figures), "lines": list(step.lines), "seconds": step.seconds,
        "reports": {label: str(path) for label, path in step.reports}, "facts": dict(step.facts),
    }  # fmt: skip
