"""Download files over http(s) into a local cache.

The cache is ``$MICROZOO_CACHE`` or ``~/.cache/microzoo``. A URL is fetched once; later calls
return the cached file. Downloads go to a temporary name and are renamed when complete and, where
the sha256 is known, only once it matches, so an interrupted or replaced download is never
mistaken for the file the description names.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from microzoo.errors import ChecksumError, DownloadError
from microzoo.io.atomic import atomic_output
from microzoo.progress import ProgressCallback


def cache_dir() -> Path:
    """The folder for downloads and extracted packages."""
    return Path(os.environ.get("MICROZOO_CACHE", Path.home() / ".cache" / "microzoo"))


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def download(
    url: str,
    *,
    destination: Path | None = None,
    sha256: str | None = None,
    progress: ProgressCallback | None = None,
    timeout: float = 60.0,
    headers: dict[str, str] | None = None,
) -> Path:
    """Download ``url`` (once) and return the local path.

    Without ``destination`` the file goes to ``<cache>/downloads/<hash of url>/<file name>``.
    With ``sha256`` the download is kept only if its digest matches (else :class:`ChecksumError`,
    and nothing is left behind).
    """
    if destination is None:
        name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "download"
        key = hashlib.sha256(url.encode()).hexdigest()[:24]
        destination = cache_dir() / "downloads" / key / name
    if destination.is_file():
        return destination
    import httpx

    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=timeout, headers=headers) as response:
            if response.status_code != 200:
                raise DownloadError(
                    f"downloading {url} failed: the server answered {response.status_code} "
                    f"{response.reason_phrase}; check the URL"
                )
            total = int(response.headers.get("content-length", 0))
            done = 0
            digest = hashlib.sha256()
            with atomic_output(destination) as tmp:
                with open(tmp, "wb") as f:
                    for chunk in response.iter_bytes(1 << 20):
                        f.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, max(total, done), f"downloading {destination.name}")
                if sha256 is not None and digest.hexdigest() != str(sha256):
                    raise ChecksumError(
                        f"sha256 mismatch for {url}: the description says {sha256}, the download has "
                        f"{digest.hexdigest()}; it was not kept. The file on the server was replaced or "
                        "damaged: tell the package's author, or try again later"
                    )
    except httpx.HTTPError as error:
        raise DownloadError(
            f"downloading {url} failed ({type(error).__name__}: {error}); check the URL and "
            "your network connection, or download the package yourself and give its path"
        ) from error
    return destination
