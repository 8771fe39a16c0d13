"""Review of versions and the outcome of test jobs (the part of :class:`~microzoo.zoo.service.Zoo` that moves states).

States: ``draft -> in_review -> changes_requested -> in_review -> ... -> published``. The uploader
(or a reviewer) submits; a reviewer requests changes (with a comment) or publishes, and only a
version whose tests passed. Every change of state is also a comment of kind ``status``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from microzoo.errors import ZooConflict, ZooError
from microzoo.zoo import jobs
from microzoo.zoo.db import Comment, Version, utcnow
from microzoo.zoo.records import CommentInfo, TokenInfo, VersionInfo
from microzoo.zoo.search import index_version
from microzoo.zoo.tokens import require_role, role_allows


class ReviewMixin:
    """Review verbs and ``finish_job``; :class:`Zoo` provides ``_session``, ``_row`` and ``publish_on_pass``."""

    publish_on_pass: bool

    def _session(self, *, write: bool = False) -> Any:  # pragma: no cover - provided by Zoo
        raise NotImplementedError

    def _row(self, session: Session, name: str, version: str | None, *, published_only: bool) -> Version:
        raise NotImplementedError  # pragma: no cover - provided by Zoo

    def submit_for_review(self, name: str, version: str, *, token: TokenInfo) -> VersionInfo:
        """Ask reviewers to look at a draft (or at a version changed as they asked)."""
        require_role(token.role, "uploader")
        with self._session(write=True) as session:
            row = self._row(session, name, version, published_only=False)
            if row.uploaded_by != token.id and not role_allows(token.role, "reviewer"):
                raise ZooError(f"only the uploader of {name}/{version} or a reviewer can submit it", status=403)
            _move(session, row, ("draft", "changes_requested"), "in_review", token, "submitted for review")
            return VersionInfo.of(row)

    def request_changes(self, name: str, version: str, *, token: TokenInfo, comment: str) -> VersionInfo:
        """Send a version in review back to its uploader, saying what to change."""
        require_role(token.role, "reviewer")
        if not comment.strip():
            raise ZooError("say which changes are needed: the comment is empty")
        with self._session(write=True) as session:
            row = self._row(session, name, version, published_only=False)
            _move(session, row, ("in_review",), "changes_requested", token, "changes requested")
            _add_comment(session, row, token, comment, "comment")
            return VersionInfo.of(row)

    def publish(self, name: str, version: str, *, token: TokenInfo, comment: str = "") -> VersionInfo:
        """Publish a version in review whose tests passed; it becomes its model's latest if newest."""
        require_role(token.role, "reviewer")
        with self._session(write=True) as session:
            row = self._row(session, name, version, published_only=False)
            if row.status == "in_review" and row.test_status != "passed":
                raise ZooConflict(
                    f"{name}/{version} cannot be published: its tests have not passed (test status: "
                    f"{row.test_status}); wait for its test run, or request changes"
                )
            _move(session, row, ("in_review",), "published", token, "published")
            if comment.strip():
                _add_comment(session, row, token, comment, "comment")
            _mark_published(session, row)
            return VersionInfo.of(row)

    def comment(self, name: str, version: str, *, token: TokenInfo, text: str) -> CommentInfo:
        """Add a comment to a version (any token)."""
        require_role(token.role, "uploader")
        if not text.strip():
            raise ZooError("the comment is empty")
        with self._session(write=True) as session:
            row = self._row(session, name, version, published_only=False)
            return CommentInfo.of(_add_comment(session, row, token, text, "comment"))

    def comments(self, name: str, version: str) -> list[CommentInfo]:
        """The version's comments and changes of state, oldest first."""
        with self._session() as session:
            return version_comments(session, self._row(session, name, version, published_only=False))

    def review_queue(
        self, statuses: tuple[str, ...] = ("in_review", "changes_requested", "draft")
    ) -> list[VersionInfo]:
        """The versions not published yet (in review first, then by upload), for the review page."""
        with self._session() as session:
            rows = session.scalars(select(Version).where(Version.status.in_(statuses)).order_by(Version.id)).all()
        order = {status: i for i, status in enumerate(statuses)}
        return sorted((VersionInfo.of(row) for row in rows), key=lambda v: order[v.status])

    def finish_job(self, job_id: int, *, ok: bool, result: dict[str, Any], error: str = "") -> None:
        """Record a job's end. ``test``: the version's test status (``passed`` when ``ok``, ``error`` when
        ``error`` is given, else ``failed``), report and compatibility matrix, and with ``publish_on_pass``
        publication. ``retest``: the re-test status and time (the report stays in the job's result).
        """
        with self._session(write=True) as session:
            job = jobs.mark_finished(session, job_id, ok=ok, result=result, error=error)
            row = session.get(Version, job.version_id) if job.version_id is not None else None
            if row is None or job.kind not in ("test", "retest"):
                return
            outcome = "passed" if ok else ("error" if error else "failed")
            if job.kind == "retest":
                row.retest_status = outcome
                row.retested_at = utcnow()
                return
            row.test_status = outcome
            row.test_report = result
            row.compat = compatibility(row.summary, result)
            index_version(session, row)  # the consumers may have changed
            _add_comment(session, row, None, f"test run {outcome}" + (f": {error}" if error else ""), "status")
            if self.publish_on_pass and outcome == "passed" and row.status != "published":
                row.status = "published"
                _add_comment(session, row, None, "published: its tests passed (publish on pass)", "status")
                _mark_published(session, row)


def compatibility(summary: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """The compatibility matrix of ``zoo.compat`` from a test report (``{"formats": {fmt: {"status"}}}``).

    Formats the summary lists but the report does not are ``not tested``. Without ``zoo.compat``
    (not installed yet) the results alone are stored.
    """
    formats = report.get("formats") or {}
    results = {
        fmt: str((formats.get(fmt) or {}).get("status", "not tested")) for fmt in summary.get("weight_formats") or []
    }
    results.update(
        {fmt: str(entry.get("status", "error")) for fmt, entry in formats.items() if isinstance(entry, dict)}
    )
    try:
        from microzoo.zoo.compat import compat_matrix
        from microzoo.zoo.summary import PackageSummary
    except ImportError:  # zoo.compat not merged yet: the raw results
        return {"formats": results}
    return dict(compat_matrix(PackageSummary.model_validate(summary), results))


def _move(session: Session, row: Version, allowed: tuple[str, ...], new: str, token: TokenInfo, what: str) -> None:
    if row.status not in allowed:
        raise ZooConflict(
            f"{row.name}/{row.version} is {row.status.replace('_', ' ')}: it cannot be {what} "
            f"(only a version that is {' or '.join(s.replace('_', ' ') for s in allowed)})"
        )
    row.status = new
    _add_comment(session, row, token, what, "status")


def _add_comment(session: Session, row: Version, token: TokenInfo | None, text: str, kind: str) -> Comment:
    author, role = (token.label, token.role) if token else ("zoo", "system")
    comment = Comment(version_id=row.id, author=author, role=role, text=text, kind=kind, created_at=utcnow())
    session.add(comment)
    session.flush()
    return comment


def _mark_published(session: Session, row: Version) -> None:
    """Set the publication time and make the newest published version of the model its latest."""
    row.published_at = utcnow()
    session.flush()
    newest = session.scalars(
        select(Version.id).where(Version.name == row.name, Version.status == "published").order_by(Version.id.desc())
    ).first()
    for version in session.scalars(select(Version).where(Version.name == row.name)):
        version.is_latest = version.id == newest
        index_version(session, version)  # only the latest has a search entry


def version_comments(session: Session, row: Version) -> list[CommentInfo]:
    """The comments and changes of state of the version ``row``, oldest first."""
    found = session.scalars(select(Comment).where(Comment.version_id == row.id).order_by(Comment.id))
    return [CommentInfo.of(c) for c in found]
