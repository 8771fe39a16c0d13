"""The zoo: every verb the server, the CLI and the workers use, over the index and the folder.

``Zoo(root, db_url)`` migrates the index to the newest schema and removes what killed processes
left (see ``zoo.storage``). Publishing is all-or-nothing: files are moved into place, then one
transaction adds the model, version, search entry and test job. Review follows a curated zoo:
``draft -> in_review -> (changes_requested -> in_review)* -> published``; a reviewer publishes only
a version whose tests passed; ``publish_on_pass`` publishes on passing tests alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from microzoo.errors import UploadError, ZooAuthError, ZooConflict, ZooError, ZooNotFound
from microzoo.zoo import jobs, storage
from microzoo.zoo.db import (
    Comment,
    Model,
    Token,
    Version,
    default_url,
    engine_for,
    read_connection,
    session_scope,
    upgrade_to_head,
)
from microzoo.zoo.db import utcnow as _now
from microzoo.zoo.ids import check_model_name, check_version, new_model_name, next_integer_version
from microzoo.zoo.records import (
    CommentInfo,
    JobInfo,
    SearchQuery,
    SearchResult,
    TokenInfo,
    VersionInfo,
    VersionPage,
)
from microzoo.zoo.review import ReviewMixin, version_comments
from microzoo.zoo.search import add_download, index_version, search_versions
from microzoo.zoo.tokens import ROLES, check_role, new_token, require_role, token_sha256

__all__ = ["Zoo", "TokenInfo", "VersionInfo", "CommentInfo", "JobInfo", "SearchQuery", "SearchResult", "ROLES"]


class IngestResult(Protocol):
    """What ``zoo.ingest.ingest_upload`` gives: a checked staging folder and its summary (read-only,
    so ingest's frozen dataclass matches)."""

    @property
    def folder(self) -> Path: ...

    @property
    def summary(self) -> Any: ...  # PackageSummary (pydantic) or a dict


class Zoo(ReviewMixin):
    """A model repository: a folder ``root`` and an index at ``db_url`` (default ``ROOT/zoo.sqlite``)."""

    def __init__(self, root: Path, db_url: str | None = None, *, publish_on_pass: bool = False) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_url = db_url or default_url(self.root)
        self.publish_on_pass = publish_on_pass
        self.engine = open_index(self.db_url)
        self.remove_orphans()

    def close(self) -> None:
        """Close the index's connections."""
        self.engine.dispose()

    def _session(self, *, write: bool = False) -> Any:
        return session_scope(self.engine, write=write)

    # tokens
    def create_token(self, role: str, label: str = "") -> str:
        """A new token of ``role``; only its sha256 is stored, so this is the one time it is seen."""
        token = new_token()
        with self._session(write=True) as session:
            session.add(Token(label=label, role=check_role(role), sha256=token_sha256(token), created_at=_now()))
        return token

    def revoke_token(self, token_or_label: str) -> None:
        """Revoke a token, given itself or its label (every live token with that label)."""
        with self._session(write=True) as session:
            rows = session.scalars(
                select(Token).where(
                    (Token.sha256 == token_sha256(token_or_label)) | (Token.label == token_or_label),
                    Token.revoked_at.is_(None),
                )
            ).all()
            if not rows:
                raise ZooNotFound("no live token with that value or label: it is unknown or revoked already")
            for row in rows:
                row.revoked_at = _now()

    def tokens(self) -> list[TokenInfo]:
        """Every token (never the token itself: only its label, role and dates)."""
        with self._session() as session:
            return [TokenInfo.of(row) for row in session.scalars(select(Token).order_by(Token.id))]

    def authorise(self, token: str | None, role: str) -> TokenInfo:
        """The token's record if it is live and its role reaches ``role``; :class:`ZooAuthError` otherwise."""
        if not token:
            raise ZooAuthError("this needs a token: send 'Authorization: Bearer TOKEN' (microzoo zoo token create)")
        with self._session() as session:
            row = session.scalars(select(Token).where(Token.sha256 == token_sha256(token))).one_or_none()
        if row is None:
            raise ZooAuthError("unknown token: check it, or ask the zoo's admin for a new one")
        if row.revoked_at is not None:
            raise ZooAuthError("this token was revoked: ask the zoo's admin for a new one")
        require_role(row.role, role)
        return TokenInfo.of(row)

    # publishing
    def new_staging_dir(self) -> Path:
        """An empty folder under ``ROOT/staging`` for one upload (pass it to ``ingest_upload``)."""
        return storage.new_staging_dir(self.root)

    def publish_upload(self, ingest: IngestResult, *, token: TokenInfo, name: str | None = None) -> VersionInfo:
        """Store a checked upload as a new draft version and queue its test; all or nothing.

        The name is ``name``, else the package's ``id``, else a new adjective-animal; the version is
        the package's ``version``, else the next integer. A package ``id`` that differs from
        ``name``, or a version that exists, is refused; ``rdf.yaml`` is stored with both set.
        """
        require_role(token.role, "uploader")
        summary = _summary_dict(ingest.summary)
        name = _chosen_name(name, summary.get("name_in_package"))
        wanted_version = summary.get("version_in_package")
        if wanted_version is not None:
            wanted_version = check_version(str(wanted_version))
        with storage.publish_lock(self.root):
            with self._session() as session:
                if name is None:
                    name = new_model_name(lambda n: session.get(Model, n) is not None)
                model = session.get(Model, name)
                existing = list(session.scalars(select(Version.version).where(Version.name == name)))
            others = model is not None and model.created_by is not None and model.created_by != token.id
            if others and token.role == "uploader":
                raise ZooAuthError(
                    f"{name} belongs to another uploader: only its uploader or a reviewer adds versions "
                    "(upload it under another name)",
                    status=403,
                )
            version = wanted_version or next_integer_version(existing)
            if version in existing:
                raise ZooConflict(f"{name}/{version} exists and versions never change: upload it as a new version")
            rdf_sha256 = _write_description(Path(ingest.folder), name, version)
            folder, zip_path = storage.move_into_place(Path(ingest.folder), self.root, name, version)
            try:
                info = self._insert_version(name, version, token, summary, rdf_sha256, zip_path)
            except BaseException:
                storage.remove_version_files(self.root, name, version)
                raise
        storage.crash_point("committed")
        return info

    def _insert_version(
        self, name: str, version: str, token: TokenInfo, summary: dict[str, Any], rdf_sha256: str, zip_path: Path
    ) -> VersionInfo:
        zip_sha256, zip_size = storage.sha256_and_size(zip_path)
        try:
            with self._session(write=True) as session:
                if session.get(Model, name) is None:
                    session.add(Model(name=name, created_at=_now(), created_by=token.id, downloads=0))
                    session.flush()
                row = Version(
                    name=name, version=version, status="draft", test_status="pending", created_at=_now(),
                    uploaded_by=token.id, rdf_sha256=rdf_sha256, zip_sha256=zip_sha256, zip_size=zip_size,
                    summary=summary, is_latest=False, downloads=0,
                )  # fmt: skip
                session.add(row)
                session.flush()
                index_version(session, row)
                jobs.add_job(session, "test", version_id=row.id, payload={"name": name, "version": version})
                session.add(Comment(version_id=row.id, author=token.label, role=token.role, kind="status",
                                    text="uploaded as a draft; test run queued", created_at=_now()))  # fmt: skip
                session.flush()
                storage.crash_point("in_transaction")
                return VersionInfo.of(row)
        except IntegrityError as error:
            raise ZooConflict(f"{name}/{version} exists already (uploaded at the same time?)") from error

    # reading
    def versions(self, name: str) -> list[VersionInfo]:
        """Every version of ``name``, oldest first; :class:`ZooNotFound` for an unknown model."""
        with self._session() as session:
            rows = _version_rows(session, name)
        if not rows:
            raise ZooNotFound(f"no model {name!r} in this zoo: `microzoo search` lists them")
        return [VersionInfo.of(row) for row in rows]

    def version(self, name: str, version: str | None = None, *, published_only: bool = True) -> VersionInfo:
        """One version (None: the latest published, or the newest of any state when not ``published_only``)."""
        with self._session() as session:
            return VersionInfo.of(self._row(session, name, version, published_only=published_only))

    def version_page(self, name: str, version: str) -> VersionPage:
        """A version (any state) with its model's versions, its comments and its convert jobs: what its page
        shows, read in one transaction (four statements; one call each of :meth:`version`, :meth:`versions`,
        :meth:`comments` and :meth:`jobs_of` read the version again each)."""
        with self._session() as session:
            rows = _version_rows(session, name)
            row = next((r for r in reversed(rows) if r.version == version), None)
            if row is None:
                raise ZooNotFound(f"no version {name}/{version} in this zoo")
            return VersionPage(
                info=VersionInfo.of(row),
                versions=[VersionInfo.of(r) for r in rows],
                comments=version_comments(session, row),
                convert_jobs=jobs.version_jobs(session, row, "convert"),
            )

    def version_by_id(self, version_id: int) -> VersionInfo:
        """The version with index id ``version_id`` (any state; workers use it)."""
        with self._session() as session:
            row = session.get(Version, version_id)
        if row is None:
            raise ZooNotFound(f"no version with id {version_id}")
        return VersionInfo.of(row)

    def latest_published(self, name: str) -> VersionInfo:
        """The newest published version of ``name``."""
        return self.version(name, None, published_only=True)

    def _row(self, session: Session, name: str, version: str | None, *, published_only: bool) -> Version:
        statement = select(Version).where(Version.name == name)
        if published_only:
            statement = statement.where(Version.status == "published")
        if version is not None:
            statement = statement.where(Version.version == version)
        row = session.scalars(statement.order_by(Version.id.desc()).limit(1)).one_or_none()
        if row is None:
            which = f"{name}/{version}" if version else name
            kind = "published version" if published_only else "version"
            raise ZooNotFound(f"no {kind} {which} in this zoo")
        return row

    # files and ids
    def version_folder(self, name: str, version: str) -> Path:
        """The folder of a stored version (any state; the worker tests drafts from it)."""
        self.version(name, version, published_only=False)
        return storage.version_dir(self.root, name, version)

    def file_path(self, name: str, version: str, relative: str) -> Path:
        """A file of the version, inside its folder; :class:`ZooNotFound` otherwise."""
        self.version(name, version, published_only=False)
        return storage.file_in_version(self.root, name, version, relative)

    def zip_path(self, name: str, version: str) -> Path:
        """The version's package zip."""
        self.version(name, version, published_only=False)
        path = storage.zip_file(self.root, name, version)
        if not path.is_file():
            raise ZooNotFound(f"{name}/{version} has no package zip")
        return path

    def count_download(self, name: str, version: str) -> None:
        """Count one download of the version (and of its model)."""
        with self._session(write=True) as session:
            done = session.execute(
                update(Version).where(Version.name == name, Version.version == version)
                .values(downloads=Version.downloads + 1)
            )  # fmt: skip
            if not done.rowcount:
                raise ZooNotFound(f"no version {name}/{version} in this zoo")
            session.execute(update(Model).where(Model.name == name).values(downloads=Model.downloads + 1))
            add_download(session, name)

    def id_map(self, base_url: str, *, drafts: bool = False) -> dict[str, dict[str, str]]:
        """bioimageio.spec's id map: ``{"NAME": {"source", "sha256"}, "NAME/VERSION": ...}`` of published versions.

        With ``drafts``: ``{"NAME/draft": ...}`` for the newest unpublished version of each model,
        served under ``/drafts/``.
        """
        base = base_url.rstrip("/")
        entries: dict[str, dict[str, str]] = {}
        with self._session() as session:
            if drafts:
                newest = select(func.max(Version.id)).where(Version.status != "published").group_by(Version.name)
                for row in session.scalars(select(Version).where(Version.id.in_(newest)).order_by(Version.name)):
                    source = f"{base}/drafts/{row.name}/{row.version}/files/rdf.yaml"
                    entries[f"{row.name}/draft"] = {"source": source, "sha256": row.rdf_sha256}
                return entries
            published = select(Version).where(Version.status == "published").order_by(Version.name, Version.id)
            for row in session.scalars(published):
                source = f"{base}/artifacts/{row.name}/{row.version}/files/rdf.yaml"
                entries[f"{row.name}/{row.version}"] = {"source": source, "sha256": row.rdf_sha256}
                if row.is_latest:
                    entries[row.name] = {
                        "source": f"{base}/artifacts/{row.name}/files/rdf.yaml",
                        "sha256": row.rdf_sha256,
                    }
        return entries

    # search
    def search(self, query: SearchQuery) -> SearchResult:
        """The latest published version of each model that ``query`` finds, a page of them, and facets."""
        from sqlalchemy.exc import DBAPIError

        for attempt in (1, 2):
            try:
                with read_connection(self.engine) as connection:  # the search checks the generation itself
                    total, items, facets = search_versions(connection, query)
                break
            except DBAPIError as error:  # a connection that died in the pool (a restarted server): once more
                if attempt == 2 or not error.connection_invalidated:
                    raise
        return SearchResult(total=total, items=items, facets=facets, page=query.page, per_page=query.per_page)

    # jobs
    def enqueue(self, kind: str, *, version_id: int | None, payload: dict[str, Any]) -> int:
        """Queue a job; return its id."""
        with self._session(write=True) as session:
            return jobs.add_job(session, kind, version_id=version_id, payload=payload).id

    def claim_job(self, worker_id: str, kinds: tuple[str, ...] = jobs.JOB_KINDS) -> JobInfo | None:
        """The oldest queued job of ``kinds``, now running for ``worker_id``; None when none is queued."""
        return jobs.claim(self.engine, worker_id, kinds)

    def job(self, job_id: int) -> JobInfo:
        with self._session() as session:
            return jobs.job_info(session, job_id)

    def jobs_of(self, name: str, version: str, kind: str | None = None) -> list[JobInfo]:
        """The jobs of a version (only those of ``kind`` if given), oldest first."""
        with self._session() as session:
            return jobs.version_jobs(session, self._row(session, name, version, published_only=False), kind)

    def request_conversion(self, name: str, version: str, *, token: TokenInfo, formats: list[str]) -> int:
        """Queue a ``convert`` job adding ``formats`` to a version; return the job's id.

        The worker converts in its sandbox and uploads the result as the model's next version (its
        test is queued as for any upload). Only the version's uploader or a reviewer may ask, only
        for formats ``microzoo convert`` writes and the version lacks, and only once its test passed.
        """
        from microzoo.runtime.convert import CONVERTIBLE

        info = self.version(name, version, published_only=False)
        if info.uploaded_by != token.id:
            require_role(token.role, "reviewer")
        wanted = list(dict.fromkeys(str(f).strip() for f in formats if str(f).strip()))
        unknown = [f for f in wanted if f not in CONVERTIBLE]
        if not wanted or unknown:
            raise ZooError(f"cannot add {', '.join(unknown) or 'no format'}: choose from {', '.join(CONVERTIBLE)}")
        present = [f for f in wanted if f in (info.summary.get("weight_formats") or [])]
        if present:
            raise ZooConflict(f"{name}/{version} has {', '.join(present)} weights already: ask only for missing ones")
        if info.test_status != "passed":
            raise ZooConflict(
                f"{name}/{version} has test status '{info.test_status}': weights are converted only from a "
                "version whose test passed (the new weights must reproduce its test outputs)"
            )
        return self.enqueue("convert", version_id=info.id, payload={"formats": wanted, "token_id": token.id})

    def requeue_stale_jobs(self, older_than_s: float) -> int:
        """Queue again jobs whose worker has held them longer than ``older_than_s`` (killed mid-job)."""
        return jobs.requeue_stale(self.engine, older_than_s)

    def retest_all(self) -> list[int]:
        """Queue a ``retest`` job for every published version; return the job ids."""
        with self._session(write=True) as session:
            rows = session.execute(
                select(Version.id, Version.name, Version.version).where(Version.status == "published")
            )
            return [
                jobs.add_job(session, "retest", version_id=vid, payload={"name": n, "version": v}).id
                for vid, n, v in rows.all()
            ]

    # consistency
    def _indexed(self) -> set[tuple[str, str]]:
        with self._session() as session:
            return {(n, v) for n, v in session.execute(select(Version.name, Version.version))}

    def check_consistency(self) -> list[str]:
        """What differs between the folder and the index (orphan files, versions without files); [] = consistent."""
        with storage.publish_lock(self.root):
            return storage.check_consistency(self.root, self._indexed())

    def remove_orphans(self) -> int:
        """Delete what killed processes left (files without a version, stale staging); return the count."""
        return storage.remove_orphans(self.root, self._indexed)


def open_index(url: str) -> Engine:
    """An engine for the zoo's index at ``url``, migrated to the newest schema; a clear error if it cannot be."""
    shown = url
    try:
        shown = make_url(url).render_as_string(hide_password=True)
        engine = engine_for(url)
        upgrade_to_head(url, engine=engine)
    except (ArgumentError, OperationalError, ImportError) as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise ZooError(
            f"cannot open the zoo's database {shown}: {reason}. Check --db (sqlite:///PATH or "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE) and that the server is running",
            status=503,
        ) from error
    return engine


def _summary_dict(summary: Any) -> dict[str, Any]:
    if hasattr(summary, "model_dump"):
        return dict(summary.model_dump(mode="json"))
    if isinstance(summary, dict):
        return dict(summary)
    raise TypeError(f"an upload's summary is a PackageSummary or a dict, not {type(summary).__name__}")


def _chosen_name(given: str | None, in_package: str | None) -> str | None:
    if given and in_package and given != in_package:
        raise UploadError(
            f"the package's id is {in_package!r} but it was uploaded as {given!r}: upload it as {in_package!r} "
            "or change (or remove) the id in its rdf.yaml"
        )
    name = given or in_package
    return check_model_name(name) if name else None


def _write_description(folder: Path, name: str, version: str) -> str:
    """Set ``id`` and ``version`` in ``folder/rdf.yaml`` (``zoo.ingest.write_identity``); return its sha256."""
    from microzoo.zoo.ingest import write_identity

    if not (folder / "rdf.yaml").is_file():
        raise UploadError("the checked upload has no rdf.yaml: the package's description is missing")
    write_identity(folder, name=name, version=version)
    return storage.sha256_and_size(folder / "rdf.yaml")[0]


def _version_rows(session: Session, name: str) -> list[Version]:
    """Every version row of model ``name``, oldest first (none for an unknown model)."""
    return list(session.scalars(select(Version).where(Version.name == name).order_by(Version.id)))
