"""Alembic migrations; shipped inside the wheel as etl.migrations."""
