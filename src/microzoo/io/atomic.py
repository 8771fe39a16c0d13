"""Write files and folders completely or not at all.

Every output microzoo writes goes to a temporary name beside its target and is renamed
onto the target only once it is complete, so an interrupted or failed run never leaves
a half-written file that looks finished. Temporaries are named
``.<stem>.partial-<pid>-<random><suffix>``; those a killed process left behind (its process
is gone) are removed the next time the same target is written.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


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
    remove_stale_temporaries(target)
    # keep the suffix so that libraries choosing a format by extension still do
    tmp = target.with_name(f".{target.stem}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}{target.suffix}")
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


def remove_stale_temporaries(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries of ``target`` whose writing process is gone; return them.

    Temporaries of a process still running (another microzoo writing the same file) are kept.
    """
    target = Path(target)
    pattern = re.compile(rf"\.{re.escape(target.stem)}\.partial-(?:(\d+)-)?[0-9a-f]{{8}}{re.escape(target.suffix)}")
    try:
        candidates = list(target.parent.iterdir())
    except OSError:
        return []
    removed = []
    for path in candidates:
        match = pattern.fullmatch(path.name)
        if match is None or (match.group(1) and process_running(int(match.group(1)))):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def process_running(pid: int) -> bool:
    """Whether a process ``pid`` exists (this one, or another user's, counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or a number no process can have
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created when missing; its folder must exist) for the block.

    Processes on one machine queue on it; the kernel releases it when its holder dies, so a
    killed process never leaves a lock that blocks the next one.
    """
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
