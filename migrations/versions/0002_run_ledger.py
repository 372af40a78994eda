"""Add the run ledger, per-image sync state, dead letters and the sync lock.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen copy of the type etl.schema.UtcDateTime maps to: revisions import nothing from etl.
TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "sync_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("images_requested", sa.JSON(), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("tool_version", sa.String(length=32), nullable=False),
        sa.Column("schema_revision", sa.String(length=32), nullable=False),
        sa.Column("images_synced", sa.Integer(), nullable=False),
        sa.Column("images_failed", sa.Integer(), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("rate_limit_wait_seconds", sa.Float(), nullable=False),
        sa.Column("rows_inserted", sa.Integer(), nullable=False),
        sa.Column("rows_updated", sa.Integer(), nullable=False),
        sa.Column("rows_unchanged", sa.Integer(), nullable=False),
        sa.Column("rows_rejected", sa.Integer(), nullable=False),
        sa.Column("meta_total_sum", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sync_runs")),
        comment="One row per sync run, written at its start and finished at its end.",
        mysql_charset="utf8mb4",
    )
    op.create_index(op.f("ix_sync_runs_started_at"), "sync_runs", ["started_at"])
    op.create_table(
        "image_sync_state",
        sa.Column("image_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("last_attempt_at", TIMESTAMP, nullable=False),
        sa.Column("last_success_at", TIMESTAMP, nullable=True),
        sa.Column("last_meta_total", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("gone", sa.Boolean(), nullable=False),
        sa.Column("last_run_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["last_run_id"],
            ["sync_runs.id"],
            name=op.f("fk_image_sync_state_last_run_id_sync_runs"),
        ),
        sa.PrimaryKeyConstraint("image_id", name=op.f("pk_image_sync_state")),
        comment="Per-image sync state: last success, last meta.total, last error.",
        mysql_charset="utf8mb4",
    )
    op.create_table(
        "rejected_actions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.BigInteger(), nullable=False),
        sa.Column("action_id", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("rejected_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["sync_runs.id"], name=op.f("fk_rejected_actions_run_id_sync_runs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rejected_actions")),
        comment="Dead letters: actions that could not become rows, as received, with the reason.",
        mysql_charset="utf8mb4",
    )
    op.create_index(op.f("ix_rejected_actions_image_id"), "rejected_actions", ["image_id"])
    op.create_table(
        "sync_lock",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder_host", sa.String(length=255), nullable=False),
        sa.Column("holder_pid", sa.Integer(), nullable=False),
        sa.Column("acquired_at", TIMESTAMP, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_sync_lock")),
        comment="Who holds the sync lock; on SQLite this row is the lock (a lease).",
        mysql_charset="utf8mb4",
    )


def downgrade() -> None:
    op.drop_table("sync_lock")
    op.drop_index(op.f("ix_rejected_actions_image_id"), table_name="rejected_actions")
    op.drop_table("rejected_actions")
    op.drop_table("image_sync_state")
    op.drop_index(op.f("ix_sync_runs_started_at"), table_name="sync_runs")
    op.drop_table("sync_runs")
