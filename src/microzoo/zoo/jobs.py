"""The job queue in the index: test runs, re-tests, "try it" runs and conversions.

Workers on any machine that reaches the database claim jobs; no job is ever given to two.
PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` then ``UPDATE`` in one transaction (workers
skip each other's locked rows instead of waiting). SQLite: one ``UPDATE ... WHERE id = (first
queued) RETURNING`` inside ``BEGIN IMMEDIATE``, which holds the only write lock.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from microzoo.errors import ZooError, ZooNotFound
from microzoo.zoo.db import Job, Version, session_scope, utcnow
from microzoo.zoo.records import JobInfo

JOB_KINDS = ("test", "retest", "try", "convert")


def version_jobs(session: Session, row: Version, kind: str | None = None) -> list[JobInfo]:
    """The jobs of the version ``row`` (only those of ``kind`` if given), oldest first."""
    statement = select(Job).where(Job.version_id == row.id)
    if kind is not None:
        statement = statement.where(Job.kind == kind)
    return [JobInfo.of(job, row) for job in session.scalars(statement.order_by(Job.id))]


def add_job(session: Session, kind: str, *, version_id: int | None, payload: dict[str, Any]) -> Job:
    """Queue a job in ``session``'s transaction (flushed: its id is set)."""
    if kind not in JOB_KINDS:
        raise ZooError(f"unknown job kind {kind!r}: use one of {', '.join(JOB_KINDS)}")
    job = Job(kind=kind, version_id=version_id, payload=payload, status="queued", created_at=utcnow(), error="")
    session.add(job)
    session.flush()
    return job


def claim(engine: Engine, worker_id: str, kinds: tuple[str, ...]) -> JobInfo | None:
    """Mark the oldest queued job of ``kinds`` as running for ``worker_id`` and return it (None: none queued)."""
    now = utcnow()
    with session_scope(engine, write=True) as session:
        first = select(Job.id).where(Job.status == "queued", Job.kind.in_(kinds)).order_by(Job.id).limit(1)
        if engine.dialect.name == "postgresql":
            job_id = session.execute(first.with_for_update(skip_locked=True)).scalar_one_or_none()
            if job_id is None:
                return None
            session.execute(
                update(Job).where(Job.id == job_id).values(status="running", claimed_by=worker_id, claimed_at=now)
            )
        else:
            job_id = session.execute(
                update(Job)
                .where(Job.id == first.scalar_subquery(), Job.status == "queued")
                .values(status="running", claimed_by=worker_id, claimed_at=now)
                .returning(Job.id)
            ).scalar_one_or_none()
            if job_id is None:
                return None
        info = job_info(session, job_id)
        if info.kind == "test" and info.version_id is not None:
            session.execute(update(Version).where(Version.id == info.version_id).values(test_status="running"))
        return info


def job_info(session: Session, job_id: int) -> JobInfo:
    """The job ``job_id`` with its version's name and version; :class:`ZooNotFound` if there is none."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise ZooNotFound(f"no job {job_id}")
    version = session.get(Version, job.version_id) if job.version_id is not None else None
    return JobInfo.of(job, version)


def mark_finished(session: Session, job_id: int, *, ok: bool, result: dict[str, Any], error: str) -> Job:
    """Record a job's end (``done`` or ``failed``); a job finished already is a :class:`ZooError`."""
    job = session.get(Job, job_id, with_for_update=session.get_bind().dialect.name == "postgresql")
    if job is None:
        raise ZooNotFound(f"no job {job_id}")
    if job.status in ("done", "failed"):
        raise ZooError(f"job {job_id} has finished already ({job.status})", status=409)
    job.status = "done" if ok else "failed"
    job.result = result
    job.error = error
    job.finished_at = utcnow()
    return job


def requeue_stale(engine: Engine, older_than_s: float) -> int:
    """Queue again the running jobs claimed more than ``older_than_s`` seconds ago; return how many."""
    cutoff = utcnow() - dt.timedelta(seconds=older_than_s)
    with session_scope(engine, write=True) as session:
        stale = session.execute(
            update(Job)
            .where(Job.status == "running", Job.claimed_at < cutoff)
            .values(status="queued", claimed_by=None, claimed_at=None)
            .returning(Job.kind, Job.version_id)
        ).all()
        tests = [version_id for kind, version_id in stale if kind == "test" and version_id is not None]
        if tests:
            session.execute(update(Version).where(Version.id.in_(tests)).values(test_status="pending"))
        return len(stale)
