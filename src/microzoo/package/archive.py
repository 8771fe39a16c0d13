"""Extract a package zip, within limits: the runner's cache and the zoo's uploads use one check.

A zip is extracted once, into ``<cache>/packages/<sha256 of the zip>``, through a temporary
folder renamed when complete. Before anything is written, a zip is refused when it is corrupt,
when a member's name leads outside the package or is a symbolic link, or when it would expand
past the limits below (a zip bomb): the message says which limit and what to do.
:func:`check_zip_members` is that check alone, with the limits as a parameter; the zoo calls it
with its own, smaller :class:`ZipLimits` (``microzoo.zoo.ingest``).
"""

from __future__ import annotations

import dataclasses
import stat
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

from microzoo.errors import ArchiveSizeError, PackageError
from microzoo.package.download import cache_dir

#: What the runner tells a user whose zip exceeds a limit.
EXTRACT_YOURSELF = "If you trust this package, extract it yourself (for example with `unzip`) and give the folder"


def extract_zip(path: Path) -> Path:
    """Extract a zip package into the cache, keyed by its sha256; reuse an earlier extraction.

    Refused, before anything is written: a corrupt zip, a member whose name leads outside the
    package or that is a symbolic link, and archives past :data:`MAX_EXTRACTED_BYTES` or
    :data:`MAX_COMPRESSION_RATIO`.
    """
    if not zipfile.is_zipfile(path):
        raise PackageError(f"{path} is not a valid zip file (corrupt or truncated): download it again")
    from microzoo.package.load import sha256_of

    target = cache_dir() / "packages" / sha256_of(path)
    if target.is_dir():
        return target
    from microzoo.io.atomic import atomic_output

    limits = ZipLimits(MAX_EXTRACTED_BYTES, MAX_COMPRESSION_RATIO, RATIO_CHECK_BYTES)  # read now: tests lower them
    try:
        with zipfile.ZipFile(path) as archive:
            check_zip_members(path, archive.infolist(), limits=limits)
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


@dataclasses.dataclass(frozen=True)
class ZipLimits:
    """How far a zip may expand: in all, per member over ``ratio_check_bytes``, and in how many members."""

    max_total_bytes: int
    max_ratio: float
    ratio_check_bytes: int
    #: a bound on the files (inodes) one zip creates; packages hold tens
    max_members: int = 100_000


def check_zip_members(
    source: str | Path,
    members: Sequence[zipfile.ZipInfo],
    *,
    limits: ZipLimits,
    advice: str = EXTRACT_YOURSELF,
) -> None:
    """Refuse a zip whose members lead outside the package, are symbolic links, or expand past ``limits``.

    The sizes checked are those the zip declares; :mod:`zipfile` writes no more than a member
    declares, so they bound what extraction writes.

    Raises
    ------
    PackageError
        A member's name is absolute or contains ``..``, or a member is a symbolic link.
    ArchiveSizeError
        A member compresses more than ``limits.max_ratio``, all would extract past
        ``limits.max_total_bytes``, or there are more than ``limits.max_members`` members
        (``advice`` ends the message).
    """
    if len(members) > limits.max_members:
        raise ArchiveSizeError(
            f"{source} holds {len(members):,} files, more than are extracted from one zip ({limits.max_members:,}); "
            f"refused. {advice}"
        )
    total = 0
    for member in members:
        name = member.filename
        if Path(name).is_absolute() or name.startswith(("/", "\\")) or ".." in Path(name.replace("\\", "/")).parts:
            raise PackageError(f"{source} holds a file outside the package ({name}): refused")
        if stat.S_ISLNK(member.external_attr >> 16):
            raise PackageError(
                f"{source} holds a symbolic link ({name}): refused, a package holds its files themselves. "
                "Zip the files the link points to instead"
            )
        total += member.file_size
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > limits.ratio_check_bytes and ratio > limits.max_ratio:
            raise ArchiveSizeError(
                f"{source}: the member {name} would expand {member.compress_size:,} bytes into "
                f"{member.file_size:,} ({ratio:.0f}:1); refused, as no member that compresses more than "
                f"{limits.max_ratio:g}:1 is extracted (a zip bomb looks like this). {advice}"
            )
    if total > limits.max_total_bytes:
        raise ArchiveSizeError(
            f"{source} would extract to {total / (1 << 20):,.0f} MiB, more than is extracted from a zip "
            f"({limits.max_total_bytes / (1 << 20):,.0f} MiB); refused. {advice}"
        )
