"""Check an upload before the zoo stores it: a zip (bytes or file) or a folder in, a checked staging folder out.

:func:`ingest_upload` unpacks the upload into ``staging``, a new folder for this one upload
(``Zoo.new_staging_dir()`` gives one under ``ROOT/staging``), and checks, in this order,
cheapest and most dangerous first, refusing with :class:`~microzoo.errors.UploadError`
(``status`` 400 unsafe, 413 too large, 422 not a valid package) and removing ``staging``:

1. size: the upload past ``max_bytes`` (413); a zip past :data:`ZOO_ZIP_LIMITS` (a zip bomb, 413);
   member names outside the package, symbolic links (zip members or folder entries) (400);
2. the description: one of ``bioimageio.yaml``/``rdf.yaml``; YAML aliases bounded (400);
   its own ``id``/``version`` agree with the ``name``/``version`` asked for (422);
3. every file it names: inside the package, not absolute (400), local (a zoo stores whole
   packages, 422), present with its sha256 (422);
4. documentation: markdown with scripts, event handlers or ``javascript:`` links, HTML or SVG
   with scripts (400, naming the file; never cleaned silently); past :data:`MAX_DOCUMENT_BYTES` (413);
5. weights: pickles holding more than tensors (400; :mod:`microzoo.zoo.pickles`);
6. the format: bioimageio.spec's validation (422, every error listed; warnings kept as problems).

The checked package's description is stored as ``rdf.yaml`` (the name bioimageio's routes serve),
byte for byte, with ``id`` and ``version`` appended where they were given and absent
(:func:`write_identity`); every other file is kept byte for byte. No code of the package runs:
weights are read as data only, the architecture source is never imported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import json
import os
import shutil
import stat
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from microzoo.errors import ArchiveSizeError, ChecksumError, PackageError, UploadError
from microzoo.package.archive import ZipLimits, check_zip_members
from microzoo.package.download import is_url
from microzoo.package.load import (
    DESCRIPTION_NAMES,
    ModelPackage,
    check_package_files,
    convert_description,
    iter_file_entries,
    path_inside,
    read_description,
)
from microzoo.package.validate import validate_package
from microzoo.progress import ProgressCallback
from microzoo.zoo.markdown import dropped_markdown, unsafe_html, unsafe_markdown
from microzoo.zoo.pickles import check_pickled_weights
from microzoo.zoo.summary import PackageSummary, summarize_package

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_UPLOAD_BYTES",
    "ZOO_ZIP_LIMITS",
    "IngestResult",
    "PackageSummary",
    "ingest_upload",
    "write_identity",
]

#: The largest upload (zip, or folder in all) a zoo accepts by default; the server passes its own.
MAX_UPLOAD_BYTES = 1 << 30
#: The zoo's zip caps, smaller than the runner's (4 GiB, 200:1 over 16 MiB, 100 000 members): an
#: upload may extract to 2 GiB in all, in at most 10 000 files, and no member over 4 MiB may
#: compress more than 200:1.
ZOO_ZIP_LIMITS = ZipLimits(max_total_bytes=2 << 30, max_ratio=200, ratio_check_bytes=4 << 20, max_members=10_000)
#: The largest markdown, HTML or SVG file checked (and rendered) for a page; READMEs are kilobytes.
MAX_DOCUMENT_BYTES = 16 << 20
#: The description's name in the zoo (what ``/artifacts/{id}/files/rdf.yaml`` serves).
STORED_DESCRIPTION = "rdf.yaml"
_TOO_LARGE_ADVICE = "If the package is genuine, ask this zoo's administrator to take it in"
_MARKDOWN = (".md", ".markdown")
_HTML = (".html", ".htm", ".xhtml", ".svg")
_STEPS = 6


@dataclasses.dataclass(frozen=True)
class IngestResult:
    """A checked upload: ``folder`` (the staging folder) holds the whole package, described by ``rdf.yaml``."""

    folder: Path
    summary: PackageSummary
    problems: tuple[str, ...]  # validation warnings and what the documentation's sanitiser leaves out


def ingest_upload(
    data: bytes | Path,
    *,
    staging: Path,
    name: str | None = None,
    version: str | None = None,
    max_bytes: int = MAX_UPLOAD_BYTES,
    zip_limits: ZipLimits = ZOO_ZIP_LIMITS,
    progress: ProgressCallback | None = None,
) -> IngestResult:
    """Unpack and check an upload (zip bytes, a zip file or a package folder) into ``staging``.

    ``staging`` is a folder for this upload only: absent or empty. The result's ``folder`` is
    ``staging``; the caller moves it into place (``Zoo.publish_upload``).

    Raises
    ------
    UploadError
        The upload is unsafe (400), too large (413) or not a valid package (422); ``staging`` is
        removed, so nothing of the upload is left.
    ValueError
        ``staging`` holds files already (a programming error: give each upload its own folder).
    """
    if staging.exists() and any(staging.iterdir()):
        raise ValueError(f"{staging} is not empty: give each upload a new staging folder")
    staging.mkdir(parents=True, exist_ok=True)
    folder = staging
    try:
        return _ingest(data, folder, name=name, version=version, max_bytes=max_bytes, zip_limits=zip_limits,
                       step=_stepper(progress))  # fmt: skip
    except PackageError as error:  # what package/ raised outside the mapped steps: not a valid package
        shutil.rmtree(folder, ignore_errors=True)
        raise UploadError(_without(folder, str(error)), status=422) from error
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _ingest(
    data: bytes | Path, folder: Path, *, name: str | None, version: str | None, max_bytes: int,
    zip_limits: ZipLimits, step: Callable[[str], None],
) -> IngestResult:  # fmt: skip
    step("unpacking")
    with _refusing(folder, 400):
        problems = _unpack(data, folder, max_bytes=max_bytes, zip_limits=zip_limits)
    step("reading the description")
    package = _described_package(folder, name=name, version=version)
    step("checking files")
    _check_files(package)
    step("checking documentation")
    problems += _check_documents(folder)
    step("checking weights")
    check_pickled_weights(package)
    step("validating")
    with _refusing(folder, 422):
        report = validate_package(folder)
    if not report.passed:
        errors = "; ".join(f"{p.where}: {p.message}" for p in report.errors)
        raise UploadError(f"the package is not a valid model package: {_without(folder, errors)[:3000]}", status=422)
    problems += [f"{p.where}: {p.message}" for p in report.warnings]
    summary = summarize_package(package)
    step("done")
    return IngestResult(folder=folder, summary=summary, problems=tuple(problems))


@contextlib.contextmanager
def _refusing(folder: Path, status: int) -> Iterator[None]:
    """A ``PackageError`` raised inside becomes an ``UploadError`` of ``status`` (413 for a zip
    past the caps, 422 for a sha256 mismatch), its message without the staging folder's path."""
    try:
        yield
    except PackageError as error:
        code = 413 if isinstance(error, ArchiveSizeError) else 422 if isinstance(error, ChecksumError) else status
        raise UploadError(_without(folder, str(error)), status=code) from error


def _without(folder: Path, message: str) -> str:
    """``message`` with the staging folder's path left out (the uploader knows the package, not the server)."""
    for prefix in {str(folder.resolve()), str(folder)}:
        message = message.replace(f"microzoo validate {prefix}", "microzoo validate PACKAGE")
        message = message.replace(prefix + os.sep, "").replace(prefix, "the package")
    return message


def write_identity(folder: Path, *, name: str | None, version: str | None) -> None:
    """Set ``id`` and ``version`` in ``folder/rdf.yaml`` where given and absent, keeping every other byte.

    The keys are appended to the text; where that would not parse as the same mapping plus the
    two keys (a flow-style or multi-document file), the description is written again as plain YAML.

    Raises
    ------
    UploadError
        The description has another ``id``/``version`` than the one given (422).
    """
    path = folder / STORED_DESCRIPTION
    content = read_description(path)
    wanted = {"id": name, "version": version}
    added = {}
    for key, value in wanted.items():
        if value is None:
            continue
        if key in content and str(content[key]) != str(value):
            raise UploadError(
                f"the package's description says {key}: {content[key]}, but it is uploaded as {key} {value}: "
                f"remove {key} from the description, or upload it as {content[key]}",
                status=422,
            )
        if key not in content:
            added[key] = str(value)
    if not added:
        return
    text = path.read_text(encoding="utf-8")
    appended = text.rstrip("\n") + "\n" + "".join(f"{key}: {json.dumps(value)}\n" for key, value in added.items())
    path.write_text(appended, encoding="utf-8")
    try:
        kept = read_description(path) == {**content, **added}
    except PackageError:  # appending broke it (a JSON or flow-style description)
        kept = False
    if not kept:
        import yaml

        path.write_text(yaml.safe_dump({**content, **added}, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _stepper(progress: ProgressCallback | None) -> Callable[[str], None]:
    done = [0]

    def step(description: str) -> None:
        if progress is not None:
            progress(min(done[0], _STEPS), _STEPS, description)
        done[0] += 1

    return step


# -- 1. unpack ------------------------------------------------------------------------------------


def _unpack(data: bytes | Path, folder: Path, *, max_bytes: int, zip_limits: ZipLimits) -> list[str]:
    """Unpack the upload into ``folder``; returns what was left out (macOS metadata), as problems."""
    if isinstance(data, Path) and not data.exists():
        raise UploadError(f"no file or folder at {data}: give a package zip or folder", status=422)
    if isinstance(data, Path) and data.is_dir():
        _copy_folder(data, folder, max_bytes=max_bytes)
    else:
        size = len(data) if isinstance(data, bytes) else data.stat().st_size
        _refuse_size(size, max_bytes, "the upload")
        source = "the uploaded zip"
        try:
            with zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data) as archive:
                check_zip_members(source, archive.infolist(), limits=zip_limits, advice=_TOO_LARGE_ADVICE)
                archive.extractall(folder)  # checks each member's CRC as it goes
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError) as error:
            raise UploadError(
                f"{source} is not a readable zip archive ({error}): zip the package again", status=422
            ) from error
        except OSError as error:
            if error.errno not in (errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL):
                raise  # a full disk is the server's problem, not the upload's
            where = _without(folder, str(error.filename))
            raise UploadError(f"{source} cannot be unpacked: {error.strerror} ({where})", status=422) from None
    return _unwrap_single_folder(folder)


def _refuse_size(size: int, max_bytes: int, what: str) -> None:
    if size > max_bytes:
        raise UploadError(
            f"{what} is {size / (1 << 20):,.1f} MiB, more than this zoo accepts ({max_bytes / (1 << 20):,.1f} MiB)",
            status=413,
        )


def _copy_folder(source: Path, folder: Path, *, max_bytes: int) -> None:
    """Copy a package folder, refusing symbolic links and special files before anything is copied."""
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(source):
        for entry in [*dirnames, *filenames]:
            path = Path(dirpath) / entry
            mode = path.lstat().st_mode
            relative = path.relative_to(source)
            if stat.S_ISLNK(mode):
                raise UploadError(
                    f"the package folder holds a symbolic link ({relative}): refused, a package holds its files "
                    "themselves. Copy the file the link points to into the package",
                    status=400,
                )
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise UploadError(f"the package folder holds {relative}, which is not a file: refused", status=400)
            if stat.S_ISREG(mode):
                files.append(relative)
    _refuse_size(sum((source / f).stat().st_size for f in files), max_bytes, "the package folder")
    for relative in files:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, folder / relative)


def _unwrap_single_folder(folder: Path) -> list[str]:
    """A zip of a package's folder (``pkg/rdf.yaml``, ...) becomes the package itself; the
    ``__MACOSX`` folder macOS adds to the zips it makes is left out (and said)."""
    problems = []
    if (folder / "__MACOSX").is_dir():
        shutil.rmtree(folder / "__MACOSX")
        problems.append("__MACOSX/: macOS file metadata, not part of the package, left out")
    entries = list(folder.iterdir())
    if len(entries) != 1 or not entries[0].is_dir() or any((folder / n).exists() for n in DESCRIPTION_NAMES):
        return problems
    inner = entries[0].rename(folder / f".unwrap-{uuid.uuid4().hex}")
    for child in inner.iterdir():
        child.rename(folder / child.name)
    inner.rmdir()
    return problems


# -- 2. the description ---------------------------------------------------------------------------


def _described_package(folder: Path, *, name: str | None, version: str | None) -> ModelPackage:
    """Store the description as ``rdf.yaml`` with the identity given, and parse it (no file read yet)."""
    present = [n for n in DESCRIPTION_NAMES if (folder / n).is_file()] or [
        p.name for p in folder.glob("*.bioimageio.yaml") if p.is_file()
    ]
    if len(present) != 1:
        found = f"two descriptions ({' and '.join(present)}): keep one, as the zoo serves one" if present else (
            "no description: a package holds a bioimageio.yaml (or rdf.yaml) beside its files, at the top of the zip"
        )  # fmt: skip
        raise UploadError(f"the package holds {found}", status=422)
    original = folder / present[0]
    with _refusing(folder, 422):
        try:
            read_description(original)  # YAML aliases bounded before anything else parses it
        except PackageError as error:
            if "alias" in str(error):  # an alias bomb is an attack, not a mistake
                raise UploadError(_without(folder, str(error)), status=400) from error
            raise
    stored = folder / STORED_DESCRIPTION
    if original != stored:
        original.rename(stored)
    write_identity(folder, name=name, version=version)
    with _refusing(folder, 422):
        content = read_description(stored)
        descr, notices = convert_description(stored, content)
    return ModelPackage(descr, folder, stored, "upload", str(content.get("format_version", "unknown")), notices=notices)


# -- 3. files, 4. documents -----------------------------------------------------------------------


def _check_files(package: ModelPackage) -> None:
    """Every file named: inside the package (400), local (422), present with its sha256 (422)."""
    entries = list(iter_file_entries(package.descr))
    with _refusing(package.root, 400):
        for where, source, _ in entries:
            if not is_url(str(source)):
                path_inside(package.root, str(source), where=where)
    remote = [f"{source} ({where})" for where, source, _ in entries if is_url(str(source))]
    if remote:
        raise UploadError(
            f"the description names files by URL: {', '.join(remote)}. A zoo stores whole packages: "
            "put these files in the package and name them by their path",
            status=422,
        )
    with _refusing(package.root, 422):
        check_package_files(package)


def _check_documents(folder: Path) -> list[str]:
    """Refuse markdown, HTML or SVG files that could run code in a browser; what the sanitiser drops, as problems."""
    problems: list[str] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        suffix = path.suffix.lower()
        if suffix not in _MARKDOWN + _HTML:
            continue
        relative = path.relative_to(folder)
        if path.stat().st_size > MAX_DOCUMENT_BYTES:
            raise UploadError(
                f"{relative} is {path.stat().st_size / (1 << 20):,.0f} MiB; the zoo reads documentation files of up to "
                f"{MAX_DOCUMENT_BYTES >> 20} MiB (figures belong in image files)",
                status=413,
            )
        text = path.read_text(encoding="utf-8", errors="replace")
        unsafe = unsafe_markdown(text) if suffix in _MARKDOWN else unsafe_html(text)
        if unsafe:
            raise UploadError(
                f"{relative} holds {'; '.join(unsafe)}: the zoo shows documentation to every visitor and refuses "
                "what could run code in their browser. Remove these from the file and upload again",
                status=400,
            )
        if suffix in _MARKDOWN:
            problems += [f"{relative}: the zoo's page leaves out {what}" for what in dropped_markdown(text)]
    return problems
