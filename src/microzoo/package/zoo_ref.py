"""``zoo:NAME[/VERSION]`` as a model: a package from a microzoo zoo (``microzoo serve``).

The zoo's address is given by the caller (``--zoo URL``) or ``$MICROZOO_ZOO``. A version is
downloaded once, as the zoo's per-version package zip
(``/api/models/NAME/VERSION/package.zip``), into ``<cache>/zoo/<host>/NAME/VERSION.zip``,
checked against the sha256 the zoo gives for it: versions are immutable, so a cached zip is
used without asking the zoo again. A bare ``zoo:NAME`` asks the zoo for its latest published
version first (that question needs the network every time).

This module only downloads; :func:`microzoo.package.load.locate_description` extracts the zip.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from microzoo.errors import (
    DownloadError,
    PackageError,
    UploadError,
    ZooAuthError,
    ZooConflict,
    ZooError,
    ZooNotFound,
)
from microzoo.package.download import cache_dir, download
from microzoo.progress import ProgressCallback

PREFIX = "zoo:"
ZOO_ENV = "MICROZOO_ZOO"
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_zoo_ref(text: str) -> bool:
    return text.startswith(PREFIX)


def parse_zoo_ref(text: str) -> tuple[str, str | None]:
    """``zoo:NAME`` -> (NAME, None); ``zoo:NAME/VERSION`` -> (NAME, VERSION)."""
    parts = text[len(PREFIX) :].split("/") if is_zoo_ref(text) else text.split("/")
    if len(parts) > 2 or not all(_PART.match(p) for p in parts):
        raise PackageError(
            f"'{text}' is not a zoo reference: write zoo:NAME or zoo:NAME/VERSION (e.g. zoo:affable-shark/1)"
        )
    return parts[0], parts[1] if len(parts) == 2 else None


#: The token microzoo sends to a zoo (reading from a zoo started with ``--read-token-required``).
TOKEN_ENV = "MICROZOO_TOKEN"


def zoo_headers() -> dict[str, str]:
    """The ``Authorization`` header of ``$MICROZOO_TOKEN``, or none."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    return {"Authorization": f"Bearer {token}"} if token else {}


def zoo_url(explicit: str | None = None) -> str:
    """The zoo's base URL: ``explicit``, else ``$MICROZOO_ZOO``."""
    url = explicit or os.environ.get(ZOO_ENV, "")
    if not url:
        raise PackageError(f"which zoo? Give its address with --zoo URL or set {ZOO_ENV} (e.g. http://127.0.0.1:8000)")
    if not url.startswith(("http://", "https://")):
        raise PackageError(f"the zoo address '{url}' is not an http(s) URL: write e.g. http://127.0.0.1:8000")
    return url.rstrip("/")


def fetch_zoo_package(
    ref: str, *, zoo: str | None = None, progress: ProgressCallback | None = None, timeout: float = 60.0
) -> Path:
    """Download (once) the package zip that ``zoo:NAME[/VERSION]`` names and return its path."""
    name, version = parse_zoo_ref(ref)
    base = zoo_url(zoo)
    info = None
    if version is None:
        info = zoo_json(base, f"/api/models/{quote(name)}", timeout=timeout)
        version = info.get("latest")
        if not version:
            raise ZooNotFound(f"{name} has no published version on {base} yet: give zoo:{name}/VERSION")
    destination = _cache_path(base, name, str(version))
    if destination.is_file():
        return destination
    details = zoo_json(base, f"/api/models/{quote(name)}/{quote(str(version))}", timeout=timeout)
    return download(
        f"{base}/api/models/{quote(name)}/{quote(str(version))}/package.zip",
        destination=destination,
        sha256=details.get("zip_sha256"),
        progress=progress,
        timeout=timeout,
        headers=zoo_headers(),
    )


def zoo_json(base: str, path: str, *, timeout: float = 30.0) -> dict[str, Any]:
    """GET a JSON document from the zoo; its ``{"detail": ...}`` errors become :class:`ZooError`."""
    return zoo_request(base, "GET", path, timeout=timeout)


def zoo_request(
    base: str, method: str, path: str, *, http: Any = None, timeout: float = 30.0, **kwargs: Any
) -> dict[str, Any]:
    """A JSON request to the zoo at ``base`` (through the ``httpx.Client`` ``http``, whose base URL is
    ``base``, when given); an unreachable zoo is a :class:`DownloadError`, a refusal its :class:`ZooError`."""
    import httpx

    try:
        if http is not None:
            response = http.request(method, path, **kwargs)
        else:
            response = httpx.request(
                method, base + path, timeout=timeout, follow_redirects=True, headers=zoo_headers(), **kwargs
            )
    except httpx.HTTPError as error:
        raise DownloadError(
            f"cannot reach the zoo at {base} ({type(error).__name__}: {error}): check the address "
            "and that the zoo is running"
        ) from error
    if response.status_code >= 400:
        raise zoo_error(response.status_code, error_detail(response), base)
    result: dict[str, Any] = response.json()
    return result


def zoo_error(status: int, detail: str, base: str) -> ZooError:
    """The :class:`ZooError` subclass for an error answer of the zoo, with the zoo's message and status."""
    kinds: dict[int, type[ZooError]] = {
        401: ZooAuthError, 403: ZooAuthError, 404: ZooNotFound, 409: ZooConflict, 413: UploadError, 422: UploadError
    }  # fmt: skip
    return kinds.get(status, ZooError)(detail or f"the zoo at {base} answered {status}", status=status)


def error_detail(response: Any) -> str:
    """The message of a zoo's error answer (its JSON ``detail``, else the start of the text)."""
    try:
        detail = response.json().get("detail", "")
    except ValueError:
        return str(response.text)[:300]
    return detail if isinstance(detail, str) else str(detail)


def _cache_path(base: str, name: str, version: str) -> Path:
    parts = urlsplit(base)
    host = re.sub(r"[^A-Za-z0-9._-]", "_", parts.netloc)
    key = hashlib.sha256(base.encode()).hexdigest()[:8]
    return cache_dir() / "zoo" / f"{host}-{key}" / name / f"{version}.zip"
