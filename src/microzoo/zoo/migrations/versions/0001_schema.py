"""The zoo's schema: tokens, models, versions, facets, comments, jobs and the full-text index.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("label", sa.String(200), nullable=False, server_default=""),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("revoked_at", UTC_TIME, nullable=True),
    )
    op.create_table(
        "models",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("created_by", sa.Integer, nullable=True),
        sa.Column("downloads", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), sa.ForeignKey("models.name"), nullable=False, index=True),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("test_status", sa.String(20), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("published_at", UTC_TIME, nullable=True),
        sa.Column("uploaded_by", sa.Integer, nullable=True),
        sa.Column("rdf_sha256", sa.String(64), nullable=False),
        sa.Column("zip_sha256", sa.String(64), nullable=False),
        sa.Column("zip_size", sa.Integer, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("compat", sa.JSON, nullable=True),
        sa.Column("test_report", sa.JSON, nullable=True),
        sa.Column("is_latest", sa.Boolean, nullable=False, server_default=sa.false(), index=True),
        sa.UniqueConstraint("name", "version", name="uq_versions_name_version"),
    )
    op.create_table(
        "facets",
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("field", sa.String(30), primary_key=True),
        sa.Column("value", sa.String(200), primary_key=True),
    )
    # facet counts read this index alone; the newest first and the most downloaded first need no sort
    op.create_index("ix_facets_field_value", "facets", ["field", "value", "version_id"])
    op.create_index("ix_versions_latest_published", "versions", ["is_latest", "published_at"])
    op.create_index("ix_models_downloads", "models", ["downloads"])
    op.create_table(
        "comments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "version_id", sa.Integer, sa.ForeignKey("versions.id", ondelete="CASCADE"), nullable=False, index=True
        ),
        sa.Column("author", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=True),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False, index=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("claimed_at", UTC_TIME, nullable=True),
        sa.Column("finished_at", UTC_TIME, nullable=True),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE versions ADD COLUMN search_vector tsvector")
        op.execute("CREATE INDEX ix_versions_search_vector ON versions USING GIN (search_vector)")
    else:
        # rowid = versions.id; the service writes a row at each upload
        op.execute("CREATE VIRTUAL TABLE version_text USING fts5(name, title, description, tags, authors)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute("DROP TABLE version_text")
    for table in ("jobs", "comments", "facets", "versions", "models", "tokens"):
        op.drop_table(table)
