"""Finding models: full text, filters, facet counts, order and pages.

Full text covers the model's id, title, description, tags and authors. On SQLite it is an FTS5
table (``version_text``, rowid = version id) ranked by bm25; every word the user typed must match,
as a prefix (``nucl`` finds "nuclei"). Words are taken with ``\\w+`` and each is quoted, so no
input can be FTS syntax. On PostgreSQL the ``search_vector`` column (weights: id and title A, tags
B, description and authors C) is matched with ``to_tsquery`` built the same way from the quoted
words (every word, as a prefix, English stemming) and ranked by ``ts_rank``. Not
``websearch_to_tsquery``: it has no prefixes, so the two databases would find different models.

Only the latest published version of each model is found. Filters and facets read the
``facets`` table: one row per (version, field, value), so that a model with several weight
formats or consumers counts once under each.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import Float, Integer, delete, desc, func, insert, literal_column, select, text
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select

from microzoo.errors import ZooError
from microzoo.zoo.db import Facet, Model, Version
from microzoo.zoo.records import SORTS, SearchQuery

MAX_PER_PAGE = 100
#: bm25 weights of the FTS5 columns name, title, description, tags, authors (as PostgreSQL's A, A, C, B, C)
BM25_WEIGHTS = "10.0, 10.0, 1.0, 4.0, 1.0"


def fts_query(words_text: str) -> str:
    """An FTS5 query in which every word of ``words_text`` must match as a prefix; "" for no words.

    >>> fts_query('nuclei "OR segm* -x')
    '"nuclei"* "or"* "segm"* "x"*'
    """
    return " ".join(f'"{word}"*' for word in _words(words_text))


def tsquery_text(words_text: str) -> str:
    """The PostgreSQL ``to_tsquery`` text in which every word must match as a prefix.

    >>> tsquery_text("Nuclei & !tissue")
    "'nuclei':* & 'tissue':*"
    """
    return " & ".join(f"'{word}':*" for word in _words(words_text))


def _words(words_text: str) -> list[str]:
    """The words of a query, lower case; nothing else of the input reaches the database's query parser."""
    return re.findall(r"\w+", words_text.lower())


def facet_values(summary: dict[str, Any], compat: dict[str, Any] | None) -> set[tuple[str, str]]:
    """The (field, value) pairs a version is filed under."""
    pairs = {(name, str(summary[name])) for name in ("task", "modality", "dims", "license") if summary.get(name)}
    pairs |= {("weight_format", str(fmt)) for fmt in summary.get("weight_formats") or []}
    consumers = (compat or {}).get("consumers") or {}
    pairs |= {("consumer", name) for name, entry in consumers.items() if isinstance(entry, dict) and entry.get("runs")}
    return pairs


def index_version(session: Session, version: Version) -> None:
    """Write ``version``'s full-text entry and facet rows (replacing those it had)."""
    summary = version.summary or {}
    fields = {
        "id": version.id,
        "name": version.name,
        "title": str(summary.get("title") or ""),
        "description": str(summary.get("description") or ""),
        "tags": " ".join(map(str, summary.get("tags") or [])),
        "authors": " ".join(map(str, summary.get("authors") or [])),
    }
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text(
                "UPDATE versions SET search_vector = "
                "setweight(to_tsvector('english', :name || ' ' || replace(:name, '-', ' ') || ' ' || :title), 'A') || "
                "setweight(to_tsvector('english', :tags), 'B') || "
                "setweight(to_tsvector('english', :description || ' ' || :authors), 'C') WHERE id = :id"
            ),
            fields,
        )
    else:
        session.execute(text("DELETE FROM version_text WHERE rowid = :id"), {"id": version.id})
        session.execute(
            text(
                "INSERT INTO version_text(rowid, name, title, description, tags, authors) "
                "VALUES (:id, :name, :title, :description, :tags, :authors)"
            ),
            fields,
        )
    update_facets(session, version)


def update_facets(session: Session, version: Version) -> None:
    """Replace ``version``'s facet rows: those of its summary and matrix if it is its model's latest, else none.

    Only the versions a search can find have facet rows, so counting them needs no join.
    """
    session.execute(delete(Facet).where(Facet.version_id == version.id))
    if not version.is_latest:
        return
    rows = [
        {"version_id": version.id, "field": f, "value": v} for f, v in facet_values(version.summary, version.compat)
    ]
    if rows:
        session.execute(insert(Facet), rows)


def check_query(query: SearchQuery) -> None:
    """Raise a clear :class:`ZooError` (400) for a sort, page or page size a search cannot take."""
    if query.sort not in SORTS:
        raise ZooError(f"unknown sort {query.sort!r}: use one of {', '.join(SORTS)}")
    if query.page < 1:
        raise ZooError(f"page {query.page} does not exist: pages count from 1")
    if not 1 <= query.per_page <= MAX_PER_PAGE:
        raise ZooError(f"per_page must be between 1 and {MAX_PER_PAGE}, not {query.per_page}")


def search_versions(session: Session, query: SearchQuery) -> tuple[int, list[Version], dict[str, dict[str, int]]]:
    """(total, the page of versions in order, facet counts over everything that matched)."""
    check_query(query)
    postgresql = session.get_bind().dialect.name == "postgresql"
    conditions = _conditions(query, postgresql=postgresql)
    found = select(Version.id).where(Version.is_latest.is_(True), *(c(Version.id) for c in conditions))
    total = session.execute(select(func.count()).select_from(found.subquery())).scalar_one()
    counts = session.execute(
        select(Facet.field, Facet.value, func.count())
        .where(*(c(Facet.version_id) for c in conditions))
        .group_by(Facet.field, Facet.value)
    )
    facets: dict[str, dict[str, int]] = {}
    for field_name, value, count in counts:
        facets.setdefault(field_name, {})[value] = count
    facets = {name: dict(sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))) for name, values in facets.items()}
    ordered = found.join(Model, Model.name == Version.name).add_columns(Version)
    if query.sort == "downloads":
        ordered = ordered.order_by(desc(Model.downloads))
    elif query.sort == "relevance" and _words(query.text):
        ordered = _by_relevance(ordered, query.text, postgresql=postgresql)
    ordered = ordered.order_by(desc(Version.published_at), desc(Version.id))
    page = ordered.offset((query.page - 1) * query.per_page).limit(query.per_page)
    versions = [row[-1] for row in session.execute(page)]
    return total, versions, facets


def _conditions(query: SearchQuery, *, postgresql: bool) -> list[Callable[[Any], Any]]:
    """What a version id must satisfy to be found: one ``IN (ids)`` per filter and one for the words.

    Each is a function of the id column so the same conditions select versions and facet rows.
    """
    sets: list[Any] = [
        select(Facet.version_id).where(Facet.field == field_name, Facet.value == value)
        for field_name, value in query.filters().items()
    ]
    if _words(query.text) and postgresql:
        vector: Any = literal_column("versions.search_vector")
        tsquery = func.to_tsquery("english", tsquery_text(query.text))
        sets.append(select(Version.id).where(vector.op("@@")(tsquery)))
    elif _words(query.text):
        # an IN of the FTS query runs it once; a join lets SQLite run the MATCH once per version
        fts = text("SELECT rowid FROM version_text WHERE version_text MATCH :q").bindparams(q=fts_query(query.text))
        sets.append(fts.columns(rowid=Integer))
    return [_id_in(ids) for ids in sets]


def _id_in(ids: Any) -> Callable[[Any], Any]:
    def condition(column: Any) -> Any:
        return column.in_(ids)

    return condition


def _by_relevance(statement: Select[Any], words_text: str, *, postgresql: bool) -> Select[Any]:
    """``statement`` ordered best match first (PostgreSQL ``ts_rank``, SQLite weighted bm25)."""
    if postgresql:
        vector: Any = literal_column("versions.search_vector")
        return statement.order_by(desc(func.ts_rank(vector, func.to_tsquery("english", tsquery_text(words_text)))))
    hits = (
        text(f"SELECT rowid, bm25(version_text, {BM25_WEIGHTS}) AS score FROM version_text WHERE version_text MATCH :q")
        .bindparams(q=fts_query(words_text))
        .columns(rowid=Integer, score=Float)
        .cte("hits")
        .prefix_with("MATERIALIZED")
    )
    return statement.join(hits, hits.c.rowid == Version.id).order_by(hits.c.score)  # bm25: lower is better
