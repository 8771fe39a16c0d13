"""A throw-away PostgreSQL server for the tests: started once per session, removed at the end.

``initdb`` refuses to run as root, so as root the cluster belongs to the ``postgres`` system user
(Debian's package creates it) and is made with ``runuser -u postgres --``; otherwise it belongs to
the current user. It listens on a free loopback port, with its socket in its own temporary folder,
``fsync`` off (nothing here must survive a power cut). Where no server can be had (no binaries; root
without a ``postgres`` user) the PostgreSQL tests skip and say why: ``make system`` installs it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_databases = itertools.count()


def postgres_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: Debian's newest, else the PATH's."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if debian:
        return debian[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def why_no_postgres() -> str | None:
    """Why no server can be started here (None: one can)."""
    if postgres_bin() is None:
        return "PostgreSQL is not installed (no initdb): `make system` installs Debian's postgresql as root"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a 'postgres' user to own the cluster (initdb refuses root)"
    return None


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a cluster; yield its admin URL (``postgresql+psycopg://postgres@127.0.0.1:PORT/postgres``)."""
    bindir = postgres_bin()
    assert bindir is not None
    folder = Path(tempfile.mkdtemp(prefix="microzoo-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log, port = folder / "data", folder / "server.log", _free_port()
    try:
        subprocess.run(
            [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
             "--no-sync"],
            check=True, capture_output=True,
        )  # fmt: skip
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start"],
            check=True, capture_output=True,
        )  # fmt: skip
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
            )
    except subprocess.CalledProcessError as error:
        detail = (error.stderr or b"").decode(errors="replace") + (log.read_text() if log.exists() else "")
        raise RuntimeError(f"the test PostgreSQL server did not start: {detail}") from error
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """The URL of a session-wide throw-away PostgreSQL server (skips, saying why, where none can be had)."""
    reason = why_no_postgres()
    if reason:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


def new_database(admin_url: str) -> str:
    """Create an empty database on the server of ``admin_url``; return its URL."""
    import psycopg

    name = f"zoo_{os.getpid()}_{next(_databases)}"
    plain = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(admin_url: str, url: str) -> None:
    """Drop the database of ``url`` (connections still open to it are ended)."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
