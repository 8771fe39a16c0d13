"""Extract a package zip into the cache, within limits.

A zip is extracted once, into ``<cache>/packages/<sha256 of the zip>``, through a temporary
folder renamed when complete. Before anything is written, a zip is refused when it is corrupt,
when a member's name leads outside the package, or when it would expand past the limits below
(a zip bomb): the message says which limit and that a trusted package can be extracted by hand
and opened as a folder.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

from microzoo.errors import PackageError
from microzoo.package.download import cache_dir


def extract_zip(path: Path) -> Path:
    """Extract a zip package into the cache, keyed by its sha256; reuse an earlier extraction.

    Refused, before anything is written: a corrupt zip, a member whose name leads outside the
    package, and archives past :data:`MAX_EXTRACTED_BYTES` or :data:`MAX_COMPRESSION_RATIO`.
    """
    if not zipfile.is_zipfile(path):
        raise PackageError(f"{path} is not a valid zip file (corrupt or truncated): download it again")
    from microzoo.package.load import sha256_of

    target = cache_dir() / "packages" / sha256_of(path)
    if target.is_dir():
        return target
    from microzoo.io.atomic import atomic_output

    try:
        with zipfile.ZipFile(path) as archive:
            _check_zip_members(path, archive.infolist())
            with atomic_output(target) as tmp:
                archive.extractall(tmp)  # checks each member's CRC as it goes
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError) as error:
        raise PackageError(f"{path} is a corrupt zip file ({error}): download it again") from error
    return target


#: The most a package zip may extract to. A bound on the disk one download can fill; the
#: packages we know are far smaller. A larger package can be extracted by the user and opened
#: as a folder, where no limit applies.
MAX_EXTRACTED_BYTES = 4 << 30
#: The highest compression ratio allowed for a member over :data:`RATIO_CHECK_BYTES`. Weights
#: and float test tensors compress about 1.1:1, masks of mostly zeros some tens to one; a member
#: of zeros (a zip bomb) compresses about 1000:1, deflate's limit.
MAX_COMPRESSION_RATIO = 200
#: Members smaller than this are not ratio-checked: a small file of zeros is harmless.
RATIO_CHECK_BYTES = 16 << 20


def _check_zip_members(path: Path, members: list[zipfile.ZipInfo]) -> None:
    """Refuse a zip whose members lead outside the package or expand past the limits."""
    extract_yourself = "If you trust this package, extract it yourself (for example with `unzip`) and give the folder"
    total = 0
    for member in members:
        name = member.filename
        if Path(name).is_absolute() or name.startswith(("/", "\\")) or ".." in Path(name.replace("\\", "/")).parts:
            raise PackageError(f"{path} holds a file outside the package ({name}): refused")
        total += member.file_size
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > RATIO_CHECK_BYTES and ratio > MAX_COMPRESSION_RATIO:
            raise PackageError(
                f"{path}: the member {name} would expand {member.compress_size:,} bytes into "
                f"{member.file_size:,} ({ratio:.0f}:1); refused, as microzoo extracts no member that "
                f"compresses more than {MAX_COMPRESSION_RATIO}:1 (a zip bomb looks like this). {extract_yourself}"
            )
    if total > MAX_EXTRACTED_BYTES:
        raise PackageError(
            f"{path} would extract to {total / (1 << 20):,.0f} MiB, more than microzoo extracts from a zip "
            f"({MAX_EXTRACTED_BYTES / (1 << 20):,.0f} MiB); refused. {extract_yourself}"
        )
