"""Mark actions the API stopped listing, remember complete scans, count odd statuses.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen copy of the type etl.store.schema.UtcDateTime maps to: revisions import nothing from etl.
TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
RUN_COUNTERS = ("unknown_statuses", "rows_missing", "rows_listed_elsewhere")


def upgrade() -> None:
    with op.batch_alter_table("image_actions") as batch:
        batch.add_column(sa.Column("missing_since", TIMESTAMP, nullable=True))
    # Existing images start as not known complete: their next run scans them to the end.
    with op.batch_alter_table("image_sync_state") as batch:
        batch.add_column(
            sa.Column("scan_complete", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("sync_runs") as batch:
        for name in RUN_COUNTERS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        for name in RUN_COUNTERS:
            batch.drop_column(name)
    with op.batch_alter_table("image_sync_state") as batch:
        batch.drop_column("scan_complete")
    with op.batch_alter_table("image_actions") as batch:
        batch.drop_column("missing_since")
