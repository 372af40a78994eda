"""One Alembic revision per schema change."""
