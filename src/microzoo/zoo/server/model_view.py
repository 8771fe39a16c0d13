"""What a model page shows, gathered from the zoo: the page template only lays it out."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request

from microzoo.errors import MicrozooError
from microzoo.zoo.server.access import base_url

CONSUMERS = ("microzoo", "bioimageio.core", "deepImageJ", "ilastik")
_FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg", ".gif")


def model_context(request: Request, name: str, version: str) -> dict[str, Any]:
    """Everything the model page of ``name/version`` shows."""
    zoo = request.app.state.zoo
    info = zoo.version(name, version, published_only=False)
    summary: dict[str, Any] = dict(info.summary or {})
    base = base_url(request)
    path = f"{quote(name)}/{quote(info.version)}"
    files = f"/{'artifacts' if info.status == 'published' else 'drafts'}/{path}/files/"
    report: dict[str, Any] = dict(info.test_report or {})
    return {
        "info": info,
        "summary": summary,
        "files": files,
        "covers": [files + quote(c) for c in summary.get("covers", [])],
        "documentation": _documentation(zoo, name, info.version, summary.get("documentation"), files),
        "test_formats": dict(report.get("formats", {})),
        "test_log": str(report.get("log", "")),
        "compat": dict(info.compat or {}),
        "qc_figures": _qc_figures(zoo, name, info.version, files),
        "qc_numbers": _qc_numbers(zoo, name, info.version),
        "versions": list(reversed(zoo.versions(name))),
        "comments": zoo.comments(name, info.version),
        "zip_url": f"{base}/api/models/{path}/package.zip",
        "usage": usage_lines(base, name, info.version),
        "convertible": convertible_formats(info),
        "convert_jobs": zoo.jobs_of(name, info.version, "convert"),
        "pending": info.test_status in ("pending", "running"),
        "uploaded": request.query_params.get("uploaded") == "1",
    }


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


def _documentation(zoo: Any, name: str, version: str, file_name: str | None, files: str) -> str:
    """The package's documentation as sanitised HTML ('' where it has none)."""
    if not file_name:
        return ""
    from microzoo.zoo.markdown import render_markdown

    try:
        text = Path(zoo.file_path(name, version, file_name)).read_text(encoding="utf-8", errors="replace")
    except (MicrozooError, OSError):
        return ""
    return str(render_markdown(text, resolve_url=lambda url: files + url))


def _qc_numbers(zoo: Any, name: str, version: str) -> dict[str, Any]:
    """The QC figures a microzoo-trained package records (``config.microzoo.qc``: metric -> value)."""
    import yaml

    try:
        description = yaml.safe_load(Path(zoo.file_path(name, version, "rdf.yaml")).read_text(encoding="utf-8"))
        qc = description["config"]["microzoo"]["qc"]
    except (MicrozooError, OSError, yaml.YAMLError, KeyError, TypeError):
        return {}
    return {str(k): v for k, v in qc.items() if isinstance(v, (int, float, str))} if isinstance(qc, dict) else {}


def _qc_figures(zoo: Any, name: str, version: str, files: str) -> list[dict[str, str]]:
    """The QC figures and report the package holds (files named ``qc*``), as links."""
    try:
        folder = Path(zoo.file_path(name, version, "rdf.yaml")).parent
    except MicrozooError:
        return []
    found = []
    for path in sorted(folder.rglob("qc*")):
        if path.is_file() and not path.is_symlink():
            relative = path.relative_to(folder).as_posix()
            kind = "image" if path.suffix.lower() in _FIGURE_SUFFIXES else "link"
            found.append({"url": files + quote(relative), "name": relative, "kind": kind})
    return found
