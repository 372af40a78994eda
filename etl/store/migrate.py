"""Bring a database's schema to the newest Alembic revision shipped with the tool."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect

import etl.store.duckdb_alembic  # noqa: F401 (registers DuckDB with Alembic)
from etl.database_url import mask_database_url
from etl.errors import DatabaseError
from etl.store.revision import revision_of
from etl.store.schema import metadata


def migrations_dir() -> Path:
    """Return the migrations folder: inside the installed package, or beside it in a checkout.

    Raises:
        DatabaseError: neither place holds the migrations.
    """
    package = Path(__file__).resolve().parents[1]  # etl/
    for candidate in (package / "migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise DatabaseError("the migrations folder is missing; reinstall do-image-actions")


def alembic_config() -> Config:
    """Return an Alembic config that needs no alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


@cache
def _scripts() -> ScriptDirectory:
    """Return the shipped revisions, read from disk once per process: they cannot change."""
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """Return the newest revision this version of the tool ships."""
    head = _scripts().get_current_head()
    if head is None:
        raise DatabaseError("no migration revisions found; reinstall do-image-actions")
    return head


def is_known_revision(revision: str) -> bool:
    """Return whether this version of the tool ships ``revision``."""
    return revision in {script.revision for script in _scripts().walk_revisions()}


def _refuse_unknown(current: str | None) -> None:
    if current is not None and not is_known_revision(current):
        raise DatabaseError(
            f"the database is at schema revision {current!r}, which this version of "
            "do-image-actions does not know; upgrade the tool"
        )


def _check_upgradable(conn: Connection) -> None:
    """Refuse a database the migrations cannot run on, before they change anything.

    MySQL/MariaDB commit every DDL statement at once: a migration that failed on a table
    someone else made would leave our alembic_version table behind, so look first.
    """
    current = revision_of(conn)
    _refuse_unknown(current)
    if current is not None:
        return
    foreign = sorted(set(metadata.tables) & set(inspect(conn).get_table_names()))
    if foreign:
        where = mask_database_url(conn.engine.url.render_as_string(hide_password=False))
        raise DatabaseError(
            f"{where} already holds {', '.join(foreign)}, made by something other than "
            "do-image-actions (no schema revision is recorded); point database_url at an "
            "empty database"
        )


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the migrations up to ``revision`` in one transaction where the dialect allows.

    Raises:
        DatabaseError: the database is at a revision this version does not know, or has
            tables of our names that no migration of ours made; nothing is changed.
    """
    config = alembic_config()
    with engine.begin() as conn:
        _check_upgradable(conn)
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def bring_to_head(engine: Engine, current: str | None, *, auto_migrate: bool) -> str:
    """Return the head revision once the database, now at ``current``, is at it.

    Raises:
        DatabaseError: the database is behind and auto_migrate is off, or it carries a
            revision this version does not know (a newer tool migrated it).
    """
    head = head_revision()
    if current == head:
        return head
    _refuse_unknown(current)
    if not auto_migrate:
        raise DatabaseError(
            f"the database schema is at {current or 'nothing'}, not {head}; "
            "run 'do-image-actions migrate' first"
        )
    upgrade(engine)
    return head
