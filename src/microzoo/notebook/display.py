"""What the notebook helpers return: pictures and tables that Jupyter shows and a terminal prints.

Each object has ``_repr_html_`` (or ``_repr_markdown_``), which Jupyter uses when the object is
the last expression of a cell, and a plain-text ``str`` for a script or a log; no IPython import.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: one panel of a row: its title, the 2-D (or RGB) array, and options for ``imshow``
Panel = tuple[str, np.ndarray, dict[str, Any]]


@dataclass(frozen=True)
class Picture:
    """A drawn figure (PNG; empty: text only), its title (the figure shows it; text output and
    ``alt`` repeat it) and the lines of text that go with it."""

    title: str
    png: bytes
    lines: tuple[str, ...] = ()

    @classmethod
    def of(cls, figure: Figure, title: str = "", lines: Sequence[str] = ()) -> Picture:
        """The figure rendered to PNG (90 dpi, as in the QC report)."""
        from microzoo.qc.report import png_uri

        encoded = png_uri(figure).removeprefix("data:image/png;base64,")
        return cls(title, base64.b64decode(encoded), tuple(lines))

    def save(self, path: str | Path) -> Path:
        """Write the PNG to ``path``."""
        path = Path(path)
        path.write_bytes(self.png)
        return path

    def _repr_html_(self) -> str:
        text = "".join(f"<div>{html.escape(line)}</div>" for line in self.lines if line)
        if not self.png:  # nothing drawn yet: the text alone
            return text
        source = "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")
        return f'{text}<img src="{source}" alt="{html.escape(self.title)}" style="max-width:100%">'

    def __str__(self) -> str:
        shown = f"[picture: {self.title}]" if self.title else "[picture]"
        return "\n".join([*self.lines, shown])

    def __repr__(self) -> str:
        return str(self)


def row_of_images(panels: Sequence[Panel], title: str, lines: Sequence[str] = ()) -> Picture:
    """Panels side by side (grey unless the options say otherwise, no axes), ``title`` above."""
    from matplotlib.figure import Figure

    size = 2.6 if len(panels) > 4 else 3.0
    figure = Figure(figsize=(size * len(panels), size + 0.5))
    for ax, (name, array, options) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        ax.imshow(array, **{"cmap": "gray", "interpolation": "nearest", **options})
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return Picture.of(figure, title, lines)


@dataclass(frozen=True)
class Pictures:
    """Several pictures shown one below the other, after a few lines of text."""

    pictures: tuple[Picture, ...]
    lines: tuple[str, ...] = ()
    links: tuple[tuple[str, str], ...] = field(default=())  # (text, target) shown as links

    def __len__(self) -> int:
        return len(self.pictures)

    def __getitem__(self, index: int) -> Picture:
        return self.pictures[index]

    def _repr_html_(self) -> str:
        head = "".join(f"<div>{html.escape(line)}</div>" for line in self.lines)
        links = "".join(
            f'<div><a href="{html.escape(target)}" target="_blank">{html.escape(text)}</a></div>'
            for text, target in self.links
        )
        return head + "".join(f"<div>{p._repr_html_()}</div>" for p in self.pictures) + links

    def __str__(self) -> str:
        parts = [*self.lines, *(str(p) for p in self.pictures), *(f"{text}: {target}" for text, target in self.links)]
        return "\n".join(parts)

    def __repr__(self) -> str:
        return str(self)


@dataclass(frozen=True)
class Table:
    """A table (header and rows of text) with lines before and after it; Markdown in Jupyter."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    before: tuple[str, ...] = ()
    after: tuple[str, ...] = ()

    def markdown(self) -> str:
        """The table in Markdown, with its lines of text."""
        table = []
        if self.columns:
            table = ["| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
            table += ["| " + " | ".join(row) + " |" for row in self.rows]
        blocks = ["\n".join(self.before), "\n".join(table), "\n\n".join(self.after)]
        return "\n\n".join(block for block in blocks if block)

    def _repr_markdown_(self) -> str:
        return self.markdown()

    def __str__(self) -> str:
        return self.markdown()

    def __repr__(self) -> str:
        return self.markdown()
