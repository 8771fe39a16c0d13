"""The model repository: an index (SQLite or PostgreSQL) and a folder, behind one service.

The verbs, importable from here (loaded on first use)::

    Zoo(root, db_url=None, publish_on_pass=False)   tokens, publishing, review, files, ids, search, jobs
    SearchQuery / SearchResult                       a search and its page of results with facets
    VersionInfo, JobInfo, TokenInfo, CommentInfo     what the service returns (frozen records)
"""

from __future__ import annotations

from microzoo._lazy import lazy_exports

#: public name -> the module that defines it
_EXPORTS = {
    "Zoo": "service",
    "CommentInfo": "records", "JobInfo": "records", "SearchQuery": "records", "SearchResult": "records",
    "TokenInfo": "records", "VersionInfo": "records",
}  # fmt: skip
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
