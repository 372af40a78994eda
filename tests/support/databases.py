"""Create and drop throwaway databases on the local SQLite, PostgreSQL, MariaDB and DuckDB."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, NullPool, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from etl.store.database import open_engine
from etl.store.migrate import upgrade

# Admin URLs of the servers CI provides; override them to test elsewhere.
SERVERS = {
    "postgresql": os.environ.get(
        "DO_IMAGE_ACTIONS_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
    "mariadb": os.environ.get(
        "DO_IMAGE_ACTIONS_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
    ),
}
START_HINTS = {
    "postgresql": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "mariadb": "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
}
# The fast tier (-m "not slow") runs SQLite only; the other dialects run in the full suite.
DIALECT_PARAMS = [
    pytest.param("sqlite"),
    pytest.param("postgresql", marks=pytest.mark.slow),
    pytest.param("mariadb", marks=pytest.mark.slow),
    pytest.param("duckdb", marks=pytest.mark.slow),
]
SERVER_DIALECT_PARAMS = DIALECT_PARAMS[1:3]
# For the longest tests of the run's decisions (feeds, faults, interruptions): DuckDB runs
# the same decisions over the same SQLAlchemy upsert as other tests, at 20-40 s a test, as
# it spends 10 ms on any small statement.
DECISION_DIALECT_PARAMS = DIALECT_PARAMS[:3]
# For tests of what a hostile server sends and of what the CLI prints: refused before
# anything is stored, or printed from counts; every database's storage is tested elsewhere.
HTTP_DIALECT_PARAMS = DIALECT_PARAMS[:2]
FILE_DIALECTS = ("sqlite", "duckdb")  # a database is a file: no server, no name to drop


@contextmanager
def fresh_database(dialect: str, tmp_path: Path) -> Iterator[str]:
    """Yield the URL of a new, empty database of ``dialect``; drop it afterwards."""
    if dialect in FILE_DIALECTS:
        yield f"{dialect}:///{tmp_path / f'test.{dialect}'}"
        return
    admin_url = make_url(SERVERS[dialect])
    name = f"dia_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    except OperationalError as exc:
        admin.dispose()
        # A required service is down: fail loudly; CI must never skip these.
        pytest.fail(
            f"{dialect} is not reachable at {admin_url.render_as_string()} ({exc.orig}); "
            f"start it with: {START_HINTS[dialect]}"
        )
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if dialect == "postgresql" else ""
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
        admin.dispose()


def migrated_engine(database_url: str) -> Engine:
    """Return an engine on ``database_url`` after migrating it to head with the real history.

    On DuckDB the engine lets go of the file between statements: DuckDB locks a file for
    the process that holds it open, and the CLI processes a test starts must open it.
    """
    engine = open_engine(database_url)
    upgrade(engine)
    if engine.dialect.name != "duckdb":
        return engine
    engine.dispose()
    return create_engine(database_url, poolclass=NullPool)
