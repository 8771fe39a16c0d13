"""Open a model package from a folder, a ``.zip``, a description file or an http(s) URL.

Parsing and conversion are bioimageio.spec's: a format 0.4 description is converted to 0.5 on
load, so everything above this module sees ``bioimageio.spec.model.v0_5.ModelDescr`` only.
What this module adds is getting the files onto the local disk (download with a cache, zip
extraction) and checking that every file the description names is there with its sha256.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from microzoo.errors import ChecksumError, PackageError
from microzoo.package.download import cache_dir, download, is_url
from microzoo.progress import ProgressCallback

DESCRIPTION_NAMES = ("bioimageio.yaml", "rdf.yaml")


@dataclass(frozen=True)
class ModelPackage:
    """A model description (format 0.5) with its files on the local disk.

    Attributes
    ----------
    descr : bioimageio.spec.model.v0_5.ModelDescr
        The description, converted to format 0.5 where it was older.
    root : Path
        The folder holding the description and its files.
    description_path : Path
        The description file itself.
    source : str
        What the user gave (path or URL).
    original_format : str
        The ``format_version`` the description was written in.
    """

    descr: Any
    root: Path
    description_path: Path
    source: str
    original_format: str

    def file(self, source: Any) -> Path:
        """The local path of a file the description names (relative path or URL)."""
        return resolve_file(source, self.root)

    @property
    def name(self) -> str:
        return str(self.descr.name)


def open_package(
    source: str | os.PathLike[str],
    *,
    check_files: bool = True,
    progress: ProgressCallback | None = None,
) -> ModelPackage:
    """Open a model package and check its files.

    Parameters
    ----------
    source
        A package folder, a ``.zip`` package, a ``bioimageio.yaml``/``rdf.yaml`` file, or an
        http(s) URL to a zip or a description (downloads are cached; see ``MICROZOO_CACHE``).
    check_files
        Check that every file the description names exists and has its sha256.

    Raises
    ------
    PackageError
        The source is not a model package, the description is invalid, or a file is missing.
    ChecksumError
        A file's sha256 differs from the description's.
    """
    description_path = locate_description(source, progress=progress)
    original_format = read_format_version(description_path)
    descr = parse_description(description_path)
    package = ModelPackage(
        descr=descr,
        root=description_path.parent,
        description_path=description_path,
        source=str(source),
        original_format=original_format,
    )
    if check_files:
        check_package_files(package, progress=progress)
    return package


def locate_description(
    source: str | os.PathLike[str], *, progress: ProgressCallback | None = None
) -> Path:
    """Bring a package onto the local disk and return the path of its description file."""
    text = os.fspath(source)
    if is_url(text):
        return _locate_remote(text, progress=progress)
    path = Path(text).expanduser()
    if not path.exists():
        raise PackageError(
            f"no model package at '{text}': give a package folder, a .zip, a bioimageio.yaml "
            "or an http(s) URL"
        )
    if path.is_dir():
        return _description_in_folder(path)
    if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        return _description_in_folder(_extract_zip(path))
    if path.suffix.lower() in (".yaml", ".yml"):
        return path.resolve()
    raise PackageError(
        f"'{text}' is neither a folder, a .zip nor a .yaml description: "
        "give the package folder, its zip, or its bioimageio.yaml"
    )


def parse_description(description_path: Path) -> Any:
    """Parse a description with bioimageio.spec, converted to format 0.5 (no file checks)."""
    from bioimageio.spec import InvalidDescr, load_description
    from bioimageio.spec.model import v0_5

    try:
        descr = load_description(description_path, format_version="latest", perform_io_checks=False)
    except Exception as error:  # YAML syntax errors and the like, raised by the spec's reader
        raise PackageError(
            f"cannot read {description_path} ({type(error).__name__}: {str(error).splitlines()[0][:300]}): "
            "fix the YAML, or download the package again"
        ) from error
    if isinstance(descr, InvalidDescr):
        problems = "; ".join(
            f"{'.'.join(map(str, e.loc)) or 'description'}: {e.msg}"
            for d in descr.validation_summary.details
            for e in d.errors
        )
        raise PackageError(
            f"{description_path} is not a valid model description ({problems[:1500]}). "
            f"Run `microzoo validate {description_path.parent}` for the full list."
        )
    if not isinstance(descr, v0_5.ModelDescr):
        raise PackageError(
            f"{description_path} describes a '{getattr(descr, 'type', '?')}', not a model: "
            "microzoo runs model packages only"
        )
    return descr


def check_package_files(package: ModelPackage, *, progress: ProgressCallback | None = None) -> None:
    """Check that every file the description names is present and has its sha256."""
    entries = list(iter_file_entries(package.descr))
    for done, (where, source, expected) in enumerate(entries):
        if progress:
            progress(done, len(entries), "checking files")
        path = resolve_file(source, package.root)
        if not path.is_file():
            raise PackageError(
                f"the description names '{source}' ({where}) but it is not in the package at "
                f"{path}: download the complete package again"
            )
        if expected is not None:
            actual = sha256_of(path)
            if actual != str(expected):
                raise ChecksumError(
                    f"sha256 mismatch for '{source}' ({where}): the description says {expected}, "
                    f"the file has {actual}. The file is damaged or was replaced: download the "
                    "package again; if you are its author, update the sha256 in the description"
                )
    if progress:
        progress(len(entries), len(entries), "checking files")


def iter_file_entries(node: Any, where: str = "") -> Iterator[tuple[str, Any, str | None]]:
    """Yield ``(where, source, sha256)`` for every file node (with ``source`` and ``sha256``)."""
    if isinstance(node, BaseModel):
        fields = type(node).model_fields
        if "source" in fields and "sha256" in fields:
            yield where or "description", node.source, node.sha256
        for name in fields:
            if name in ("source", "parent"):
                continue
            yield from iter_file_entries(getattr(node, name), f"{where}.{name}" if where else name)
    elif isinstance(node, (list, tuple)):
        for i, item in enumerate(node):
            yield from iter_file_entries(item, f"{where}[{i}]")
    elif isinstance(node, dict):
        for key, item in node.items():
            yield from iter_file_entries(item, f"{where}.{key}")


def resolve_file(source: Any, root: Path) -> Path:
    """Local path of a description's file source: relative to ``root``, or downloaded if a URL."""
    text = str(source)
    if is_url(text):
        return download(text)
    path = Path(text)
    return path if path.is_absolute() else root / path


def sha256_of(path: Path, *, chunk_size: int = 1 << 20) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _description_in_folder(folder: Path) -> Path:
    for name in DESCRIPTION_NAMES:
        if (folder / name).is_file():
            return (folder / name).resolve()
    candidates = sorted(folder.glob("*.bioimageio.yaml")) + sorted(folder.glob("*rdf.yaml"))
    if len(candidates) == 1:
        return candidates[0].resolve()
    raise PackageError(
        f"no model description in {folder}: a package folder holds a bioimageio.yaml "
        "(or rdf.yaml for format 0.4)"
        + (f"; found several candidates: {', '.join(c.name for c in candidates)}" if candidates else "")
    )


def _extract_zip(path: Path) -> Path:
    """Extract a zip package into the cache, keyed by its sha256; reuse an earlier extraction."""
    if not zipfile.is_zipfile(path):
        raise PackageError(f"{path} is not a valid zip file (corrupt or truncated): download it again")
    target = cache_dir() / "packages" / sha256_of(path)
    if target.is_dir():
        return target
    from microzoo.io.atomic import atomic_output

    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise PackageError(f"{path} is corrupt ({bad} fails its CRC check): download it again")
            with atomic_output(target) as tmp:
                for member in archive.namelist():
                    destination = (tmp / member).resolve()
                    if not str(destination).startswith(str(tmp.resolve())):
                        raise PackageError(f"{path} holds a file outside the package ({member}): refused")
                archive.extractall(tmp)
    except zipfile.BadZipFile as error:
        raise PackageError(f"{path} is a corrupt zip file ({error}): download it again") from error
    return target


def _locate_remote(url: str, *, progress: ProgressCallback | None) -> Path:
    local = download(url, progress=progress)
    if zipfile.is_zipfile(local):
        return _description_in_folder(_extract_zip(local))
    if local.suffix.lower() not in (".yaml", ".yml"):
        raise PackageError(f"{url} is neither a zip package nor a .yaml description")
    # a description on a server: fetch the files it names from beside it, into its folder
    base = url.rsplit("/", 1)[0] + "/"
    for _, source, _ in iter_file_entries(parse_description(local)):
        text = str(source)
        if not is_url(text):
            download(base + text, destination=local.parent / text, progress=progress)
    return local


def read_format_version(description_path: Path) -> str:
    """The ``format_version`` a description file was written in."""
    try:
        content = yaml.safe_load(description_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as error:
        raise PackageError(f"cannot read {description_path} as YAML ({error}): is it a model description?") from error
    if not isinstance(content, dict):
        raise PackageError(f"{description_path} is not a model description (expected a YAML mapping)")
    return str(content.get("format_version", "unknown"))
