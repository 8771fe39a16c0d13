"""Finding models: full text, filters, facet counts, order and pages.

Everything a search reads is in ``search_entries`` (revision 0003): one narrow row per model, for
its latest published version (the only version a search finds), with the sort keys (publication
time, the model's downloads) and the facet keys ``field=value`` (``text[]`` on PostgreSQL, a JSON
array on SQLite), so that a model with several weight formats or consumers counts once under each.
:func:`index_version` writes a version's entry when it is its model's latest and removes it
otherwise; publishing, a finished test run (a new compatibility matrix) and an upload call it, a
download adds to the entry's count. The wide ``versions`` rows are read for the page alone.

Full text covers the model's id, title, description, tags and authors. On SQLite it is an FTS5
table (``version_text``, rowid = version id, rows for the entries only) ranked by bm25; every word
the user typed must match, as a prefix (``nucl`` finds "nuclei"). Words are taken with ``\\w+``
and each is quoted, so no input can be FTS syntax. On PostgreSQL the entry's ``search_vector``
(weights: id and title A, tags B, description and authors C; GIN-indexed) is matched with
``to_tsquery`` built the same way from the quoted words (every word, as a prefix, English
stemming) and ranked by ``ts_rank``. Not ``websearch_to_tsquery``: it has no prefixes, so the
two databases would find different models.

A search is three statements over the entries (the count, the facet counts, the page of ids,
each filtered the same way) and one that loads the page's versions. The count and facet counts of
every search, and its page of ids unless it is ordered by downloads, are cached in each process
(the most recent :data:`MAX_CACHED` searches), keyed by ``search_state.generation``, which
:func:`index_version` raises whenever an entry changes: that number is the one definition of when
a cached figure is stale, whichever process changed it, so a cached search finds what the
database would. A zoo's index changes when a version is published or tested, and is read at every
search: a repeated search (the home page, a facet click, a popular word) then costs the read of
the generation and of its page's rows. Pages ordered by downloads are always computed, as a
download changes their order without changing the generation.
The statements are SQL text built from fixed pieces; the user's words and filter values are bound
parameters only.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Any, cast

from sqlalchemy import Text, bindparam, func, insert, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from microzoo.errors import ZooError
from microzoo.zoo.db import Model, SearchEntry, Version
from microzoo.zoo.records import SORTS, SearchQuery

MAX_PER_PAGE = 100
#: searches whose counts (and pages of ids) each process keeps, the most recently used
MAX_CACHED = 512


class _Recent:
    """The ``size`` most recently used results of a computation, by key; safe across the server's threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


#: (database URL, generation, words, filters) -> (total, facets)
_COUNTS = _Recent(MAX_CACHED)
#: (database URL, generation, words, filters, sort, page, per page) -> the page's version ids
_PAGES = _Recent(MAX_CACHED)
#: bm25 weights of the FTS5 columns name, title, description, tags, authors (as PostgreSQL's A, A, C, B, C)
BM25_WEIGHTS = "10.0, 10.0, 1.0, 4.0, 1.0"
#: PostgreSQL: the weighted tsvector of an entry, from the bound parameters of :func:`_text_fields`
TSVECTOR = (
    "setweight(to_tsvector('english', :name || ' ' || replace(:name, '-', ' ') || ' ' || :title), 'A') || "
    "setweight(to_tsvector('english', :tags), 'B') || "
    "setweight(to_tsvector('english', :description || ' ' || :authors), 'C')"
)


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


def facet_keys(summary: dict[str, Any], compat: dict[str, Any] | None) -> list[str]:
    """The ``field=value`` keys of an entry, sorted (field names have no ``=``; the value is the rest)."""
    return sorted(f"{field_name}={value}" for field_name, value in facet_values(summary, compat))


def index_version(session: Session, version: Version) -> None:
    """Bring ``version``'s search entry in step with its row: written if it is its model's latest, else none.

    Called wherever what a search finds of a version changes: an upload (a draft: no entry), a
    publication (for every version of the model: the latest moves), a finished test run (the
    compatibility matrix, so the consumers). Downloads are counted by :func:`add_download`.
    """
    postgresql = session.get_bind().dialect.name == "postgresql"
    delete = text("DELETE FROM search_entries WHERE version_id = :id")
    removed = cast(CursorResult[Any], session.execute(delete, {"id": version.id}))
    if not postgresql:
        session.execute(text("DELETE FROM version_text WHERE rowid = :id"), {"id": version.id})
    if removed.rowcount or version.is_latest:  # the entries change: cached counts are stale
        session.execute(text("UPDATE search_state SET generation = generation + 1 WHERE id = 1"))
    if not version.is_latest:
        return
    fields = _text_fields(version)
    keys = facet_keys(version.summary or {}, version.compat)
    if postgresql:
        statement = text(
            "INSERT INTO search_entries (version_id, name, published_at, downloads, facets, search_vector) "
            "VALUES (:id, CAST(:model AS varchar), :published_at, "
            "coalesce((SELECT downloads FROM models WHERE name = CAST(:model AS varchar)), 0), "
            f":facets, {TSVECTOR})"
        ).bindparams(bindparam("facets", type_=ARRAY(Text)))
        entry = {"model": version.name, "published_at": version.published_at, "facets": keys}
        session.execute(statement, {**fields, **entry})  # :name is text in the tsvector, :model the varchar column
        return
    model_downloads = select(func.coalesce(func.max(Model.downloads), 0)).where(Model.name == version.name)
    session.execute(
        insert(SearchEntry).values(
            version_id=version.id,
            name=version.name,
            published_at=version.published_at,
            downloads=model_downloads.scalar_subquery(),
            facets=keys,
        )  # fmt: skip
    )
    session.execute(
        text(
            "INSERT INTO version_text(rowid, name, title, description, tags, authors) "
            "VALUES (:id, :name, :title, :description, :tags, :authors)"
        ),
        fields,
    )


def add_download(session: Session, name: str) -> None:
    """One more download of model ``name`` on its search entry (the downloads order)."""
    session.execute(text("UPDATE search_entries SET downloads = downloads + 1 WHERE name = :name"), {"name": name})


def _text_fields(version: Version) -> dict[str, Any]:
    summary = version.summary or {}
    return {
        "id": version.id,
        "name": version.name,
        "title": str(summary.get("title") or ""),
        "description": str(summary.get("description") or ""),
        "tags": " ".join(map(str, summary.get("tags") or [])),
        "authors": " ".join(map(str, summary.get("authors") or [])),
    }


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
    words = _words(query.text)
    keys = [f"{name}={value}" for name, value in query.filters().items()]
    matched, filters, params, statement_params = _where(words, keys, postgresql=postgresql)
    where = _clause(matched, filters)
    generation = session.execute(text("SELECT generation FROM search_state WHERE id = 1")).scalar_one()
    key = (str(session.get_bind().engine.url), int(generation), tuple(words), tuple(keys))
    counted = _COUNTS.get(key)
    if counted is None:
        counted = _counts(session, where, params, statement_params, postgresql=postgresql)
        _COUNTS.put(key, counted)
    total_found, facets = counted[0], {name: dict(values) for name, values in counted[1].items()}
    page_key = (*key, query.sort, query.page, query.per_page)
    cacheable = query.sort != "downloads"  # a download reorders without a new generation
    ids = _PAGES.get(page_key) if cacheable else None
    if ids is None:
        ids = _page_ids(session, query, words, (matched, filters), params, statement_params, postgresql=postgresql)
        if cacheable:
            _PAGES.put(page_key, tuple(ids))
    rows = {row.id: row for row in session.scalars(select(Version).where(Version.id.in_(ids)))} if ids else {}
    return total_found, [rows[i] for i in ids if i in rows], facets


def _counts(
    session: Session, where: str, params: dict[str, Any], binds: list[Any], *, postgresql: bool
) -> tuple[int, dict[str, dict[str, int]]]:
    """The number of entries that match, and their facet counts (each field's values, most frequent first)."""
    total = session.execute(_statement(f"SELECT count(*) FROM search_entries e{where}", binds), params)
    total_found = int(total.scalar_one())
    if postgresql:
        unnest = "CROSS JOIN LATERAL unnest(e.facets) AS k"
        facet_sql = f"SELECT k, count(*) FROM search_entries e {unnest}{where} GROUP BY k"
    else:
        facet_sql = f"SELECT j.value, count(*) FROM search_entries e, json_each(e.facets) j{where} GROUP BY j.value"
    facets: dict[str, dict[str, int]] = {}
    for key, count in session.execute(_statement(facet_sql, binds), params):
        field_name, _, value = str(key).partition("=")
        facets.setdefault(field_name, {})[value] = int(count)
    return total_found, {name: dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))) for name, v in facets.items()}


def _where(words: list[str], keys: list[str], *, postgresql: bool) -> tuple[str, str, dict[str, Any], list[Any]]:
    """The conditions on entries ``e``: for the words, for the filters (SQL, "" for none); parameters; typed binds."""
    params: dict[str, Any] = {}
    binds: list[Any] = []
    matched = ""
    if words and postgresql:
        matched = "e.search_vector @@ to_tsquery('english', :tsq)"
        params["tsq"] = tsquery_text(" ".join(words))
    elif words:
        # an IN of the FTS query runs it once; a join lets SQLite run the MATCH once per entry
        matched = "e.version_id IN (SELECT rowid FROM version_text WHERE version_text MATCH :fts)"
        params["fts"] = fts_query(" ".join(words))
    filters: list[str] = []
    if keys and postgresql:
        filters.append("e.facets @> :keys")
        params["keys"] = keys
        binds.append(bindparam("keys", type_=ARRAY(Text)))
    for i, key in enumerate([] if postgresql else keys):
        filters.append(f"EXISTS (SELECT 1 FROM json_each(e.facets) WHERE json_each.value = :key{i})")
        params[f"key{i}"] = key
    return matched, " AND ".join(filters), params, binds


def _clause(*conditions: str) -> str:
    """`` WHERE a AND b`` of the non-empty ``conditions`` ("" for none)."""
    present = [c for c in conditions if c]
    return " WHERE " + " AND ".join(present) if present else ""


def _statement(sql: str, binds: list[Any]) -> Any:
    statement = text(sql)
    return statement.bindparams(*binds) if binds else statement


def _page_ids(
    session: Session,
    query: SearchQuery,
    words: list[str],
    conditions: tuple[str, str],
    params: dict[str, Any],
    binds: list[Any],
    *,
    postgresql: bool,
) -> list[int]:
    """The ids of the page's versions, in order: by relevance, downloads or date; then newest first."""
    newest = "e.published_at DESC, e.version_id DESC"
    where = _clause(*conditions)
    page = {"limit": query.per_page, "offset": (query.page - 1) * query.per_page}
    if query.sort == "downloads":
        sql = f"SELECT e.version_id FROM search_entries e{where} ORDER BY e.downloads DESC, {newest}"
    elif query.sort == "relevance" and words and postgresql:
        rank = "ts_rank(e.search_vector, to_tsquery('english', :tsq))"
        sql = f"SELECT e.version_id FROM search_entries e{where} ORDER BY {rank} DESC, {newest}"
    elif query.sort == "relevance" and words:
        # the FTS query runs once, as the CTE that gives each hit its bm25 score (lower is better)
        filters = _clause(conditions[1])
        sql = (
            "WITH hits AS MATERIALIZED (SELECT rowid AS id, "
            f"bm25(version_text, {BM25_WEIGHTS}) AS score FROM version_text WHERE version_text MATCH :fts) "
            f"SELECT e.version_id FROM hits JOIN search_entries e ON e.version_id = hits.id{filters} "
            f"ORDER BY hits.score, {newest}"
        )
    else:
        sql = f"SELECT e.version_id FROM search_entries e{where} ORDER BY {newest}"
    statement = _statement(sql + " LIMIT :limit OFFSET :offset", binds)
    return [int(i) for i in session.execute(statement, {**params, **page}).scalars()]
