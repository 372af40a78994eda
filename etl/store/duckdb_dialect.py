"""The DuckDB dialect as this tool uses it: duckdb-engine, reflection from DuckDB's own catalog.

duckdb-engine inherits PostgreSQL's reflection, which asks for ``pg_catalog`` tables DuckDB
does not have (under SQLAlchemy 2.1 every column query fails) and returns no indexes. The
Alembic checks need the schema read back exactly, so this subclass reads it from
``duckdb_columns()``, ``duckdb_constraints()``, ``duckdb_indexes()`` and ``duckdb_tables()``.
Imported only through SQLAlchemy's dialect registry (see etl.database_url), so the optional
``duckdb`` packages are loaded only for a ``duckdb:///`` URL.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import duckdb_engine
from sqlalchemy import Connection, text, types
from sqlalchemy.engine import reflection

# DuckDB's own type names, as duckdb_columns() spells them, for what the schema uses.
TYPES: dict[str, Callable[[], types.TypeEngine[Any]]] = {
    "BIGINT": types.BigInteger,
    "INTEGER": types.Integer,
    "SMALLINT": types.SmallInteger,
    "BOOLEAN": types.Boolean,
    "VARCHAR": types.String,
    "JSON": types.JSON,
    "FLOAT": types.Float,
    "DOUBLE": types.Double,
    "DATE": types.Date,
    "TIMESTAMP": types.DateTime,
    "TIMESTAMP WITH TIME ZONE": lambda: types.DateTime(timezone=True),
}

Key = tuple[str | None, str]


def _rows(connection: Connection, sql: str) -> list[Any]:
    return list(connection.execute(text(sql)))


def _keyed(
    found: dict[str, Any], filter_names: Collection[str] | None, empty: Callable[[], Any]
) -> list[tuple[Key, Any]]:
    """Return reflection results keyed as SQLAlchemy's multi-table methods expect."""
    names = filter_names if filter_names is not None else found
    return [((None, name), found.get(name, empty())) for name in names]


class DuckDBDialect(duckdb_engine.Dialect):
    """duckdb-engine with its reflection read from DuckDB's own catalog."""

    supports_statement_cache = False

    def get_multi_columns(  # noqa: D102
        self,
        connection: Connection,
        schema: Any = None,
        filter_names: Collection[str] | None = None,
        scope: Any = None,
        kind: Any = None,
        **_kw: Any,
    ) -> Any:
        found: dict[str, list[dict[str, Any]]] = {}
        query = """
            SELECT table_name, column_name, data_type, is_nullable, column_default, comment
            FROM duckdb_columns() WHERE schema_name = 'main' AND NOT internal
            ORDER BY table_name, column_index"""
        for table, name, data_type, nullable, default, comment in _rows(connection, query):
            base = data_type.split("(")[0]
            found.setdefault(table, []).append(
                {
                    "name": name,
                    "type": TYPES.get(base, types.NullType)(),
                    "nullable": nullable,
                    "default": default,
                    "autoincrement": bool(default and default.startswith("nextval(")),
                    "comment": comment,
                }
            )
        return _keyed(found, filter_names, list)

    def _constraints(self, connection: Connection, kind: str) -> list[Any]:
        query = f"""
            SELECT table_name, constraint_column_names, referenced_table, referenced_column_names
            FROM duckdb_constraints()
            WHERE schema_name = 'main' AND constraint_type = '{kind}'
            ORDER BY table_name, constraint_index"""  # noqa: S608 (kind is one of ours)
        return _rows(connection, query)

    def get_multi_pk_constraint(  # noqa: D102
        self,
        connection: Connection,
        schema: Any = None,
        filter_names: Collection[str] | None = None,
        scope: Any = None,
        kind: Any = None,
        **_kw: Any,
    ) -> Any:
        found = {
            table: {"constrained_columns": list(columns), "name": None}
            for table, columns, _, _ in self._constraints(connection, "PRIMARY KEY")
        }
        return _keyed(found, filter_names, lambda: {"constrained_columns": [], "name": None})

    def get_multi_foreign_keys(  # noqa: D102
        self,
        connection: Connection,
        schema: Any = None,
        filter_names: Collection[str] | None = None,
        scope: Any = None,
        kind: Any = None,
        postgresql_ignore_search_path: Any = False,
        **_kw: Any,
    ) -> Any:
        found: dict[str, list[dict[str, Any]]] = {}
        for table, columns, referred, referred_columns in self._constraints(
            connection, "FOREIGN KEY"
        ):
            found.setdefault(table, []).append(
                {
                    "name": None,  # DuckDB keeps no constraint names
                    "constrained_columns": list(columns),
                    "referred_schema": None,
                    "referred_table": referred,
                    "referred_columns": list(referred_columns),
                    "options": {},
                }
            )
        return _keyed(found, filter_names, list)

    def get_multi_unique_constraints(  # noqa: D102
        self,
        connection: Connection,
        schema: Any = None,
        filter_names: Collection[str] | None = None,
        scope: Any = None,
        kind: Any = None,
        **_kw: Any,
    ) -> Any:
        found: dict[str, list[dict[str, Any]]] = {}
        for table, columns, _, _ in self._constraints(connection, "UNIQUE"):
            found.setdefault(table, []).append({"name": None, "column_names": list(columns)})
        return _keyed(found, filter_names, list)

    def get_multi_check_constraints(  # noqa: D102
        self,
        connection: Connection,
        schema: Any = None,
        filter_names: Collection[str] | None = None,
        scope: Any = None,
        kind: Any = None,
        **_kw: Any,
    ) -> Any:
        return _keyed({}, filter_names, list)  # the schema declares none

    def get_multi_indexes(  # noqa: D102
        self,
        connection: Connection,
        schema: Any = None,
        filter_names: Collection[str] | None = None,
        scope: Any = None,
        kind: Any = None,
        **_kw: Any,
    ) -> Any:
        found: dict[str, list[dict[str, Any]]] = {}
        query = """
            SELECT table_name, index_name, is_unique, expressions FROM duckdb_indexes()
            WHERE schema_name = 'main' ORDER BY table_name, index_name"""
        for table, name, unique, expressions in _rows(connection, query):
            # expressions is DuckDB's list of the indexed columns, e.g. [image_id, status]
            columns = [part.strip().strip('"') for part in str(expressions).strip("[]").split(",")]
            found.setdefault(table, []).append(
                {"name": name, "column_names": columns, "unique": unique, "dialect_options": {}}
            )
        return _keyed(found, filter_names, list)

    @reflection.cache
    def get_indexes(  # noqa: D102
        self, connection: Connection, table_name: str, schema: Any = None, **kw: Any
    ) -> Any:
        return dict(self.get_multi_indexes(connection, schema, [table_name], **kw))[
            (None, table_name)
        ]

    def get_multi_table_comment(  # noqa: D102
        self,
        connection: Connection,
        schema: Any = None,
        filter_names: Collection[str] | None = None,
        scope: Any = None,
        kind: Any = None,
        **_kw: Any,
    ) -> Any:
        query = "SELECT table_name, comment FROM duckdb_tables() WHERE schema_name = 'main'"
        found = {table: {"text": comment} for table, comment in _rows(connection, query)}
        return _keyed(found, filter_names, lambda: {"text": None})

    def get_multi_table_options(  # noqa: D102
        self,
        connection: Connection,
        schema: Any = None,
        filter_names: Collection[str] | None = None,
        scope: Any = None,
        kind: Any = None,
        **_kw: Any,
    ) -> Any:
        return _keyed({}, filter_names, dict)  # DuckDB tables take no options
