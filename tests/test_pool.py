"""A run's pooled connections: pinged only after idling, single reads without a transaction."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from etl.store import database
from etl.store.database import one_read, open_engine
from tests.support.databases import SERVER_DIALECT_PARAMS, SERVERS


@pytest.fixture(params=SERVER_DIALECT_PARAMS)
def server(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def session_id(engine: Engine) -> int:
    """Return the server's id of the session the pool holds (it holds one, idle)."""
    with engine.connect() as conn:
        query = (
            "SELECT pg_backend_pid()"
            if engine.dialect.name == "postgresql"
            else "SELECT CONNECTION_ID()"
        )
        return int(conn.exec_driver_sql(query).scalar_one())


def kill(dialect: str, session: int) -> None:
    """End the server's session ``session`` and wait until the server lists it no more."""
    admin = create_engine(SERVERS[dialect], isolation_level="AUTOCOMMIT")
    if dialect == "postgresql":
        end = "SELECT pg_terminate_backend(:id)"
        listed = "SELECT count(*) FROM pg_stat_activity WHERE pid = :id"
    else:
        end = "KILL :id"
        listed = "SELECT count(*) FROM information_schema.processlist WHERE id = :id"
    with admin.connect() as conn:
        conn.execute(text(end), {"id": session})
        deadline = time.monotonic() + 10
        while conn.execute(text(listed), {"id": session}).scalar_one():
            assert time.monotonic() < deadline, "the server kept the session"
            time.sleep(0.01)
    admin.dispose()


def counted_pings(monkeypatch: pytest.MonkeyPatch, engine: Engine) -> list[int]:
    pings: list[int] = []
    ping = engine.dialect.do_ping

    def counting(dbapi_connection: Any) -> bool:
        pings.append(1)
        return bool(ping(dbapi_connection))

    monkeypatch.setattr(engine.dialect, "do_ping", counting)
    return pings


def test_a_connection_gone_stale_while_idle_is_replaced(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that dropped an idle session (a restart, a timeout) costs the run nothing."""
    engine = open_engine(SERVERS[server])
    pings = counted_pings(monkeypatch, engine)
    try:
        stale = session_id(engine)
        kill(server, stale)
        monkeypatch.setattr(database, "PING_AFTER_IDLE", 0.0)

        assert session_id(engine) != stale
        assert pings == [1]
    finally:
        engine.dispose()


def test_a_connection_in_steady_use_is_not_pinged(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = open_engine(SERVERS[server])
    pings = counted_pings(monkeypatch, engine)
    monkeypatch.setattr(database, "PING_AFTER_IDLE", 3600.0)  # however slow the machine
    try:
        first = session_id(engine)
        for _ in range(5):
            assert session_id(engine) == first  # the same pooled session, handed out as is

        assert pings == []
        monkeypatch.setattr(database, "PING_AFTER_IDLE", 0.0)
        assert session_id(engine) == first
        assert pings == [1]  # idle past the bound: pinged, alive, kept
    finally:
        engine.dispose()


@pytest.mark.slow  # PostgreSQL
def test_a_single_read_on_postgresql_opens_no_transaction() -> None:
    """No BEGIN and ROLLBACK round trips around it; the pool's next user gets one as ever."""
    engine = open_engine(SERVERS["postgresql"])
    try:
        with one_read(engine) as conn:
            assert conn.exec_driver_sql("SELECT 1").scalar_one() == 1
            status = conn.connection.dbapi_connection.info.transaction_status  # type: ignore[union-attr]
            assert status.name == "IDLE"
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
            status = conn.connection.dbapi_connection.info.transaction_status  # type: ignore[union-attr]
            assert status.name == "INTRANS"
    finally:
        engine.dispose()
