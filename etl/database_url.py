"""Check and mask SQLAlchemy database URLs, so a password never shows; no I/O.

SQLAlchemy is imported by the functions, not here: the settings table in etl.config names
check_database_url, and --help must not pay for SQLAlchemy to print the default URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from etl.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

DEFAULT_DATABASE_URL = "sqlite:///do_image_actions.db"
IN_MEMORY = (None, "", ":memory:")
PERCENT_ENCODE_HINT = "percent-encode it (@ as %40, : as %3A, / as %2F, % as %25)"


def register_dialects() -> None:
    """Tell SQLAlchemy that duckdb:/// means duckdb-engine with reflection that works.

    Only a name is registered (etl.store.duckdb_dialect): the module, and the optional duckdb
    packages, load on first use. Importing etl.store calls this, and so does
    check_database_url, before any URL is resolved to a dialect.
    """
    from sqlalchemy.dialects import registry

    registry.register("duckdb", "etl.store.duckdb_dialect", "DuckDBDialect")


def parse_database_url(url: str) -> URL:
    """Return the parsed URL.

    Raises:
        ArgumentError: the URL is malformed, whatever SQLAlchemy raised.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

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
    from sqlalchemy.exc import ArgumentError

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
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

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
    register_dialects()
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
