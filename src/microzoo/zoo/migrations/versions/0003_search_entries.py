"""A narrow search table: one row per model's latest published version, all a search reads.

``search_entries`` holds the version id, the model's name, the sort keys (publication time, the
model's downloads) and the facet keys (``field=value``: a ``text[]`` on PostgreSQL, a JSON array on
SQLite); on PostgreSQL also the ``tsvector`` (moved here from ``versions.search_vector``). It
replaces the ``facets`` table. On SQLite the FTS5 table ``version_text`` stays the full-text index;
its rows are now those of the versions a search finds only.

``search_state`` holds one number, raised by every change of the entries: the counts of a search
without words are cached by the processes that serve searches until it changes.

Existing rows fill it: every ``is_latest`` version, with the facet rows it had and its model's
downloads (and on PostgreSQL its search vector).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "search_entries",
        sa.Column(
            "version_id",
            sa.Integer,
            sa.ForeignKey("versions.id", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("downloads", sa.Integer, nullable=False, server_default="0"),
        sa.Column("facets", postgresql.ARRAY(sa.Text) if pg else sa.Text, nullable=False),
    )
    # one row: a number that every change of the entries raises, so that caches of counts know they are stale
    op.create_table(
        "search_state",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
    )
    # starting from the time in microseconds, not 0: a table made again never repeats a number a cache has seen
    start = int(time.time() * 1_000_000)
    op.execute(sa.text("INSERT INTO search_state (id, generation) VALUES (1, :start)").bindparams(start=start))
    op.create_index("ix_search_entries_name", "search_entries", ["name"])  # a download counts on its model's entry
    # newest first and most downloaded first read these in order (no sort) when no word narrows the search
    op.create_index("ix_search_entries_date", "search_entries", ["published_at", "version_id"])
    op.create_index("ix_search_entries_downloads", "search_entries", ["downloads", "published_at", "version_id"])
    if pg:
        op.execute("ALTER TABLE search_entries ADD COLUMN search_vector tsvector")
        op.execute(
            "INSERT INTO search_entries (version_id, name, published_at, downloads, facets, search_vector) "
            "SELECT v.id, v.name, v.published_at, m.downloads, "
            "COALESCE((SELECT array_agg(f.field || '=' || f.value ORDER BY f.field, f.value) "
            "FROM facets f WHERE f.version_id = v.id), '{}'), coalesce(v.search_vector, ''::tsvector) "
            "FROM versions v JOIN models m ON m.name = v.name WHERE v.is_latest"
        )
        op.execute("CREATE INDEX ix_search_entries_vector ON search_entries USING GIN (search_vector)")
        op.execute("CREATE INDEX ix_search_entries_facets ON search_entries USING GIN (facets)")
        op.execute("DROP INDEX ix_versions_search_vector")
        op.execute("ALTER TABLE versions DROP COLUMN search_vector")
    else:
        op.execute(
            "INSERT INTO search_entries (version_id, name, published_at, downloads, facets) "
            "SELECT v.id, v.name, v.published_at, m.downloads, "
            "(SELECT json_group_array(k) FROM (SELECT f.field || '=' || f.value AS k FROM facets f "
            "WHERE f.version_id = v.id ORDER BY f.field, f.value)) "
            "FROM versions v JOIN models m ON m.name = v.name WHERE v.is_latest"
        )
        op.execute("DELETE FROM version_text WHERE rowid NOT IN (SELECT version_id FROM search_entries)")
    op.drop_table("facets")


def downgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "facets",
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("field", sa.String(30), primary_key=True),
        sa.Column("value", sa.String(200), primary_key=True),
    )
    op.create_index("ix_facets_field_value", "facets", ["field", "value", "version_id"])
    if pg:
        op.execute(
            "INSERT INTO facets (version_id, field, value) SELECT e.version_id, split_part(k, '=', 1), "
            "substr(k, strpos(k, '=') + 1) FROM search_entries e CROSS JOIN LATERAL unnest(e.facets) AS k"
        )
        op.execute("ALTER TABLE versions ADD COLUMN search_vector tsvector")
        op.execute(
            "UPDATE versions v SET search_vector = e.search_vector FROM search_entries e WHERE e.version_id = v.id"
        )
        op.execute("CREATE INDEX ix_versions_search_vector ON versions USING GIN (search_vector)")
    else:
        op.execute(
            "INSERT INTO facets (version_id, field, value) SELECT e.version_id, "
            "substr(j.value, 1, instr(j.value, '=') - 1), substr(j.value, instr(j.value, '=') + 1) "
            "FROM search_entries e, json_each(e.facets) j"
        )
    op.drop_table("search_entries")
    op.drop_table("search_state")
