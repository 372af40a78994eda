"""Alembic environment: metadata from etl.store.schema, a connection handed in, or a URL."""

from __future__ import annotations

import logging
from typing import Any

from alembic import context
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine

import etl.store.duckdb_alembic  # noqa: F401 (registers DuckDB with Alembic)
from etl.config import load_settings
from etl.store.schema import metadata

config = context.config
target_metadata = metadata


def _numbered(_context: object, _revision: object, directives: list[Any]) -> None:
    # `alembic revision` names a new revision after the last one: 0004 -> 0005.
    head = ScriptDirectory.from_config(config).get_current_head()
    if directives and head is not None and head.isdigit():
        directives[0].rev_id = f"{int(head) + 1:04d}"


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        process_revision_directives=_numbered,
        **kwargs,
    )


def _database_url() -> str:
    # `alembic upgrade head` from the repo root uses the same URL as the tool
    # (DO_IMAGE_ACTIONS_DATABASE_URL, else the default SQLite file), unless given
    # `alembic -x database_url=URL ...`. There is no alembic.ini to hold one.
    given = context.get_x_argument(as_dictionary=True).get("database_url")
    return given or load_settings().database_url


def run_migrations_offline() -> None:
    """Emit SQL for `alembic upgrade --sql` without a connection."""
    _configure(url=_database_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    # SQLite cannot ALTER most things; batch mode recreates tables instead.
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations on the connection handed in, or on a new one."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    if not logging.getLogger().handlers:  # the alembic CLI without an alembic.ini to set logging
        logging.basicConfig(level=logging.INFO, format="%(levelname)-5.5s [%(name)s] %(message)s")
    engine = create_engine(_database_url())
    try:
        with engine.begin() as conn:
            _run_on(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
