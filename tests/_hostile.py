"""Hostile and careless packages for the safety tests: made from the zoo's example package.

Every maker copies the example (``/work/shared/data/bmz/unet2d_nuclei_broad`` or the path
given) into a new folder, writable, then changes one thing. ``serve_folder`` serves a folder on
a loopback port; ``listening_nobody_answers`` is a loopback port that counts connections.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import os
import shutil
import socket
import stat
import struct
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

DESCRIPTION = "bioimageio.yaml"


def writable_copy(example: Path, target: Path) -> Path:
    """A writable copy of the package folder ``example`` at ``target``."""
    shutil.copytree(example, target)
    os.chmod(target, 0o755)
    for path in target.iterdir():
        os.chmod(path, 0o644)
    return target


def edited_copy(example: Path, target: Path, edit: Callable[[str], str]) -> Path:
    """A copy whose ``bioimageio.yaml`` text is ``edit(text)``."""
    folder = writable_copy(example, target)
    description = folder / DESCRIPTION
    description.write_text(edit(description.read_text()))
    return folder


def zip_folder(folder: Path, target: Path, extra: dict[str, bytes] | None = None) -> Path:
    """Zip the files of ``folder`` (flat), with ``extra`` members (name -> bytes) added."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return target


def zip_bomb(folder: Path, target: Path, *, member_mib: int) -> Path:
    """The package zipped with one extra member of ``member_mib`` MiB of zeros (ratio ~1000:1)."""
    zip_folder(folder, target)
    chunk = bytes(1 << 20)
    with zipfile.ZipFile(target, "a", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("zeros.bin", "w", force_zip64=True) as member:
            for _ in range(member_mib):
                member.write(chunk)
    return target


def zip_with_symlink(folder: Path, target: Path, *, name: str = "weights.onnx", points_to: str = "/etc/passwd") -> Path:
    """The package zipped with ``name`` replaced by a symbolic-link member pointing at ``points_to``
    (what ``zip --symlinks`` writes: mode ``S_IFLNK`` in the external attributes, the target as data)."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            if path.name != name:
                archive.write(path, path.name)
        link = zipfile.ZipInfo(name)
        link.create_system = 3  # unix: the mode in the high bits is honoured by unzip
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, points_to)
    return target


def zip_declaring(folder: Path, target: Path, *, name: str, declared_bytes: int) -> Path:
    """The package zipped, with the central directory claiming that member ``name`` holds
    ``declared_bytes`` (compressed and uncompressed alike, so no ratio stands out): a zip that
    lies about its size, as a hostile one may (below 4 GiB: no zip64 fields)."""
    zip_folder(folder, target)
    data = bytearray(target.read_bytes())
    encoded = name.encode()
    start = 0
    while (start := data.find(b"PK\x01\x02", start)) >= 0:
        name_length = struct.unpack_from("<H", data, start + 28)[0]
        if bytes(data[start + 46 : start + 46 + name_length]) == encoded:
            struct.pack_into("<II", data, start + 20, declared_bytes, declared_bytes)
            target.write_bytes(bytes(data))
            return target
        start += 4
    raise ValueError(f"{name} is not in {folder}")


def zip_wrapped(folder: Path, target: Path, *, top: str = "my-model") -> Path:
    """The package zipped inside one top folder (``my-model/bioimageio.yaml``, ...), as zipping a folder does."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"{top}/{path.name}")
    return target


class ExecutesOnUnpickle:
    """An object whose unpickling runs ``os.system(command)``: what a hostile "state dict" holds."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def replace_file(folder: Path, name: str, data: bytes) -> None:
    """Write ``data`` as ``name`` in the package and put its sha256 in the description, so only the
    content (not a hash mismatch) is what a check can object to."""
    path = folder / name
    old = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    path.write_bytes(data)
    if old is not None:
        description = folder / DESCRIPTION
        description.write_text(description.read_text().replace(old, hashlib.sha256(data).hexdigest()))


def alias_bomb(levels: int = 10, width: int = 10) -> str:
    """YAML whose aliases expand to ``width ** levels`` scalars (the "billion laughs")."""
    lines = ['a0: &a0 ["lol"]']
    for level in range(1, levels):
        aliases = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level} [{aliases}]")
    return "\n".join(lines) + "\nformat_version: 0.5.4\ntype: model\n"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_folder(root: Path) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1; yields the base URL (no trailing slash)."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def counting_port() -> Iterator[tuple[str, list[int]]]:
    """A loopback port that accepts connections, counts them and closes them at once.

    Yields ``(base URL, counter)``: ``counter[0]`` is the number of connections made."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    counter = [0]
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            counter[0] += 1
            connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", counter
    finally:
        stop.set()
        thread.join()
        listener.close()


def files_under(folder: Path) -> set[Path]:
    """Every file below ``folder`` (empty set if it does not exist)."""
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()
