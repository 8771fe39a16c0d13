"""What the zoo's service returns: small frozen records, apart from the database rows.

Front ends (the server, the CLI) and the worker see only these; ``summary`` is the
``PackageSummary`` of ``zoo.ingest`` as a dict, ``compat`` the matrix of ``zoo.compat``,
``test_report`` the worker's ``TestRunReport``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from microzoo.zoo.db import Comment, Job, Token, Version

SORTS = ("relevance", "downloads", "date")
#: fields a search filters by and counts (facets); consumer comes from the compatibility matrix
FACET_FIELDS = ("task", "modality", "dims", "weight_format", "license", "consumer")


@dataclass(frozen=True)
class TokenInfo:
    id: int
    label: str
    role: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None

    @classmethod
    def of(cls, row: Token) -> TokenInfo:
        return cls(row.id, row.label, row.role, row.created_at, row.revoked_at)


@dataclass(frozen=True)
class VersionInfo:
    id: int
    name: str
    version: str
    status: str  # draft | in_review | changes_requested | published
    test_status: str  # pending | running | passed | failed | error
    created_at: dt.datetime
    published_at: dt.datetime | None
    uploaded_by: int | None
    rdf_sha256: str
    zip_sha256: str
    zip_size: int
    summary: dict[str, Any]
    compat: dict[str, Any] | None
    test_report: dict[str, Any] | None
    is_latest: bool
    downloads: int
    retest_status: str | None
    retested_at: dt.datetime | None

    @property
    def url_path(self) -> str:
        return f"{self.name}/{self.version}"

    @classmethod
    def of(cls, row: Version) -> VersionInfo:
        return cls(
            id=row.id, name=row.name, version=row.version, status=row.status, test_status=row.test_status,
            created_at=row.created_at, published_at=row.published_at, uploaded_by=row.uploaded_by,
            rdf_sha256=row.rdf_sha256, zip_sha256=row.zip_sha256, zip_size=row.zip_size, summary=row.summary,
            compat=row.compat, test_report=row.test_report, is_latest=row.is_latest, downloads=row.downloads or 0,
            retest_status=row.retest_status, retested_at=row.retested_at,
        )  # fmt: skip


@dataclass(frozen=True)
class CommentInfo:
    id: int
    version_id: int
    author: str
    role: str
    text: str
    kind: str  # comment | status
    created_at: dt.datetime

    @classmethod
    def of(cls, row: Comment) -> CommentInfo:
        return cls(row.id, row.version_id, row.author, row.role, row.text, row.kind, row.created_at)


@dataclass(frozen=True)
class JobInfo:
    id: int
    kind: str  # test | retest | try | convert
    version_id: int | None
    payload: dict[str, Any]
    status: str  # queued | running | done | failed
    created_at: dt.datetime
    claimed_by: str | None
    claimed_at: dt.datetime | None
    finished_at: dt.datetime | None
    result: dict[str, Any] | None
    error: str
    name: str | None = None  # the version's model and version, when the job has one
    version: str | None = None

    @classmethod
    def of(cls, row: Job, version: Version | None = None) -> JobInfo:
        return cls(
            id=row.id, kind=row.kind, version_id=row.version_id, payload=row.payload, status=row.status,
            created_at=row.created_at, claimed_by=row.claimed_by, claimed_at=row.claimed_at,
            finished_at=row.finished_at, result=row.result, error=row.error or "",
            name=version.name if version else None, version=version.version if version else None,
        )  # fmt: skip


@dataclass(frozen=True)
class VersionPage:
    """What a version's page shows from the index, read in one transaction."""

    info: VersionInfo
    versions: list[VersionInfo]  # every version of the model, oldest first
    comments: list[CommentInfo]
    convert_jobs: list[JobInfo]  # asked conversions to other weight formats, oldest first


@dataclass(frozen=True)
class SearchQuery:
    """A search: words (all must match, as prefixes), filters (exact values), order and page."""

    text: str = ""
    task: str | None = None
    modality: str | None = None
    dims: str | None = None
    weight_format: str | None = None
    license: str | None = None
    consumer: str | None = None
    sort: str = "relevance"  # relevance | downloads | date
    page: int = 1
    per_page: int = 20

    def filters(self) -> dict[str, str]:
        """The filters set, field -> value."""
        return {name: value for name in FACET_FIELDS if (value := getattr(self, name))}


@dataclass(frozen=True)
class SearchResult:
    total: int
    items: list[VersionInfo]
    facets: dict[str, dict[str, int]] = field(default_factory=dict)
    page: int = 1
    per_page: int = 20
