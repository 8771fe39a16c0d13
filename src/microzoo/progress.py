"""Progress reporting without a terminal.

Library code below the front ends never prints. Long work takes an optional
``progress`` callback and calls it as ``progress(done, total, description)``;
the CLI turns that into a rich progress bar, napari into its own progress widget.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[int, int, str], None]


def no_progress(done: int, total: int, description: str) -> None:
    """The default callback: report nothing."""
