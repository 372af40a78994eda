"""The account feed: its watermark, and what each run spent by kind of request.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

# Frozen copy of the type etl.store.schema.UtcDateTime maps to: revisions import nothing from etl.
TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
RUN_COUNTERS = (
    "feed_pages",
    "image_pages",
    "single_actions",
    "image_list_pages",
    "audit_requests",
    "images_audited",
    "feed_misses",
)


def upgrade() -> None:
    op.create_table(
        "feed_state",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("watermark_id", sa.BigInteger(), nullable=False),
        sa.Column("meta_total", sa.BigInteger(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["sync_runs.id"], name=op.f("fk_feed_state_run_id_sync_runs")
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_feed_state")),
        comment="The account feed's watermark: the newest action a complete run processed.",
        mysql_charset="utf8mb4",
    )
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(
            sa.Column("strategy", sa.String(length=16), nullable=False, server_default="per-image")
        )
        for name in RUN_COUNTERS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("sync_runs") as batch:
        for name in (*RUN_COUNTERS, "strategy"):
            batch.drop_column(name)
    op.drop_table("feed_state")
