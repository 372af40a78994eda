"""Which schema revision a database is at, checked without loading Alembic.

A sync only needs to know that the database is at the newest revision; Alembic (and the
template engine it brings) loads only when the schema must change (see etl.store.migrate).
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, column, inspect, select, table

from etl.errors import DatabaseError

# The newest revision in migrations/versions: a test compares it with Alembic's own head.
HEAD_REVISION = "0007"
VERSION_TABLE = "alembic_version"  # where Alembic records the revision
versions = table(VERSION_TABLE, column("version_num"))


def revision_of(conn: Connection) -> str | None:
    """Return the Alembic revision of the database ``conn`` is on, or None for none.

    Raises:
        DatabaseError: the database records several revisions (branches we never ship).
    """
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    found = list(conn.execute(select(versions.c.version_num)).scalars())
    if len(found) > 1:
        raise DatabaseError(
            f"the database records several schema revisions ({', '.join(sorted(found))}); "
            "it was migrated by something other than do-image-actions"
        )
    return found[0] if found else None


def current_revision(engine: Engine) -> str | None:
    """Return the database's Alembic revision, or None for an empty database."""
    with engine.connect() as conn:
        return revision_of(conn)


def ensure_schema(engine: Engine, *, auto_migrate: bool) -> str:
    """Return the head revision once the database is at it, upgrading when allowed.

    Raises:
        DatabaseError: the database is behind and auto_migrate is off, or it carries a
            revision this version does not know (a newer tool migrated it).
    """
    current = current_revision(engine)
    if current == HEAD_REVISION:
        return HEAD_REVISION
    from etl.store.migrate import bring_to_head  # the schema must change: Alembic loads

    return bring_to_head(engine, current, auto_migrate=auto_migrate)
