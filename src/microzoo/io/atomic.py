"""Write files and folders completely or not at all.

Every output microzoo writes goes to a temporary name beside its target and is renamed
onto the target only once it is complete, so an interrupted or failed run never leaves
a half-written file that looks finished.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success.

    Works for files and for folders (a Zarr store, a package folder). On an exception the
    temporary is removed and ``target`` is left as it was.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> with atomic_output(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> (d / "a.txt").read_text()
    'hello'
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # keep the suffix so that libraries choosing a format by extension still do
    tmp = target.with_name(f".{target.stem}.partial-{uuid.uuid4().hex[:8]}{target.suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary output {tmp}")
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise
