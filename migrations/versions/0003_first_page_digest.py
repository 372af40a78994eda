"""Remember each image's first page fingerprint, so an unchanged page is not re-read.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("image_sync_state") as batch:
        batch.add_column(sa.Column("first_page_digest", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("image_sync_state") as batch:
        batch.drop_column("first_page_digest")
