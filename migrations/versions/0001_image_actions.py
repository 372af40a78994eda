"""Create image_actions.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copy of the type etl.schema.UtcDateTime maps to: revisions import nothing from etl.
TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "image_actions",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("image_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=255), nullable=True),
        sa.Column("type", sa.String(length=255), nullable=True),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("completed_at", TIMESTAMP, nullable=True),
        sa.Column("resource_id", sa.BigInteger(), nullable=True),
        sa.Column("resource_type", sa.String(length=255), nullable=True),
        sa.Column("region_slug", sa.String(length=255), nullable=True),
        sa.Column("region_name", sa.String(length=255), nullable=True),
        sa.Column("region_available", sa.Boolean(), nullable=True),
        sa.Column("region_features", sa.JSON(), nullable=True),
        sa.Column("region_sizes", sa.JSON(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("content_hash", sa.String(length=32), nullable=False),
        sa.Column("first_seen_at", TIMESTAMP, nullable=False),
        sa.Column("changed_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_actions")),
        comment="One row per DigitalOcean image action, keyed on the API's action id.",
        mysql_charset="utf8mb4",
    )
    op.create_index(
        op.f("ix_image_actions_image_id_status"), "image_actions", ["image_id", "status"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_image_actions_image_id_status"), table_name="image_actions")
    op.drop_table("image_actions")
