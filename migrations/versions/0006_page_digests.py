"""Remember the fingerprint of every page of an image's last complete scan.

A --full run that reads a page byte for byte as that scan read it need not transform or
compare its actions again (see etl.sync.prints).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    with op.batch_alter_table("image_sync_state") as batch:
        batch.add_column(sa.Column("page_digests", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("image_sync_state") as batch:
        batch.drop_column("page_digests")
