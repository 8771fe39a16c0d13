"""The zoo's index: tables, engines and migrations.

The tables below are the schema at the newest migration (``migrations/versions``); the
migrations create them, never ``metadata.create_all``, so an existing zoo upgrades in place.
SQLite (the default, ``ROOT/zoo.sqlite``) runs in WAL mode with a busy timeout, so a server and
its workers (several processes) share one file; transactions that write begin with
``BEGIN IMMEDIATE`` (see :func:`session_scope`) so two writers queue instead of failing.

Search: ``search_entries`` (revision 0003), one narrow row per model for its latest published
version (the versions a search finds): sort keys, facet keys and, on PostgreSQL, the ``tsvector``
with a GIN index; on SQLite the FTS5 table ``version_text`` (rowid = ``versions.id``) is the text
index beside it. ``zoo.search.index_version`` keeps both in step with ``versions``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from microzoo.io.atomic import exclusive_lock

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: the PostgreSQL advisory lock that lets one process migrate at a time
MIGRATION_LOCK = 0x6D7A6F6F  # "mzoo"


def utcnow() -> dt.datetime:
    """Now, in UTC, timezone-aware (every timestamp in the index is UTC)."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(DateTime):
    """A timestamp stored as UTC; SQLite gives back naive values, which are made UTC again."""

    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def result_processor(self, dialect: Any, coltype: Any) -> Any:
        parent = super().result_processor(dialect, coltype)

        def process(value: Any) -> Any:
            if parent is not None:
                value = parent(value)
            if isinstance(value, dt.datetime) and value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
            return value

        return process


class Base(DeclarativeBase):
    pass


class Token(Base):
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(20))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Model(Base):
    __tablename__ = "models"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    downloads: Mapped[int] = mapped_column(Integer, default=0, index=True)


class Version(Base):
    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("name", "version", name="uq_versions_name_version"),
        Index("ix_versions_latest_published", "is_latest", "published_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), ForeignKey("models.name"), index=True)
    version: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="draft")
    test_status: Mapped[str] = mapped_column(String(20), default="pending")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    uploaded_by: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rdf_sha256: Mapped[str] = mapped_column(String(64))
    zip_sha256: Mapped[str] = mapped_column(String(64))
    zip_size: Mapped[int] = mapped_column(Integer)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    compat: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    test_report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    is_latest: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    # added by revision 0002
    downloads: Mapped[int] = mapped_column(Integer, default=0)
    retest_status: Mapped[str | None] = mapped_column(String(20), nullable=True)
    retested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class SearchEntry(Base):
    """What a search reads: one narrow row per model, for its latest published version (revision 0003).

    ``facets``: the ``field=value`` keys it is filed under (``text[]`` on PostgreSQL, a JSON array on
    SQLite). On PostgreSQL the table also has a ``search_vector`` tsvector (not mapped: written and
    read in SQL by ``zoo.search``); on SQLite the FTS5 table ``version_text`` is the text index.
    """

    __tablename__ = "search_entries"
    version_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    name: Mapped[str] = mapped_column(String(100), index=True)
    published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    downloads: Mapped[int] = mapped_column(Integer, default=0)
    facets: Mapped[list[str]] = mapped_column(JSON().with_variant(ARRAY(Text), "postgresql"))
    __table_args__ = (
        Index("ix_search_entries_date", "published_at", "version_id"),
        Index("ix_search_entries_downloads", "downloads", "published_at", "version_id"),
    )


class SearchState(Base):
    """One row (id 1): ``generation``, raised by every change of ``search_entries`` (revision 0003)."""

    __tablename__ = "search_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(BigInteger)


class Comment(Base):
    __tablename__ = "comments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer, ForeignKey("versions.id", ondelete="CASCADE"), index=True)
    author: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    text: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(20), default="comment")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    version_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("versions.id"), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    claimed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")


def default_url(root: Path) -> str:
    """The embedded database of a zoo folder: ``sqlite:///ROOT/zoo.sqlite``."""
    return f"sqlite:///{Path(root).resolve() / 'zoo.sqlite'}"


def engine_for(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a 30 s busy timeout, foreign keys and ``BEGIN IMMEDIATE`` on writes.

    ``postgresql://`` URLs are served by psycopg 3 (``postgresql+psycopg://``).
    """
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if not url.startswith("sqlite"):
        return _ping_when_idle(create_engine(url, pool_size=10, max_overflow=20))
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun below, not by the driver
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get("write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


#: a pooled server connection unused for longer than this is pinged before it is handed out
PING_AFTER_IDLE_S = 10.0


def _ping_when_idle(engine: Engine) -> Engine:
    """Ping a pooled connection at checkout only when it has been idle for :data:`PING_AFTER_IDLE_S`.

    SQLAlchemy's ``pool_pre_ping`` pings at every checkout: one more round trip for every request
    (a search is one statement: it would be two), for the case of a database restarted while the
    connection sat in the pool. Pinging the connections that sat idle keeps that case (the pool
    then opens a new connection, as with ``pool_pre_ping``); a connection that died while in use
    (a restart under load) fails its next statement once, which makes SQLAlchemy renew the whole
    pool; a search (``Zoo.search``) retries once on such a failure.
    """
    import time

    from sqlalchemy import exc

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # the pool drops this connection and checks out another (or a new one)
            raise exc.DisconnectionError(f"a pooled connection did not answer a ping: {error}") from error

    return engine


@contextlib.contextmanager
def session_scope(engine: Engine, *, write: bool = False) -> Iterator[Session]:
    """A session in one transaction, committed at the end (rolled back on an exception).

    ``write=True`` takes SQLite's write lock at the start (``BEGIN IMMEDIATE``), so a transaction
    that reads and then writes never fails half-way because another process wrote in between.
    """
    with engine.connect() as connection:
        if write:
            connection.execution_options(write=True)
        with Session(bind=connection, expire_on_commit=False) as session, session.begin():
            yield session


@contextlib.contextmanager
def read_connection(engine: Engine) -> Iterator[Connection]:
    """A plain connection for reads that need no common snapshot (a search checks its own generation).

    No ORM session around it (a search's statements are SQL: the session's bookkeeping cost about
    1 ms a search), and on PostgreSQL each statement commits itself, which saves the BEGIN and
    COMMIT round trips; SQLite keeps its transaction (it costs no round trip there), rolled back
    at the end.
    """
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT")
        yield connection


def upgrade_to_head(url: str, *, engine: Engine | None = None) -> None:
    """Bring the database at ``url`` to the newest migration (creating it when empty)."""
    migrate_to(url, "head", engine=engine)


def migrate_to(url: str, revision: str, *, engine: Engine | None = None) -> None:
    """Upgrade the database at ``url`` to ``revision`` (tests build a zoo at an old revision with it)."""
    from alembic import command
    from alembic.config import Config

    own_engine = engine is None
    engine = engine or engine_for(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with _sqlite_open_lock(engine), engine.connect() as connection:
            connection.execution_options(write=True)  # SQLite: BEGIN IMMEDIATE, one migrating process at a time
            if connection.dialect.name == "postgresql":  # the same on PostgreSQL: server and worker start together
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            connection.commit()
    finally:
        if own_engine:
            engine.dispose()


@contextlib.contextmanager
def _sqlite_open_lock(engine: Engine) -> Iterator[None]:
    """On a SQLite file, hold ``DATABASE.lock`` while the first connection opens it and migrates.

    Processes that open a new database together (a server and its workers) race to switch it to
    WAL; SQLite can then answer "database is locked" at once, without waiting out the busy
    timeout. Queuing the opening and the migration on a file lock makes one process do both
    and the others find the database ready. Other databases (PostgreSQL) need nothing here.
    """
    database = engine.url.database or ":memory:"
    in_memory = database == ":memory:" or database.startswith("file::memory:")
    if engine.dialect.name != "sqlite" or in_memory or not Path(database).parent.is_dir():
        yield  # PostgreSQL, an in-memory database, or a folder that is missing (SQLite says so)
        return
    with exclusive_lock(Path(database).with_name(Path(database).name + ".lock")):
        yield


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
