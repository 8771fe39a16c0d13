"""What a model page shows, gathered from the zoo: the page template only lays it out."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request

from microzoo.errors import MicrozooError
from microzoo.zoo import storage
from microzoo.zoo.server.access import base_url

CONSUMERS = ("microzoo", "bioimageio.core", "deepImageJ", "ilastik")
_FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg", ".gif")


def model_context(request: Request, name: str, version: str) -> dict[str, Any]:
    """Everything the model page of ``name/version`` shows."""
    zoo = request.app.state.zoo
    page = zoo.version_page(name, version)
    info = page.info
    summary: dict[str, Any] = dict(info.summary or {})
    base = base_url(request)
    path = f"{quote(name)}/{quote(info.version)}"
    files = f"/{'artifacts' if info.status == 'published' else 'drafts'}/{path}/files/"
    report: dict[str, Any] = dict(info.test_report or {})
    stored = _Stored(Path(zoo.root), name, info.version, info.rdf_sha256)
    documentation, qc_figures, qc_numbers = _package_extras(stored, summary.get("documentation"), files)
    return {
        "info": info,
        "summary": summary,
        "files": files,
        "covers": [files + quote(c) for c in summary.get("covers", [])],
        "documentation": documentation,
        "test_formats": dict(report.get("formats", {})),
        "test_log": str(report.get("log", "")),
        "compat": dict(info.compat or {}),
        "qc_figures": qc_figures,
        "qc_numbers": qc_numbers,
        "versions": list(reversed(page.versions)),
        "comments": page.comments,
        "zip_url": f"{base}/api/models/{path}/package.zip",
        "usage": usage_lines(base, name, info.version),
        "convertible": convertible_formats(info),
        "convert_jobs": page.convert_jobs,
        "pending": info.test_status in ("pending", "running"),
        "uploaded": request.query_params.get("uploaded") == "1",
    }


@dataclass(frozen=True)
class _Stored:
    """A stored version's files: the zoo's root, the version, and its ``rdf.yaml`` hash (what they hold)."""

    root: Path
    name: str
    version: str
    rdf_sha256: str

    @property
    def folder(self) -> Path:
        return storage.version_dir(self.root, self.name, self.version)

    def file(self, relative: str) -> Path:
        """``relative`` inside the version's folder (:class:`ZooNotFound` if missing or outside it)."""
        return storage.file_in_version(self.root, self.name, self.version, relative)


@functools.lru_cache(maxsize=256)
def _package_extras(
    stored: _Stored, documentation: str | None, files: str
) -> tuple[str, list[dict[str, str]], dict[str, Any]]:
    """The version's documentation (sanitised HTML), QC figures and QC numbers, read from its stored files.

    Kept per version and ``rdf.yaml`` hash (a version's files do not change once stored): reading and
    rendering them (parsing ``rdf.yaml``, rendering markdown, listing the folder) was most of a model
    page's time. Shared between requests: read-only.
    """
    return _documentation(stored, documentation, files), _qc_figures(stored, files), _qc_numbers(stored)


def convertible_formats(info: Any) -> list[str]:
    """The formats ``microzoo convert`` could add to a version whose test passed (none otherwise)."""
    from microzoo.runtime.convert import CONVERTIBLE

    if info.test_status != "passed":
        return []
    present = set((info.summary or {}).get("weight_formats") or [])
    if not present & {"pytorch_state_dict", "torchscript"}:
        return []
    return [f for f in CONVERTIBLE if f not in present]


def usage_lines(base: str, name: str, version: str) -> dict[str, list[str]]:
    """The lines to use ``name/version`` from microzoo, bioimageio.core and deepImageJ."""
    return {
        "microzoo": [
            f"microzoo predict zoo:{name}/{version} IMAGE.tif -o OUT --zoo {base}",
            f"microzoo pull {name}/{version} --zoo {base} -o {name}-{version}",
        ],
        "bioimageio.core": [
            f"export BIOIMAGEIO_COLLECTION_HTTP_PATTERN='{base}/artifacts/{{bioimageio_id}}/files/rdf.yaml'",
            f"export BIOIMAGEIO_ID_MAP={base}/id_map.json",
            f"export BIOIMAGEIO_ID_MAP_DRAFT={base}/id_map_draft.json",
            f"bioimageio test {name}/{version}",
        ],
        "deepImageJ": [f"{base}/api/models/{quote(name)}/{quote(version)}/package.zip"],
    }


def _documentation(stored: _Stored, file_name: str | None, files: str) -> str:
    """The package's documentation as sanitised HTML ('' where it has none)."""
    if not file_name:
        return ""
    from microzoo.zoo.markdown import render_markdown

    try:
        text = stored.file(file_name).read_text(encoding="utf-8", errors="replace")
    except (MicrozooError, OSError):
        return ""
    return str(render_markdown(text, resolve_url=lambda url: files + url))


def _qc_numbers(stored: _Stored) -> dict[str, Any]:
    """The QC figures a microzoo-trained package records (``config.microzoo.qc``: metric -> value)."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, where PyYAML was built with it
    try:
        description = yaml.load(stored.file("rdf.yaml").read_text(encoding="utf-8"), Loader=loader)
        qc = description["config"]["microzoo"]["qc"]
    except (MicrozooError, OSError, yaml.YAMLError, KeyError, TypeError):
        return {}
    return {str(k): v for k, v in qc.items() if isinstance(v, (int, float, str))} if isinstance(qc, dict) else {}


def _qc_figures(stored: _Stored, files: str) -> list[dict[str, str]]:
    """The QC figures and report the package holds (files named ``qc*``), as links."""
    folder = stored.folder
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.rglob("qc*")):
        if path.is_file() and not path.is_symlink():
            relative = path.relative_to(folder).as_posix()
            kind = "image" if path.suffix.lower() in _FIGURE_SUFFIXES else "link"
            found.append({"url": files + quote(relative), "name": relative, "kind": kind})
    return found
