"""The tour's page: one self-contained HTML file (figures embedded) that links every report."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from microzoo.tour.common import StepResult, command

TEMPLATES = Path(__file__).parent / "templates"


def render_page(
    steps: Sequence[StepResult], *, out: Path, quick: bool, seconds: float, failed: Sequence[str] = ()
) -> str:
    """The page's HTML: the steps in order, each report linked relative to ``out``."""
    from microzoo import __version__
    from microzoo.qc.report import html_templates
    from microzoo.runtime.resources import thread_count

    views = []
    for step in steps:
        view = dataclasses.asdict(step) | {"pictures": step.pictures, "tables": step.tables}
        view["links"] = [(label, _href(path, out)) for label, path in step.reports]
        views.append(view)
    minutes = f"{seconds / 60:.1f} minutes" if seconds >= 90 else f"{seconds:.0f} s"
    return html_templates(TEMPLATES).get_template("tour.html.j2").render(
        steps=views, quick=quick, minutes=minutes, cores=thread_count(), version=__version__,
        when=time.strftime("%Y-%m-%d %H:%M"), out=str(out), failed=list(failed),
        serve=command("serve", "--root", out / "zoo", "--port", "8000"),
    )  # fmt: skip


def _href(path: Path, out: Path) -> str:
    return quote(os.path.relpath(Path(path).resolve(), out.resolve()).replace(os.sep, "/"))
