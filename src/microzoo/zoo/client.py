"""The client side of a zoo (``microzoo serve``): push, pull, search and version info over HTTP.

Every error the zoo answers with (its JSON ``{"detail": ...}``) becomes a
:class:`~microzoo.errors.ZooError` carrying the zoo's message and status, so the command line
shows what the server said. ``transport`` lets tests drive a server without sockets
(``httpx.ASGITransport`` or ``httpx.MockTransport``); the default is the network.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from microzoo.errors import OutputError, PackageError
from microzoo.package.archive import extract_zip
from microzoo.package.zoo_ref import fetch_zoo_package, parse_zoo_ref, zoo_error, zoo_headers, zoo_request, zoo_url
from microzoo.progress import ProgressCallback


class ZooClient:
    """A zoo at ``url`` (``$MICROZOO_ZOO`` when None), with a token (``$MICROZOO_TOKEN`` when None)
    for writes, and for reads from a zoo that requires one."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = zoo_url(url)
        headers = {"Authorization": f"Bearer {token}"} if token else zoo_headers()
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport, follow_redirects=True
        )

    def __enter__(self) -> ZooClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def push(self, package: Path, *, name: str | None = None, version: str | None = None) -> dict[str, Any]:
        """Upload a package (folder or zip); the zoo's answer: name, version, status, test_job."""
        package = Path(package)
        if package.is_dir():
            data = zip_folder(package)
        elif package.is_file():
            data = package.read_bytes()
        else:
            raise PackageError(f"no package at {package}: give a package folder or its .zip")
        form = {k: v for k, v in (("name", name), ("version", version)) if v}
        files = {"package": (package.with_suffix(".zip").name, data, "application/zip")}
        return self._json("POST", "/api/models", data=form, files=files)

    def search(self, text: str = "", **filters: Any) -> dict[str, Any]:
        """Search published models: total, items, facets (filters: task, modality, dims, ...)."""
        params = {"q": text, **{k: v for k, v in filters.items() if v not in (None, "")}}
        return self._json("GET", "/api/models", params=params)

    def version_info(self, name: str, version: str | None = None) -> dict[str, Any]:
        """A version's details (its latest published version where ``version`` is None)."""
        if version is None:
            latest = self.model_info(name).get("latest")
            if not latest:
                raise zoo_error(404, f"{name} has no published version yet", self.url)
            version = str(latest)
        return self._json("GET", f"/api/models/{quote(name)}/{quote(version)}")

    def model_info(self, name: str) -> dict[str, Any]:
        """A model: its versions and its latest published version."""
        return self._json("GET", f"/api/models/{quote(name)}")

    def pull(self, ref: str, out: Path, *, progress: ProgressCallback | None = None) -> tuple[str, Path]:
        """Download ``NAME[/VERSION]`` (cached) and write the package's files into the new folder ``out``;
        returns (``NAME/VERSION``, ``out``)."""
        name, version = parse_zoo_ref(ref if ref.startswith("zoo:") else f"zoo:{ref}")
        if version is None:
            version = str(self.version_info(name)["version"])
        out = Path(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise OutputError(f"{out} exists and is not empty: give a new folder with -o")
        zip_path = fetch_zoo_package(f"zoo:{name}/{version}", zoo=self.url, progress=progress)
        extracted = extract_zip(zip_path)
        from microzoo.io.atomic import atomic_output

        with atomic_output(out) as tmp:
            shutil.copytree(extracted, tmp)
        return f"{name}/{version}", out

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return zoo_request(self.url, method, path, http=self._http, **kwargs)


def zip_folder(folder: Path) -> bytes:
    """A package folder as zip bytes (files only, relative names; symlinks are refused)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_symlink():
                raise PackageError(f"{path} is a symbolic link: a zoo refuses them; copy the file into the package")
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()
