"""A table's columns: reading them from SQLite, and adding the ones a table lacks.

The one place the project writes ``ALTER TABLE … ADD COLUMN``; every writer (the merge
targets, adoption, the run-file logger, the server snapshot, split and export) asks
:func:`add_missing_columns`.  Works on a SQLAlchemy ``Connection`` or a plain
``sqlite3.Connection``, on any schema (``main``, an attached ``out`` or ``src``).

sqlite-utils' ``Table.add_column`` is not used here: it maps only affinity types (it
rejects ``VARCHAR(36)``, which the schema declares), it cannot name an attached schema,
and importing it costs about 0.6 s (pandas, numpy) on paths that must start fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from farm_merge.storage import sqltext


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str  # as declared
    not_null: bool
    key_position: int  # 1-based position in the primary key, 0 if not a key column


def _execute(conn: Any, sql: str, params: tuple = ()) -> Any:
    """Run ``sql`` on a SQLAlchemy connection or a sqlite3 one."""
    run = getattr(conn, "exec_driver_sql", None)
    return run(sql, params) if run is not None else conn.execute(sql, params)


def _prefix(schema: str | None) -> str:
    return f"{sqltext.quote(schema)}." if schema else ""


def columns_of(conn: Any, table: str, schema: str = "main") -> list[ColumnInfo]:
    """The columns of SQLite's ``schema.table`` as declared, in order (empty if no such table)."""
    rows = _execute(conn, f"PRAGMA {sqltext.quote(schema)}.table_info({sqltext.quote(table)})").fetchall()
    return [ColumnInfo(r[1], r[2] or "", bool(r[3]), r[5]) for r in rows]


def column_names(conn: Any, table: str, schema: str = "main") -> list[str]:
    """The names of the columns of SQLite's ``schema.table``, in order."""
    return [c.name for c in columns_of(conn, table, schema)]


def table_names(conn: Any, schema: str = "main") -> list[str]:
    """The tables of a SQLite schema, SQLite's own (``sqlite_…``) left out, in creation order."""
    return [name for (name,) in _execute(
        conn, f"SELECT name FROM {sqltext.quote(schema)}.sqlite_master "
              "WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY rowid")]


def key_of(columns: list[ColumnInfo]) -> list[str]:
    """Primary-key columns in key order (``simulation_id`` alone if there is no key)."""
    key = [c.name for c in sorted((c for c in columns if c.key_position), key=lambda c: c.key_position)]
    return key or ["simulation_id"]


def add_missing_columns(conn: Any, table: str, columns: Mapping[str, str] | Iterable[tuple[str, str]], *,
                        schema: str | None = "main", present: Iterable[str] | None = None,
                        fold_case: bool = True, column_type: Callable[[str], str] | None = None,
                        on_added: Callable[[str, str], None] | None = None) -> list[str]:
    """Add to ``schema.table`` each of ``columns`` (name → declared type) it lacks; the names
    added, in the order given.

    The declared type is kept (``VARCHAR(36)`` stays so) when it is plain, else its affinity
    (:func:`~farm_merge.storage.sqltext.safe_type`: a hostile file can declare anything).
    ``present``: the columns the table is known to have (a PostgreSQL caller passes them);
    else they are read from SQLite.  ``fold_case``: names match case-insensitively, as SQLite
    compares them (a PostgreSQL caller passes False).  ``schema`` None: the name unqualified.
    ``column_type``: turns a declared type into the target's (PostgreSQL's), called only for
    the columns added.  ``on_added(name, type)`` is called after each column is added.
    """
    fold = str.lower if fold_case else str
    have = {fold(c) for c in (present if present is not None else column_names(conn, table, schema or "main"))}
    added = []
    items = columns.items() if isinstance(columns, Mapping) else columns
    for column, declared in items:
        if fold(column) in have:
            continue
        ddl_type = sqltext.safe_type(column_type(declared) if column_type is not None else declared)
        _execute(conn, f"ALTER TABLE {_prefix(schema)}{sqltext.quote(table)} "
                       f"ADD COLUMN {sqltext.quote(column)} {ddl_type}".rstrip())
        have.add(fold(column))
        added.append(column)
        if on_added is not None:
            on_added(column, ddl_type)
    return added
