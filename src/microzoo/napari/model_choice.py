"""What the Model widget does off the Qt main thread, and its words: open a model (a path or a zoo's
``zoo:NAME[/VERSION]``), search the zoo, describe test results. No Qt here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microzoo.errors import ConfigError, DownloadError
from microzoo.napari.settings import Settings, zoo_url
from microzoo.progress import ProgressCallback


@dataclass(frozen=True)
class OpenedModel:
    """A model opened in the widget: ``source`` as chosen (``zoo:NAME/VERSION`` for a zoo's), the
    runnable model, its summary (``microzoo info``), its first cover file and, for a zoo's model,
    the zoo's record of the version (test status, compatibility)."""

    source: str
    model: Any
    summary: Any
    cover: Path | None
    zoo_version: dict[str, Any] | None


def open_model(source: str, settings: Settings, progress: ProgressCallback | None = None) -> OpenedModel:
    """Open ``source`` (a path, or ``zoo:NAME[/VERSION]`` from the zoo of ``settings``) to run it."""
    from microzoo.package.load import open_package
    from microzoo.runtime.engines import available_formats
    from microzoo.runtime.predict import Model

    zoo_version = None
    location: str | Path = source
    if source.startswith("zoo:"):
        from microzoo.package.zoo_ref import fetch_zoo_package, parse_zoo_ref
        from microzoo.zoo.client import ZooClient

        name, version = parse_zoo_ref(source)
        try:
            with ZooClient(require_zoo(settings)) as client:
                zoo_version = client.version_info(name, version)
        except DownloadError:
            if version is None:
                raise
            # offline: a version downloaded before opens from the cache
            zoo_version = {"version": version, "test_status": "unknown (the zoo cannot be reached)"}
        source = f"zoo:{name}/{zoo_version['version']}"
        location = fetch_zoo_package(source, zoo=require_zoo(settings), progress=progress)
    package = open_package(location, progress=progress)
    chosen = settings.weight_format if settings.weight_format in available_formats(package) else None
    return describe_model(source, Model(package, weights=chosen), zoo_version)


def describe_model(source: str, model: Any, zoo_version: dict[str, Any] | None = None) -> OpenedModel:
    """An opened model with its summary and cover (reads only the description: quick)."""
    from microzoo.runtime.summary import summarize

    package = model.package
    covers = [package.root / str(c.source) for c in package.descr.covers if "://" not in str(c.source)]
    cover = next((c for c in covers if c.is_file()), None)
    return OpenedModel(source, model, summarize(package), cover, zoo_version)


def require_zoo(settings: Settings) -> str:
    """The zoo's address (setting, else ``$MICROZOO_ZOO``), or an error saying where to give it."""
    url = zoo_url(settings)
    if url is None:
        raise ConfigError(
            "no zoo is set: enter its address under Settings (Zoo address), e.g. http://127.0.0.1:8000, "
            "or set MICROZOO_ZOO before starting napari"
        )
    return url


def search_zoo(words: str, settings: Settings, progress: ProgressCallback | None = None) -> list[dict[str, Any]]:
    """The published models of the settings' zoo that ``words`` find (the zoo's version records)."""
    from microzoo.zoo.client import ZooClient

    with ZooClient(require_zoo(settings)) as client:
        items: list[dict[str, Any]] = client.search(words)["items"]
    return items


def test_words(results: list[Any]) -> str:
    """What ``microzoo test`` found, one line per weight format and output."""
    lines = []
    for r in results:
        verdict = "passed" if r.passed else "FAILED"
        detail = r.error or f"max difference {r.max_abs_diff:.2g}, {r.mismatched_per_million:.0f} per million off"
        lines.append(f"{verdict}: {r.weight_format}, {r.output_id} ({detail})")
    return "\n".join(lines)


def zoo_test_words(version: dict[str, Any]) -> str:
    """The zoo's test result of a version and which tools run it, in words."""
    status = version.get("test_status", "unknown")
    consumers = ((version.get("compat") or {}).get("consumers")) or {}
    runs = [name for name, entry in consumers.items() if entry.get("runs")]
    text = f"Tested by the zoo: {status}."
    if "microzoo" in consumers:
        text += f" microzoo {consumers['microzoo'].get('reason', '')}."
    if runs:
        text += f" Runs in: {', '.join(runs)}."
    return text
