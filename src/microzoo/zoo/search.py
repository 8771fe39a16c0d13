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

A search needs the generation (``search_state.generation``, which :func:`index_version` raises
whenever an entry changes: the one definition of when something a process holds is stale, whichever
process changed it), the ids and scores of the entries its words match (one statement, the text
index's; kept for the most recent :data:`MAX_CACHED` word lists of the generation), and the rows of
its page of versions, which are read with the generation in one statement: a search whose words the
process has seen is one round trip (:func:`search_versions`). Filters, the count, the facet counts
and the order by date or relevance are computed in the process from :class:`_Entries`, the
generation's entries held in memory (ids, dates and facet keys: about 1 MB for 10,000 models, read
once per generation): a facet count over 10,000 entries is a column sum of a boolean matrix (~0.3
ms) where SQLite's ``json_each`` grouping took ~15 ms a search (benchmarks/RESULTS.md, "The zoo
under load", runs 11-13). Pages ordered by downloads are read from the database, filtered in SQL the
same way, as a download changes their order without a new generation.
The statements are SQL text built from fixed pieces; the user's words and filter values are bound
parameters only.
"""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from sqlalchemy import Text, bindparam, func, insert, select, text
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.orm import Session

from microzoo.errors import ZooError
from microzoo.zoo.db import Model, SearchEntry, SearchState, Version
from microzoo.zoo.records import SORTS, SearchQuery, VersionInfo

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


#: (database URL, generation) -> the generation's entries (:class:`_Entries`); a process needs the last few
_ENTRIES = _Recent(4)
#: (database URL, generation, words) -> the matched version ids and their scores (lower ranks first)
_HITS = _Recent(MAX_CACHED)
#: database URL -> the generation this process last saw confirmed (what the next search assumes)
_SEEN: dict[str, int] = {}
#: tries of a search whose generation changed while it ran
MAX_ATTEMPTS = 3
#: a JSON column's text -> its value (summaries never change; a compatibility matrix seldom)
_DECODED = _Recent(2048)
_JSON_COLUMNS = ("summary", "compat", "test_report")
_INFO_FIELDS = tuple(f.name for f in dataclasses.fields(VersionInfo) if f.name not in _JSON_COLUMNS)
_GENERATION = text("SELECT generation FROM search_state WHERE id = 1")


def _page_statement() -> Any:
    """The generation and the rows of the versions ``:ids`` (an expanding list), JSON columns as text."""
    table = Version.__table__
    plain = [column for column in table.c if column.name not in _JSON_COLUMNS]
    as_text = [sql_cast(table.c[name], Text).label(name) for name in _JSON_COLUMNS]
    joined = SearchState.__table__.outerjoin(table, table.c.id.in_(bindparam("ids", expanding=True)))
    return select(SearchState.generation, *plain, *as_text).select_from(joined).where(SearchState.id == 1)


#: built once: a statement is a tree of objects that SQLAlchemy would otherwise build and key again each search
_PAGE = _page_statement()
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


@dataclass(frozen=True)
class _Entries:
    """The search entries of one generation, in memory: what filters, counts, facets and the date order read."""

    ids: np.ndarray  # version ids, ascending
    keys: tuple[str, ...]  # every facet key (``field=value``) of any entry: the columns of ``filed``
    columns: dict[str, int]  # key -> its column
    filed: np.ndarray  # (entries, keys) bool: entry i is filed under key j
    newest: np.ndarray  # each entry's place in the date order: 0 for the newest (then the highest id)

    @classmethod
    def read(cls, connection: Connection) -> _Entries:
        """Read in the date order (the database's, so ties and NULLs order as in SQL): ~40 ms for 10,000."""
        rows = connection.execute(
            text("SELECT version_id, facets FROM search_entries ORDER BY published_at DESC, version_id DESC")
        ).all()
        # entries share their facet lists (a task, a licence, formats...): each distinct one is parsed once.
        # SQLite returns the JSON array as text (a plain SELECT skips the ORM's JSON type), PostgreSQL a list.
        distinct: dict[Any, int] = {}
        combination = np.fromiter(
            (distinct.setdefault(row[1] if isinstance(row[1], str) else tuple(row[1] or ()), len(distinct))
             for row in rows), dtype=np.int64, count=len(rows),
        )  # fmt: skip
        lists = [json.loads(raw) if isinstance(raw, str) else list(raw) for raw in distinct]
        keys = tuple(sorted({key for keys_of_list in lists for key in keys_of_list}))
        columns = {key: j for j, key in enumerate(keys)}
        filed_by_list = np.zeros((len(lists), len(keys)), dtype=bool)
        for i, keys_of_list in enumerate(lists):
            filed_by_list[i, [columns[key] for key in keys_of_list]] = True
        by_date = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))  # ids, newest first
        order = np.argsort(by_date, kind="stable")  # entry k (in id order) is the order[k]-th newest
        return cls(by_date[order], keys, columns, filed_by_list[combination[order]], order)

    def matching(self, version_ids: np.ndarray, scores: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """The row mask of the entries of these (ascending) version ids, and each row's score if given (inf
        elsewhere)."""
        selected = np.zeros(len(self.ids), dtype=bool)
        score = None if scores is None else np.full(len(self.ids), np.inf)
        if len(self.ids):
            rows = np.searchsorted(self.ids, version_ids).clip(max=len(self.ids) - 1)
            known = self.ids[rows] == version_ids  # an id the text index has and this generation has not: left out
            selected[rows[known]] = True
            if score is not None and scores is not None:
                score[rows[known]] = scores[known]
        return selected, score

    def facets(self, selected: np.ndarray) -> dict[str, dict[str, int]]:
        """Each field's values among the ``selected`` entries (a row mask), most frequent first."""
        counts = self.filed[selected].sum(axis=0)
        found: dict[str, dict[str, int]] = {}
        for j in np.flatnonzero(counts):
            field_name, _, value = self.keys[j].partition("=")
            found.setdefault(field_name, {})[value] = int(counts[j])
        return {name: dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))) for name, v in found.items()}


def search_versions(
    connection: Connection, query: SearchQuery
) -> tuple[int, list[VersionInfo], dict[str, dict[str, int]]]:
    """(total, the page of versions in order, facet counts over everything that matched).

    Optimistic about the generation: the process computes the page from the entries (and word
    matches) it holds for the generation it last saw, and the one statement that reads the page's
    rows reads the generation beside them (:func:`_page`). When that is still the database's, the
    answer is the database's, read in one round trip; when another process changed the entries
    meanwhile, the search is made again at the new generation. Nothing is cached under a generation
    before a statement has confirmed it.
    """
    check_query(query)
    postgresql = connection.dialect.name == "postgresql"
    words = sorted(set(_words(query.text)))  # every word must match: order and repeats change nothing
    keys = [f"{name}={value}" for name, value in query.filters().items()]
    url = str(connection.engine.url)
    generation = _SEEN.get(url)
    for _attempt in range(MAX_ATTEMPTS):
        held = _ENTRIES.get((url, generation)) if generation is not None else None
        if held is None:  # a generation this process has not read: read it, and its entries
            generation = _generation(connection)
            held = _ENTRIES.get((url, generation)) or _Entries.read(connection)
        entries: _Entries = held
        selected, score, new_hits = np.ones(len(entries.ids), dtype=bool), None, None
        if words:
            ranked = query.sort == "relevance"
            hits = _HITS.get((url, generation, tuple(words)))
            if hits is None or (ranked and hits[1] is None):
                hits = new_hits = _hits(connection, words, ranked=ranked, postgresql=postgresql)
            selected, score = entries.matching(*hits)
        for key in keys:
            column = entries.columns.get(key)
            selected &= entries.filed[:, column] if column is not None else False
        if query.sort == "downloads":  # a download reorders without a new generation: read from the database
            ids = _ids_by_downloads(connection, query, words, keys, postgresql=postgresql)
        else:
            chosen = np.flatnonzero(selected)
            if query.sort == "relevance" and score is not None:
                order = np.lexsort((entries.newest[chosen], score[chosen]))  # the last key sorts first
            else:
                order = np.argsort(entries.newest[chosen], kind="stable")
            start = (query.page - 1) * query.per_page
            ids = [int(i) for i in entries.ids[chosen[order[start : start + query.per_page]]]]
        now, rows = _page(connection, ids)
        if now == generation:  # everything above was read at the generation the page was
            _SEEN[url] = generation
            _ENTRIES.put((url, generation), entries)
            if new_hits is not None:
                _HITS.put((url, generation, tuple(words)), new_hits)
            break
        generation = now  # the entries changed meanwhile: again, at the new generation
    # after MAX_ATTEMPTS changes in a row (publications racing the search) the last attempt is answered, uncached
    return int(selected.sum()), [rows[i] for i in ids if i in rows], entries.facets(selected)


def _page(connection: Connection, ids: list[int]) -> tuple[int, dict[int, VersionInfo]]:
    """The generation and the versions of ``ids``, in one statement (so one snapshot, one round trip).

    The JSON columns are read as text and decoded here (:func:`_decoded`): most pages show versions
    that earlier pages showed, and a version's summary never changes.
    """
    generation: Any = None
    rows: dict[int, VersionInfo] = {}
    for row in connection.execute(_PAGE, {"ids": ids}).mappings():
        generation = row["generation"]
        if row["id"] is not None:
            fields = {name: row[name] for name in _INFO_FIELDS}
            fields.update({name: _decoded(row[name]) for name in _JSON_COLUMNS})
            fields["downloads"] = fields["downloads"] or 0
            rows[row["id"]] = VersionInfo(**fields)
    return int(generation), rows


def _decoded(raw: str | None) -> Any:
    """A JSON column's value from its text, decoded once per distinct text (values are shared: never mutate)."""
    if raw is None:
        return None
    value = _DECODED.get(raw)
    if value is None:
        value = json.loads(raw)
        _DECODED.put(raw, value)
    return value


def _generation(connection: Connection) -> int:
    return int(connection.execute(_GENERATION).scalar_one())


def _hits(
    connection: Connection, words: list[str], *, ranked: bool, postgresql: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """The version ids (ascending) of the entries that every word matches, and if ``ranked`` their scores
    (lower ranks first: bm25 on SQLite, minus ``ts_rank`` on PostgreSQL; scoring every hit costs 2-5
    times the match alone on SQLite, so searches in another order skip it)."""
    if postgresql:
        score = "-ts_rank(search_vector, to_tsquery('english', :q))" if ranked else "NULL"
        sql = f"SELECT version_id, {score} FROM search_entries WHERE search_vector @@ to_tsquery('english', :q)"
        found = connection.execute(text(sql), {"q": tsquery_text(" ".join(words))}).all()
    else:
        score = f"bm25(version_text, {BM25_WEIGHTS})" if ranked else "NULL"
        sql = f"SELECT rowid, {score} FROM version_text WHERE version_text MATCH :q"
        found = connection.execute(text(sql), {"q": fts_query(" ".join(words))}).all()
    found = sorted(found, key=lambda row: row[0])
    ids = np.fromiter((row[0] for row in found), dtype=np.int64, count=len(found))
    scores = np.fromiter((row[1] for row in found), dtype=np.float64, count=len(found)) if ranked else None
    return ids, scores


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


def _ids_by_downloads(
    connection: Connection, query: SearchQuery, words: list[str], keys: list[str], *, postgresql: bool
) -> list[int]:
    """The ids of the page's versions, most downloaded first, then newest first (read from the database)."""
    matched, filters, params, binds = _where(words, keys, postgresql=postgresql)
    newest = "e.published_at DESC, e.version_id DESC"
    sql = f"SELECT e.version_id FROM search_entries e{_clause(matched, filters)} ORDER BY e.downloads DESC, {newest}"
    page = {"limit": query.per_page, "offset": (query.page - 1) * query.per_page}
    statement = _statement(sql + " LIMIT :limit OFFSET :offset", binds)
    return [int(i) for i in connection.execute(statement, {**params, **page}).scalars()]
