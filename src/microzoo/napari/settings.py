"""The plugin's settings that persist between sessions: zoo address, weight format, tile size, cache folder.

Stored as JSON at ``$MICROZOO_NAPARI_SETTINGS`` or ``~/.config/microzoo/napari.json`` and written
atomically. Only these settings persist, never layer choices. Empty values mean "the library
decides": no weight format is the first one the model has that microzoo runs, no tile size is
the automatic tiling. The zoo address falls back to ``$MICROZOO_ZOO`` when the setting is empty
(:func:`zoo_url`); the cache folder (files the widgets write for the library: streamed
predictions, training data from layers) is ``$MICROZOO_NAPARI_CACHE`` when set.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from microzoo.errors import ConfigError
from microzoo.io.atomic import atomic_output
from microzoo.package.download import cache_dir
from microzoo.package.zoo_ref import ZOO_ENV
from microzoo.runtime.engines import SUPPORTED_FORMATS

SETTINGS_ENV = "MICROZOO_NAPARI_SETTINGS"
CACHE_ENV = "MICROZOO_NAPARI_CACHE"


def settings_path() -> Path:
    """Where the settings live: ``$MICROZOO_NAPARI_SETTINGS`` or ``~/.config/microzoo/napari.json``."""
    return Path(os.environ.get(SETTINGS_ENV) or Path.home() / ".config" / "microzoo" / "napari.json")


def default_cache_dir() -> Path:
    """``$MICROZOO_NAPARI_CACHE``, else ``napari`` in microzoo's download cache (``~/.cache/microzoo/napari``)."""
    return Path(os.environ.get(CACHE_ENV) or cache_dir() / "napari")


@dataclass(frozen=True)
class Settings:
    """The persistent settings; invalid values raise :class:`~microzoo.errors.ConfigError`.

    ``zoo_url``: the zoo to search ("" = ``$MICROZOO_ZOO``); ``weight_format``: the default
    weights to run ("" = automatic); ``tile_size``: the default tile edge in pixels (None =
    automatic); ``cache_dir``: where the widgets write files for the library.
    """

    zoo_url: str = ""
    weight_format: str = ""
    tile_size: int | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)

    def __post_init__(self) -> None:
        url = self.zoo_url.strip()
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"the zoo address '{url}' is not an http(s) URL: write e.g. http://127.0.0.1:8000")
        object.__setattr__(self, "zoo_url", url.rstrip("/"))
        if self.weight_format and self.weight_format not in SUPPORTED_FORMATS:
            raise ConfigError(
                f"unknown weight format '{self.weight_format}': choose one of {', '.join(SUPPORTED_FORMATS)} "
                "or leave it empty (automatic)"
            )
        if self.tile_size is not None and (
            isinstance(self.tile_size, bool) or not isinstance(self.tile_size, int) or self.tile_size < 16
        ):
            raise ConfigError(f"tile size {self.tile_size!r}: give a whole number of pixels >= 16, or none (automatic)")
        object.__setattr__(self, "cache_dir", Path(self.cache_dir).expanduser())


def load_settings() -> Settings:
    """The saved settings (defaults where the file or a key is missing; ``$MICROZOO_NAPARI_CACHE`` wins).

    A file that is not valid JSON, or holds invalid values, raises :class:`ConfigError` naming it.
    """
    path = settings_path()
    values: dict[str, Any] = {}
    if path.is_file():
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"cannot read the napari settings {path} ({error}): fix or delete the file") from error
        if not isinstance(values, dict):
            raise ConfigError(f"the napari settings {path} do not hold a JSON object: fix or delete the file")
    values = {k: v for k, v in values.items() if k in _KINDS and v is not None}
    for key, value in values.items():
        if not isinstance(value, _KINDS[key]) or isinstance(value, bool):
            raise ConfigError(f"the napari settings {path}: '{key}' is {value!r}: fix or delete the file")
    if os.environ.get(CACHE_ENV):
        values["cache_dir"] = os.environ[CACHE_ENV]
    try:
        return Settings(**values)
    except ConfigError as error:
        raise ConfigError(f"the napari settings {path}: {error}") from error


#: the JSON kind of each setting (unknown keys in the file are ignored)
_KINDS: dict[str, type] = {"zoo_url": str, "weight_format": str, "tile_size": int, "cache_dir": str}


def save_settings(settings: Settings) -> Path:
    """Write ``settings`` to :func:`settings_path` (atomically); returns the path."""
    path = settings_path()
    values = dataclasses.asdict(settings)
    values["cache_dir"] = str(settings.cache_dir)
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
    return path


def zoo_url(settings: Settings) -> str | None:
    """The zoo to use: the setting, else ``$MICROZOO_ZOO``, else None."""
    return settings.zoo_url or os.environ.get(ZOO_ENV, "").strip().rstrip("/") or None
