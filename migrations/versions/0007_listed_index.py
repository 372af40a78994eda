"""Index each image's listed actions with their fingerprints.

A --full run reads, for every image, the ids and fingerprints of its actions not marked
missing (to check its pages taken by print and to mark what is no longer listed), and an
incremental one counts them. This index holds all of that: the database reads it alone,
not a table row per action (on SQLite and MariaDB, half and a fifth of the work).
Not on DuckDB, whose planner scans the table all the same (and which, within one
transaction, would not let a downgrade drop a column the dropped index covered), nor on
PostgreSQL, which reads an index alone only where VACUUM has marked the table's pages
visible: its writes would pay for the index, and a run's reads gain nothing measurable.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

NAME = "ix_image_actions_listed"
COLUMNS = ["image_id", "missing_since", "id", "content_hash"]
NO_INDEX = (
    "duckdb",
    "postgresql",
)  # frozen here: etl.store.schema.NO_LISTED_INDEX may change later


def upgrade() -> None:
    if op.get_bind().dialect.name not in NO_INDEX:
        op.create_index(NAME, "image_actions", COLUMNS)


def downgrade() -> None:
    if op.get_bind().dialect.name not in NO_INDEX:
        op.drop_index(NAME, table_name="image_actions")
