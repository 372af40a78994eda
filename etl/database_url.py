"""Check and mask SQLAlchemy database URLs, so a password never shows; no I/O."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from etl.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///do_image_actions.db"
IN_MEMORY = (None, "", ":memory:")

# duckdb:/// means duckdb-engine with reflection that works (etl.store.duckdb_dialect). Only a
# name is registered here: the module, and the optional duckdb packages, load on first use.
registry.register("duckdb", "etl.store.duckdb_dialect", "DuckDBDialect")
PERCENT_ENCODE_HINT = "percent-encode it (@ as %40, : as %3A, / as %2F, % as %25)"


def parse_database_url(url: str) -> URL:
    """Return the parsed URL.

    Raises:
        ArgumentError: the URL is malformed, whatever SQLAlchemy raised.
    """
    try:
        return make_url(url)
    except ValueError as exc:
        # A port that is not a number (as a raw ':' or '@' in a password can make) raises
        # ValueError quoting it, password fragments and all: keep neither text nor chain.
        raise ArgumentError("the URL's port is not a number") from exc


def mask_database_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***``.

    A raw ``@`` in a password makes SQLAlchemy read the password's tail as the host, so the
    host is cut after its last ``@``: the mask then hides too much rather than too little.
    """
    try:
        parsed = parse_database_url(url)
    except ArgumentError:
        return "<unparseable database URL>"  # the parser's message could quote the password
    if parsed.host and "@" in parsed.host:
        parsed = parsed.set(password="", host=parsed.host.rsplit("@", 1)[1])
    return parsed.render_as_string(hide_password=True)


def check_database_url(name: str, value: Any) -> str:
    """Return ``value`` when it is a database URL this tool can use; ``name`` labels errors.

    Raises:
        ConfigError: the URL is malformed, names no known database kind, holds a raw '@' in
            its password, or names an in-memory SQLite or DuckDB database.
    """
    example = "'postgresql+psycopg://user@host/db'"
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a SQLAlchemy URL such as {DEFAULT_DATABASE_URL!r}")
    try:
        url = parse_database_url(value)
    except ArgumentError as exc:
        # The parser's message may quote part of the password: neither text nor chain.
        raise ConfigError(
            f"{name} is not a valid SQLAlchemy URL; use a form like {DEFAULT_DATABASE_URL!r} or "
            f"{example}, and if the password holds special characters, {PERCENT_ENCODE_HINT}"
        ) from exc
    if url.host and "@" in url.host:
        raise ConfigError(f"{name} has a raw '@' in its password; {PERCENT_ENCODE_HINT}")
    if url.get_backend_name() == "postgres":
        raise ConfigError(
            f"{name} starts with postgres://, which SQLAlchemy does not know; "
            f"write postgresql+psycopg:// instead, e.g. {example}"
        )
    try:
        url.get_dialect()
    except NoSuchModuleError as exc:
        raise ConfigError(
            f"{name} names the unknown database kind {url.drivername!r}; use sqlite:///, "
            "postgresql+psycopg://, mysql+pymysql:// or duckdb:///"
        ) from exc
    except ModuleNotFoundError:
        pass  # a known kind whose optional driver is missing: opening it names the extra
    kind = {"sqlite": "SQLite", "duckdb": "DuckDB"}.get(url.get_backend_name())
    if kind and url.database in IN_MEMORY:
        example = DEFAULT_DATABASE_URL if kind == "SQLite" else "duckdb:///do_image_actions.duckdb"
        raise ConfigError(
            f"{name} names an in-memory {kind} database, which vanishes when the command ends; "
            f"give a file such as {example!r}"
        )
    return value
