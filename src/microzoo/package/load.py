"""Open a model package from a folder, a ``.zip``, a description file or an http(s) URL.

Parsing and conversion are bioimageio.spec's: a format 0.4 description is converted to 0.5 on
load, so everything above this module sees ``bioimageio.spec.model.v0_5.ModelDescr`` only.
What this module adds is getting the files onto the local disk (download with a cache, zip
extraction) and checking that every file the description names is there with its sha256.
"""

from __future__ import annotations

import hashlib
import os
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel

from microzoo.errors import ChecksumError, PackageError
from microzoo.package.archive import extract_zip
from microzoo.package.download import download, is_url
from microzoo.progress import ProgressCallback

if TYPE_CHECKING:  # the spec is imported when a description is parsed, not on import
    from bioimageio.spec import InvalidDescr, ResourceDescr
    from bioimageio.spec.common import FileSource
    from bioimageio.spec.model.v0_5 import ModelDescr

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
    notices : tuple of str
        What microzoo changed to read the description (format 0.4 fields the spec cannot
        convert; see :mod:`microzoo.package.format04`).
    """

    descr: ModelDescr
    root: Path
    description_path: Path
    source: str
    original_format: str
    notices: tuple[str, ...] = ()

    def file(self, source: FileSource | str) -> Path:
        """The local path of a file the description names (relative path, or URL: downloaded
        into the cache once and checked against the description's sha256)."""
        expected = next((sha for _, named, sha in iter_file_entries(self.descr) if str(named) == str(source)), None)
        return resolve_file(source, self.root, sha256=None if expected is None else str(expected))

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
    content = read_description(description_path)
    original_format = str(content.get("format_version", "unknown"))
    descr, notices = convert_description(description_path, content)
    package = ModelPackage(
        descr=descr,
        root=description_path.parent,
        description_path=description_path,
        source=str(source),
        original_format=original_format,
        notices=notices,
    )
    if check_files:
        check_package_files(package, progress=progress)
    return package


def locate_description(source: str | os.PathLike[str], *, progress: ProgressCallback | None = None) -> Path:
    """Bring a package onto the local disk and return the path of its description file."""
    text = os.fspath(source)
    if is_url(text):
        return _locate_remote(text, progress=progress)
    if text.startswith("zoo:"):  # a zoo's package: zoo:NAME[/VERSION], the zoo from $MICROZOO_ZOO
        from microzoo.package.zoo_ref import fetch_zoo_package

        return _description_in_folder(extract_zip(fetch_zoo_package(text, progress=progress)))
    path = Path(text).expanduser()
    if not path.exists():
        raise PackageError(
            f"no model package at '{text}': give a package folder, a .zip, a bioimageio.yaml, an http(s) URL "
            "or zoo:NAME[/VERSION]"
        )
    if path.is_dir():
        return _description_in_folder(path)
    if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        return _description_in_folder(extract_zip(path))
    if path.suffix.lower() in (".yaml", ".yml"):
        return path.resolve()
    raise PackageError(
        f"'{text}' is neither a folder, a .zip nor a .yaml description: "
        "give the package folder, its zip, or its bioimageio.yaml"
    )


#: bioimageio.spec reads YAML with one module-level ruamel parser, which is not thread-safe: two
#: threads reading descriptions at once corrupt each other's parse (the zoo's server checks
#: uploads in threads). Every ``load_description`` call here holds this lock.
SPEC_READ_LOCK = threading.Lock()


def convert_description(
    description_path: Path, content: dict[str, Any] | None = None
) -> tuple[ModelDescr, tuple[str, ...]]:
    """Parse a description with bioimageio.spec, converted to format 0.5 (no file checks), and the
    notices of the repairs a format 0.4 description needed to be converted
    (:mod:`microzoo.package.format04`).

    ``content``: the description as :func:`read_description` read it (read here if not given);
    the spec sees only descriptions that passed its guards.
    """
    from bioimageio.spec import InvalidDescr, load_description
    from bioimageio.spec.model import v0_5

    if content is None:
        content = read_description(description_path)
    notices: tuple[str, ...] = ()
    descr: ResourceDescr | InvalidDescr  # any type and format version until checked below
    try:
        with SPEC_READ_LOCK:
            descr = load_description(description_path, format_version="latest", perform_io_checks=False)
    except Exception as error:  # YAML syntax errors and the like, raised by the spec's reader
        raise PackageError(
            f"cannot read {description_path} ({type(error).__name__}: {str(error).splitlines()[0][:300]}): "
            "fix the YAML, or download the package again"
        ) from error
    if isinstance(descr, InvalidDescr) and str(content.get("format_version", "")).startswith("0.4"):
        descr, notices = _converted_with_repairs(description_path, content, descr)
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
    return descr, notices


def _converted_with_repairs(
    description_path: Path, content: dict[str, Any], failed: InvalidDescr
) -> tuple[ResourceDescr | InvalidDescr, tuple[str, ...]]:
    """The 0.5 description of a 0.4 one the spec could not convert, repaired where the field is
    known (``failed`` and no notices where it still does not convert)."""
    from bioimageio.spec import InvalidDescr, ValidationContext, build_description

    from microzoo.package.format04 import repair_for_conversion

    repaired, notices = repair_for_conversion(content)
    if not notices:
        return failed, ()
    context = ValidationContext(root=description_path.parent, file_name=description_path.name, perform_io_checks=False)
    descr = build_description(repaired, context=context, format_version="latest")
    if isinstance(descr, InvalidDescr):
        return failed, ()
    return descr, tuple(f"format 0.4 description repaired to be converted to 0.5: {n}" for n in notices)


def check_package_files(package: ModelPackage, *, progress: ProgressCallback | None = None) -> None:
    """Check that every file the description names is in the package and has its sha256.

    Files named by URL are not fetched here: :meth:`ModelPackage.file` downloads one when it is
    used and checks its sha256 then, so a package whose other weight formats are remote runs
    offline with its local one.
    """
    entries = [entry for entry in iter_file_entries(package.descr) if not is_url(str(entry[1]))]
    # every path is checked to stay inside the package before any file is read
    paths = [path_inside(package.root, str(source), where=where) for where, source, _ in entries]
    for done, ((where, source, expected), path) in enumerate(zip(entries, paths, strict=True)):
        if progress:
            progress(done, len(entries), "checking files")
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


def iter_file_entries(node: object, where: str = "") -> Iterator[tuple[str, FileSource, str | None]]:
    """Yield ``(where, source, sha256)`` for every file node (with ``source`` and ``sha256``)."""
    if isinstance(node, BaseModel):
        fields = type(node).model_fields
        if "source" in fields and "sha256" in fields:
            file_node: Any = node  # a FileDescr or a weights entry: both fields are declared
            yield where or "description", file_node.source, file_node.sha256
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


def resolve_file(source: FileSource | str, root: Path, *, sha256: str | None = None, where: str = "") -> Path:
    """Local path of a description's file source: inside ``root``, or downloaded if a URL.

    A URL is downloaded (once, into the cache; checked against ``sha256`` when given). A
    relative path must stay inside the package folder ``root``, symbolic links followed.

    Raises
    ------
    PackageError
        The path is absolute or leads outside the package.
    """
    text = str(source)
    if is_url(text):
        return download(text, sha256=sha256)
    return path_inside(root, text, where=where)


def path_inside(root: Path, relative: str, *, where: str = "") -> Path:
    """``root / relative``, refused unless it is inside ``root`` once symbolic links are followed.

    >>> path_inside(Path("/pkg"), "../etc/passwd")
    Traceback (most recent call last):
    ...
    microzoo.errors.PackageError: the description names '../etc/passwd', which lies outside the package ...
    """
    named = f"'{relative}'" + (f" ({where})" if where else "")
    if Path(relative).is_absolute() or relative.startswith(("/", "\\")) or relative[1:3] in (":/", ":\\"):
        raise PackageError(
            f"the description names the absolute path {named}: a package names its files relative "
            "to its own folder, so this one is refused. Ask its author to put the file in the package"
        )
    base = root.resolve()
    try:
        resolved = (base / relative).resolve()
    except (ValueError, OSError) as error:  # a NUL byte, a loop of symbolic links
        raise PackageError(f"the description names {named}, which is not a usable file path ({error})") from error
    if not resolved.is_relative_to(base):
        raise PackageError(
            f"the description names {named}, which lies outside the package ({resolved}): refused, "
            "a package may only name its own files. Ask its author to put the file in the package"
        )
    return root / relative


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


def _locate_remote(url: str, *, progress: ProgressCallback | None) -> Path:
    local = download(url, progress=progress)
    if zipfile.is_zipfile(local):
        try:
            return _description_in_folder(extract_zip(local))
        except PackageError:
            local.unlink(missing_ok=True)  # a refused zip leaves nothing in the cache
            raise
    if local.suffix.lower() not in (".yaml", ".yml"):
        raise PackageError(f"{url} is neither a zip package nor a .yaml description")
    # a description on a server: fetch the files it names from beside it, into its folder, each
    # checked to stay inside that folder before the download and against its sha256 after it
    base = url.rsplit("/", 1)[0] + "/"
    for where, source, sha256 in iter_file_entries(convert_description(local)[0]):
        text = str(source)
        if not is_url(text):
            destination = path_inside(local.parent, text, where=where)
            download(base + text, destination=destination, sha256=sha256, progress=progress)
    return local


#: The most nodes a description may hold once its YAML aliases are expanded. Descriptions hold
#: hundreds to a few thousand; ten anchors of ten aliases each expand to 10^10 and make
#: bioimageio.spec (which expands them) run forever.
MAX_DESCRIPTION_NODES = 200_000


def read_description(description_path: Path) -> dict[str, Any]:
    """The YAML mapping of a description file, refused where aliases expand past the bound.

    Raises
    ------
    PackageError
        The file cannot be read, is not YAML, is not a mapping, or is an alias bomb.
    """
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        content = yaml.load(description_path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - a safe loader
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PackageError(
            f"cannot read {description_path} as YAML ({first_line}): is it a model description? "
            "Fix the YAML, or download the package again"
        ) from error
    if not isinstance(content, dict):
        raise PackageError(
            f"{description_path} is not a model description: expected a YAML mapping "
            "(format_version: ..., type: model, ...), found "
            f"{type(content).__name__ if content is not None else 'nothing'}"
        )
    if _expanded_nodes(content, {}, MAX_DESCRIPTION_NODES) > MAX_DESCRIPTION_NODES:
        raise PackageError(
            f"{description_path}: its YAML aliases (*name) expand to more than {MAX_DESCRIPTION_NODES:,} "
            "values, far more than any model description holds; refused (an alias bomb looks like this)"
        )
    return content


def _expanded_nodes(node: object, seen: dict[int, int], limit: int) -> int:
    """How many values ``node`` holds with every alias expanded (stops counting past ``limit``).

    A structure reached again (an alias) costs its size again without being walked again; one
    that contains itself counts as past the limit.
    """
    if not isinstance(node, (dict, list)):
        return 1
    key = id(node)
    if key in seen:
        return seen[key] if seen[key] >= 0 else limit + 1
    seen[key] = -1  # being counted: reaching it again means it contains itself
    children = node.values() if isinstance(node, dict) else node
    total = 1 + (len(node) if isinstance(node, dict) else 0)
    for child in children:
        total += _expanded_nodes(child, seen, limit)
        if total > limit:
            break
    seen[key] = total
    return total
