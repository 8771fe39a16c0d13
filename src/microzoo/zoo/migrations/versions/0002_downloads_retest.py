"""Download counts per version, and the re-test of published versions (status and time).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN on both databases: no table is rebuilt, so no row (and no foreign key) is touched
    op.add_column("versions", sa.Column("downloads", sa.Integer, nullable=False, server_default="0"))
    op.add_column("versions", sa.Column("retest_status", sa.String(20), nullable=True))
    op.add_column("versions", sa.Column("retested_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.drop_column("retested_at")
        batch.drop_column("retest_status")
        batch.drop_column("downloads")
