"""Teach Alembic DuckDB, so the frozen revisions run on it unchanged.

Two things DuckDB does differently from PostgreSQL, whose SQL duckdb-engine speaks:

- It has no SERIAL. An autoincrement integer key becomes what SERIAL means on
  PostgreSQL: a sequence named ``<table>_<column>_seq`` and a ``DEFAULT nextval(...)``.
- It refuses to alter a table that others depend on (its indexes, or tables whose
  foreign keys point at it), except to add a nullable column. Such an ALTER lifts the
  dependents out (indexes dropped, referencing tables copied aside and dropped), runs,
  and puts them back, all inside the migration's transaction.

Importing this module registers the implementation with Alembic (by ``__dialect__``);
it imports no DuckDB package, so it is safe to import without the optional extra.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from alembic.ddl.impl import DefaultImpl
from sqlalchemy import Column, Sequence, Table, text, types
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateColumn, CreateSequence, DropSequence
from sqlalchemy.sql.compiler import DDLCompiler

# DuckDB stores no VARCHAR length and spells TEXT as VARCHAR.
STORED_AS = {"TEXT": "VARCHAR"}


def serial_sequence(table: Table) -> Sequence | None:
    """Return the sequence that stands in for SERIAL on ``table``, if it has a SERIAL key."""
    column = table.autoincrement_column
    if column is None or column.default is not None or column.server_default is not None:
        return None
    return Sequence(f"{table.name}_{column.name}_seq")


@compiles(CreateColumn, "duckdb")
def _create_column(element: CreateColumn, compiler: DDLCompiler, **kw: Any) -> str:
    column: Column[Any] = element.element
    sequence = serial_sequence(column.table) if isinstance(column.table, Table) else None
    if sequence is None or column is not column.table.autoincrement_column:
        return compiler.visit_create_column(element, **kw)  # type: ignore[no-untyped-call,no-any-return]
    type_ = compiler.dialect.type_compiler_instance.process(column.type, type_expression=column)
    return (
        f"{compiler.preparer.format_column(column)} {type_} "
        f"DEFAULT nextval('{sequence.name}') NOT NULL"
    )


class DuckDBImpl(DefaultImpl):
    """Alembic on DuckDB: DDL is transactional; SERIAL and ALTER as the module says."""

    __dialect__ = "duckdb"
    transactional_ddl = True

    def create_table(self, table: Table, **kw: Any) -> None:
        """Create the table, after the sequence its SERIAL key draws from."""
        sequence = serial_sequence(table)
        if sequence is not None:
            self._exec(CreateSequence(sequence))
        super().create_table(table, **kw)

    def drop_table(self, table: Table, **kw: Any) -> None:
        """Drop the table, then the sequences its columns drew from."""
        # A downgrade's op.drop_table names the table only: ask DuckDB what it draws from.
        query = """
            SELECT DISTINCT regexp_extract(column_default, 'nextval\\(''([^'']+)''\\)', 1)
            FROM duckdb_columns() WHERE table_name = :t AND column_default LIKE 'nextval(%'"""
        sequences = [row[0] for row in self._query(query, t=table.name)]
        super().drop_table(table, **kw)
        for name in sequences:
            self._exec(DropSequence(Sequence(name)))

    def add_column(self, table_name: str, column: Column[Any], **kw: Any) -> None:
        """Add a column; a NOT NULL one with the table's dependents lifted out."""
        lift = self._lifted(table_name) if not column.nullable else contextlib.nullcontext()
        with lift:
            super().add_column(table_name, column, **kw)

    def drop_column(self, table_name: str, column: Column[Any], **kw: Any) -> None:
        """Drop a column with the table's dependents lifted out."""
        with self._lifted(table_name):
            super().drop_column(table_name, column, **kw)

    def alter_column(self, table_name: str, column_name: str, **kw: Any) -> None:
        """Alter a column with the table's dependents lifted out."""
        with self._lifted(table_name):
            super().alter_column(table_name, column_name, **kw)

    def compare_type(self, inspector_column: Column[Any], metadata_column: Column[Any]) -> bool:
        """Return whether the types differ as DuckDB stores them (no lengths, TEXT is VARCHAR)."""
        stored = self._stored_type(inspector_column.type)
        wanted = self._stored_type(metadata_column.type)
        if stored is None or wanted is None:
            return super().compare_type(inspector_column, metadata_column)
        return stored != wanted

    def _stored_type(self, type_: types.TypeEngine[Any]) -> str | None:
        if isinstance(type_, types.NullType):
            return None
        spelled = re.sub(r"\(.*\)", "", type_.compile(dialect=self.dialect)).strip()
        return STORED_AS.get(spelled, spelled)

    def _query(self, sql: str, **params: Any) -> list[Any]:
        return list(self.connection.execute(text(sql), params))  # type: ignore[union-attr]

    def _exec_catalog_sql(self, sql: str) -> None:
        """Run DDL as DuckDB's catalog spelled it; a colon in it is text, not a parameter."""
        self._exec(text(sql.replace(":", "\\:")))

    def _index_sql(self, table_name: str) -> list[tuple[str, str]]:
        query = "SELECT index_name, sql FROM duckdb_indexes() WHERE table_name = :t ORDER BY 1"
        return [(name, sql) for name, sql in self._query(query, t=table_name)]

    @contextlib.contextmanager
    def _lifted(self, table_name: str) -> Iterator[None]:
        """Hold the table's indexes and referencing tables aside while it is altered.

        Raises:
            NotImplementedError: a referencing table is itself referenced (not needed yet).
        """
        quote = self.dialect.identifier_preparer.quote
        referencing = """
            SELECT DISTINCT table_name FROM duckdb_constraints()
            WHERE constraint_type = 'FOREIGN KEY' AND referenced_table = :t AND table_name <> :t
            ORDER BY 1"""
        dependents = [row[0] for row in self._query(referencing, t=table_name)]
        saved = []
        for dependent in dependents:
            if self._query(referencing, t=dependent):
                raise NotImplementedError(
                    f"DuckDB cannot alter {table_name}: {dependent} is referenced in turn"
                )
            create, comment = self._query(
                "SELECT sql, comment FROM duckdb_tables() WHERE table_name = :t", t=dependent
            )[0]
            saved.append((dependent, create, comment, self._index_sql(dependent)))
            aside = quote(f"_alembic_lift_{dependent}")
            # Table names come from DuckDB's catalog, quoted by the dialect's preparer.
            copy = f"CREATE TEMPORARY TABLE {aside} AS SELECT * FROM {quote(dependent)}"  # noqa: S608
            self._exec(text(copy))
            self._exec(text(f"DROP TABLE {quote(dependent)}"))
        indexes = self._index_sql(table_name)
        for name, _ in indexes:
            self._exec(text(f"DROP INDEX {quote(name)}"))
        yield
        for _, sql in indexes:
            self._exec_catalog_sql(sql)
        for dependent, create, comment, dependent_indexes in saved:
            aside = quote(f"_alembic_lift_{dependent}")
            self._exec_catalog_sql(create)
            self._exec(text(f"INSERT INTO {quote(dependent)} SELECT * FROM {aside}"))  # noqa: S608
            self._exec(text(f"DROP TABLE {aside}"))
            for _, sql in dependent_indexes:
                self._exec_catalog_sql(sql)
            if comment is not None:
                literal = comment.replace("'", "''")
                self._exec_catalog_sql(f"COMMENT ON TABLE {quote(dependent)} IS '{literal}'")
