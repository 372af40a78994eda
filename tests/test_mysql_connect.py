"""PyMySQL's offer of TLS to a server: one context a process, the same offer as PyMySQL's."""

from __future__ import annotations

import ssl

import pytest
from sqlalchemy.engine import make_url

from etl.store import mysql_connect
from etl.store.database import open_engine
from tests.support.databases import SERVERS

pytestmark = pytest.mark.slow  # MariaDB


def tls_context(url: str, connections: int) -> list[object]:
    """Return the TLS context of each of ``connections`` connections open at once."""
    engine = open_engine(url)
    opened = [engine.connect() for _ in range(connections)]
    try:
        return [conn.connection.dbapi_connection.ctx for conn in opened]  # type: ignore[union-attr]
    finally:
        for conn in opened:
            conn.close()
        engine.dispose()


def test_connections_that_offer_tls_share_one_context() -> None:
    contexts = tls_context(SERVERS["mariadb"], 3)

    assert len({id(context) for context in contexts}) == 1
    context = contexts[0]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE  # PyMySQL's preferred mode: no CA given
    assert not context.check_hostname


def test_the_shared_context_is_pymysql_s_own() -> None:
    """Built by PyMySQL for its preferred mode, once; other settings build their own."""
    from pymysql.connections import Connection

    shared = mysql_connect.connection_class()
    built = Connection._create_ssl_ctx(object.__new__(Connection), {})
    mine = shared._create_ssl_ctx(object.__new__(shared), {})
    own = {"ca": None, "verify_mode": "optional"}

    assert type(mine) is type(built)
    assert (mine.verify_mode, mine.check_hostname, mine.verify_flags, mine.options) == (
        built.verify_mode,
        built.check_hostname,
        built.verify_flags,
        built.options,
    )
    assert shared._create_ssl_ctx(object.__new__(shared), {}) is mine
    assert shared._create_ssl_ctx(object.__new__(shared), own) is not mine
    assert shared._create_ssl_ctx(object.__new__(shared), own).verify_mode == ssl.CERT_OPTIONAL


def test_a_url_that_turns_tls_off_gets_none() -> None:
    url = make_url(SERVERS["mariadb"]).update_query_dict({"ssl_disabled": "true"})
    engine = open_engine(url.render_as_string(hide_password=False))
    try:
        with engine.connect() as conn:
            dbapi = conn.connection.dbapi_connection
            assert dbapi is not None
            assert not dbapi.ssl  # type: ignore[attr-defined]
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1
    finally:
        engine.dispose()
