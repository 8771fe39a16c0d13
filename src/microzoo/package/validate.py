"""Validate a model package against the format with bioimageio.spec, in readable terms."""

from __future__ import annotations

import dataclasses
import os

from microzoo.errors import MicrozooError
from microzoo.package.load import (
    ModelPackage,
    check_package_files,
    locate_description,
    parse_description,
    read_format_version,
)
from microzoo.progress import ProgressCallback


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
    source that is not a package at all raises :class:`~microzoo.errors.PackageError`.
    """
    from bioimageio.spec import InvalidDescr, load_description

    path = locate_description(source, progress=progress)
    descr = load_description(path, format_version="discover", perform_io_checks=True)
    summary = descr.validation_summary
    errors = [Problem(_where(e.loc), e.msg) for d in summary.details for e in d.errors]
    warnings = [Problem(_where(w.loc), w.msg) for d in summary.details for w in d.warnings]
    name = getattr(descr, "name", None)
    version = read_format_version(path)
    if not isinstance(descr, InvalidDescr) and getattr(descr, "type", None) == "model":
        try:  # our own file check names the file and the fix; add it where the spec said nothing
            package = ModelPackage(parse_description(path), path.parent, path, str(source), str(version))
            check_package_files(package)
        except MicrozooError as error:
            errors.append(Problem("files", str(error)))
    elif getattr(descr, "type", "model") != "model":
        errors.append(Problem("type", f"this is a '{descr.type}' description; microzoo runs models only"))
    return ValidationReport(str(source), name, str(version) if version else None, tuple(errors), tuple(warnings))


def _where(loc: tuple[object, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "description"
