"""The zoo's folder, and publishing into it all-or-nothing.

Layout under ``ROOT``::

    files/NAME/VERSION/...     the package's files, exactly the bytes served (rdf.yaml first of all)
    files/NAME/VERSION.zip     the same package as one zip (deepImageJ's "install from URL")
    staging/PID-UUID/          an upload being checked (``zoo.ingest`` writes it)
    try/                       inputs and outputs of "try it" jobs
    publish.lock               held (flock) by a publish, and by :func:`remove_orphans`
    zoo.sqlite(.lock)          the embedded index, and the lock held while a process opens and migrates it

A publish renames the checked staging folder to ``files/NAME/VERSION``, writes the zip under a
temporary name and renames it, and only then commits the version's rows. A process killed before
the commit leaves files without a row; :func:`remove_orphans` (run when a ``Zoo`` starts) deletes
them. It takes ``publish.lock`` so that it never sees a publish of another process half-way.

Test hook: with ``MICROZOO_ZOO_CRASH_AT=POINT`` set, a publish kills its own process (SIGKILL) at
that point (:data:`CRASH_POINTS`); with ``POINT:pause=SECONDS`` it waits there. The crash-safety
tests use it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from microzoo.errors import ZooNotFound
from microzoo.io.atomic import atomic_output, exclusive_lock, process_running

#: where a publish can be killed by the test hook, in order
CRASH_POINTS = ("staged", "renamed", "zipped", "in_transaction", "committed")
CRASH_ENV = "MICROZOO_ZOO_CRASH_AT"
#: staging folders of a live process are kept unless older than this (an upload never takes a day)
STAGING_MAX_AGE_S = 24 * 3600


def crash_point(point: str) -> None:
    """Test hook: ``POINT`` kills this process (SIGKILL) at ``point``, ``POINT:pause=S`` waits S seconds there."""
    wanted, _, pause = os.environ.get(CRASH_ENV, "").partition(":pause=")
    if wanted != point:
        return
    if pause:
        time.sleep(float(pause))
    else:
        os.kill(os.getpid(), signal.SIGKILL)


def files_dir(root: Path) -> Path:
    return root / "files"


def version_dir(root: Path, name: str, version: str) -> Path:
    return root / "files" / name / version


def zip_file(root: Path, name: str, version: str) -> Path:
    return root / "files" / name / f"{version}.zip"


def new_staging_dir(root: Path) -> Path:
    """A new empty folder ``ROOT/staging/PID-UUID`` for one upload."""
    folder = root / "staging" / f"{os.getpid()}-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    return folder


def file_in_version(root: Path, name: str, version: str, relative: str) -> Path:
    """The stored file ``relative`` of a version; :class:`ZooNotFound` if missing or outside the version."""
    base = version_dir(root, name, version).resolve()
    path = (base / relative).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        raise ZooNotFound(f"{name}/{version} has no file {relative!r}")
    return path


@contextlib.contextmanager
def publish_lock(root: Path) -> Iterator[None]:
    """Hold ``ROOT/publish.lock`` exclusively (released by the kernel if the process dies)."""
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / "publish.lock"):
        yield


def sha256_and_size(path: Path) -> tuple[str, int]:
    """A stored file's sha256 (``package.load.sha256_of``, the one the descriptions are checked with) and size."""
    from microzoo.package.load import sha256_of

    return sha256_of(path), path.stat().st_size


def move_into_place(staging: Path, root: Path, name: str, version: str) -> tuple[Path, Path]:
    """Rename ``staging`` to ``files/NAME/VERSION`` and write ``VERSION.zip``; return both paths.

    Call it holding :func:`publish_lock`, after checking that the index has no such version: a
    folder already there is then a crashed publish's leftover and is replaced.
    """
    crash_point("staged")
    target = version_dir(root, name, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove(target)
    _remove(zip_file(root, name, version))
    os.replace(staging, target)
    crash_point("renamed")
    with atomic_output(zip_file(root, name, version)) as tmp:
        write_zip(target, tmp)
    crash_point("zipped")
    return target, zip_file(root, name, version)


def write_zip(folder: Path, target: Path) -> None:
    """Zip every file under ``folder`` (relative names, sorted, deflated) into ``target``."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())


def remove_version_files(root: Path, name: str, version: str) -> None:
    """Delete a version's folder and zip (a publish whose transaction failed)."""
    _remove(version_dir(root, name, version))
    _remove(zip_file(root, name, version))
    _remove(zip_file(root, name, version))


def stored_versions(root: Path) -> tuple[set[tuple[str, str]], list[Path]]:
    """The (name, version) pairs with a folder or zip in ``files/``, and other entries found there."""
    found: set[tuple[str, str]] = set()
    stray: list[Path] = []
    if not files_dir(root).is_dir():
        return found, stray
    for model in files_dir(root).iterdir():
        if not model.is_dir():
            stray.append(model)
            continue
        for entry in model.iterdir():
            if entry.name.startswith("."):
                stray.append(entry)  # a zip's temporary left by a killed process
            elif entry.is_dir():
                found.add((model.name, entry.name))
            elif entry.suffix == ".zip":
                found.add((model.name, entry.name.removesuffix(".zip")))
            else:
                stray.append(entry)
    return found, stray


def check_consistency(root: Path, indexed: set[tuple[str, str]]) -> list[str]:
    """Problems between the folder and the index ``indexed`` (name, version pairs); [] when consistent."""
    found, stray = stored_versions(root)
    problems = [f"stray entry in files/: {p.relative_to(root)}" for p in stray]
    for name, version in sorted(found - indexed):
        problems.append(f"files of {name}/{version} without a version in the index")
    for name, version in sorted(indexed):
        if not version_dir(root, name, version).is_dir():
            problems.append(f"{name}/{version} is in the index but its folder is missing")
        if not zip_file(root, name, version).is_file():
            problems.append(f"{name}/{version} is in the index but its zip is missing")
    return problems


def remove_orphans(root: Path, indexed: Callable[[], set[tuple[str, str]]]) -> int:
    """Delete leftovers of killed processes; return how many entries went.

    Removes files of versions the index does not know, temporaries in ``files/``, empty model
    folders and staging folders whose process is gone. ``indexed`` is called holding the publish
    lock, so that no publish is half-way while the folder and the index are compared.
    """
    removed = 0
    with publish_lock(root):
        found, stray = stored_versions(root)
        known = indexed()
        for name, version in found - known:
            remove_version_files(root, name, version)
            removed += 1
        for path in stray:
            if path.name.startswith("."):
                _remove(path)
                removed += 1
        removed += _remove_empty_model_folders(root)
    return removed + _remove_stale_staging(root)


def _remove_empty_model_folders(root: Path) -> int:
    removed = 0
    if files_dir(root).is_dir():
        for model in files_dir(root).iterdir():
            if model.is_dir() and not any(model.iterdir()):
                model.rmdir()
                removed += 1
    return removed


def _remove_stale_staging(root: Path) -> int:
    staging = root / "staging"
    if not staging.is_dir():
        return 0
    removed = 0
    for folder in staging.iterdir():
        pid = folder.name.split("-", 1)[0]
        old = time.time() - folder.stat().st_mtime > STAGING_MAX_AGE_S
        # a folder named PID-UUID (new_staging_dir) goes with its process; any other only when old
        gone = "-" in folder.name and pid.isdigit() and not process_running(int(pid))
        if gone or old:
            _remove(folder)
            removed += 1
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
