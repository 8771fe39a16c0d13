"""Validate a model package against the format with bioimageio.spec, in readable terms."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

from microzoo.errors import MicrozooError, PackageError
from microzoo.package.download import is_url
from microzoo.package.load import (
    SPEC_READ_LOCK,
    ModelPackage,
    check_package_files,
    convert_description,
    iter_file_entries,
    locate_description,
    read_description,
)
from microzoo.progress import ProgressCallback

if TYPE_CHECKING:  # the spec is imported when a description is parsed, not on import
    from bioimageio.spec import InvalidDescr, ResourceDescr


@dataclasses.dataclass(frozen=True)
class Problem:
    """One finding of the validation: where in the description, and what."""

    where: str
    message: str


@dataclasses.dataclass(frozen=True)
class ValidationReport:
    """The outcome of :func:`validate_package`."""

    source: str
    name: str | None
    format_version: str | None
    errors: tuple[Problem, ...]
    warnings: tuple[Problem, ...]

    @property
    def passed(self) -> bool:
        return not self.errors


def validate_package(source: str | os.PathLike[str], *, progress: ProgressCallback | None = None) -> ValidationReport:
    """Check a package: the format (bioimageio.spec, with its warnings) and every file's sha256.

    Problems are collected, not raised, so that the user sees all of them at once; only a
    source that is not a package at all, or a description that is not a YAML mapping, raises
    :class:`~microzoo.errors.PackageError`. The spec reads the package's files (its own checks)
    only after microzoo has checked that every file named lies inside the package.
    """
    path = locate_description(source, progress=progress)
    content = read_description(path)  # refuses what is not a mapping, and alias bombs
    version = str(content.get("format_version", "unknown"))
    descr = _spec_description(path, perform_io_checks=False)
    file_errors: list[Problem] = []
    notes: list[Problem] = []
    is_model = getattr(descr, "type", None) == "model"
    if is_model and not _is_invalid(descr):
        remote: list[str] = []
        try:  # our own file check names the file and the fix, and keeps the spec inside the package
            converted, notices = convert_description(path, content)
            notes += [Problem("conversion", notice) for notice in notices]
            remote = [str(src) for _, src, _ in iter_file_entries(converted) if is_url(str(src))]
            notes += [
                Problem(
                    "files",
                    f"{url} is not downloaded here: it is fetched and checked against its "
                    "sha256 when that file is used",
                )
                for url in remote
            ]
            check_package_files(ModelPackage(converted, path.parent, path, str(source), version, notices))
        except MicrozooError as error:
            file_errors.append(Problem("files", str(error)))
        # the spec's own file checks download every URL, so they run only where there is none
        if not file_errors and not remote:
            descr = _spec_description(path, perform_io_checks=True)
    summary = descr.validation_summary
    errors = [Problem(_where(e.loc), e.msg) for d in summary.details for e in d.errors] + file_errors
    warnings = [Problem(_where(w.loc), w.msg) for d in summary.details for w in d.warnings]
    warnings += notes
    if not is_model and not _is_invalid(descr):
        kind = getattr(descr, "type", "?")
        errors.append(Problem("type", f"this is a '{kind}' description; microzoo runs models only"))
    return ValidationReport(str(source), getattr(descr, "name", None), version, tuple(errors), tuple(warnings))


def _spec_description(path: Path, *, perform_io_checks: bool) -> ResourceDescr | InvalidDescr:
    from bioimageio.spec import load_description

    try:
        with SPEC_READ_LOCK:  # the spec's YAML reader is not thread-safe
            return load_description(path, format_version="discover", perform_io_checks=perform_io_checks)
    except Exception as error:  # YAML the spec's reader refuses (duplicate keys, ...)
        raise PackageError(
            f"cannot read {path} ({type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}): "
            "fix the YAML, or download the package again"
        ) from error


def _is_invalid(descr: object) -> bool:
    from bioimageio.spec import InvalidDescr

    return isinstance(descr, InvalidDescr)


def _where(loc: tuple[object, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "description"
