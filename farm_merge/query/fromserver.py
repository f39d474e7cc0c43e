"""Simulations of a server database streamed into a new SQLite experiment file.

``export --format sqlite`` and ``split`` copy rows inside SQLite through ATTACH, which a
server database cannot be.  From PostgreSQL, each table's rows of the chosen simulations
are read in key order with a server-side cursor (a chunk at a time: memory stays flat) and
written with ``executemany`` into the new file, which the migrations built.  Values are
written as a SQLite experiment database holds them: booleans 0/1, times as ISO text, JSON
as the text the server kept.  Columns and tables a merge added for schema drift are
created with the SQLite type of their server type.  The read is one ``REPEATABLE READ``
transaction: one snapshot of the database, whatever writers do meanwhile.
"""

from __future__ import annotations

import sqlite3
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import sqlalchemy as sa
from sqlalchemy import Connection, select

from farm_merge.storage import columns as table_columns
from farm_merge.storage import sqltext
from farm_merge.storage.postgres import CHUNK_ROWS, kind_of
from farm_merge.storage.schema import Simulation

if TYPE_CHECKING:
    from farm_merge.query.scope import ExperimentReader

SIMULATIONS = Simulation.__table__

#: The SQLite type a column gets for the kind of its server type (:func:`postgres.kind_of`).
SQLITE_TYPES = {"int": "INTEGER", "float": "FLOAT", "bool": "BOOLEAN", "timestamp": "DATETIME", "json": "JSON",
                "bytes": "BLOB", "text": "TEXT"}

CATALOG = ("experiments", "simulations", "merge_ledger")


def snapshot(conn: Connection) -> Connection:
    """``conn`` reading one snapshot for its whole transaction (PostgreSQL's default gives
    each statement its own); a SQLite read transaction is one already."""
    if conn.dialect.name == "postgresql":
        return conn.execution_options(isolation_level="REPEATABLE READ")
    return conn


def copy_into_sqlite(tool: ExperimentReader, out: Path,
                     simulation_ids: Sequence[str] | None) -> dict[str, tuple[int, bool]]:
    """Copy the catalogue rows and every data table's rows of the simulations in ``tool``'s
    scope (or ``simulation_ids``) into the experiment file ``out`` (at head, empty).

    Returns, per table, the rows copied and whether the table had to be created in ``out``.
    """
    target = sqlite3.connect(out, isolation_level=None)
    copied = {}
    try:
        target.execute("BEGIN")
        present = _file_columns(target)
        with tool.engine.connect() as conn:
            conn = snapshot(conn)
            inspector = sa.inspect(conn)
            for table in [*CATALOG, *tool.data_tables(conn)]:
                columns = {c["name"]: kind_of(c["type"]) for c in inspector.get_columns(table)}
                created = _prepare(target, table, columns, present.get(table, []))
                copied[table] = (_copy(conn, target, tool, table, columns, simulation_ids), created)
            conn.rollback()
        target.execute("COMMIT")
    finally:
        target.close()
    return copied


def _file_columns(target: sqlite3.Connection) -> dict[str, list[str]]:
    """The tables of the new file and their columns, read with sqlite-utils (the file's main
    schema; its import, about 0.6 s, is small beside a copy from a server, and only this
    command pays it)."""
    import sqlite_utils

    database = sqlite_utils.Database(target, recursive_triggers=False, execute_plugins=False)
    return {name: [c.name for c in database[name].columns] for name in database.table_names()}


def _prepare(target: sqlite3.Connection, table: str, columns: dict[str, str], have: list[str]) -> bool:
    """Create ``table`` in the file, or add the columns ``have`` lacks; True if it was created.

    Not sqlite-utils' ``create_table``/``add_column``: they take only affinity types, and the
    file keeps the server's kinds as SQLite names them (``JSON``, ``DATETIME``, ``BOOLEAN``).
    """
    if not have:
        cols = "".join(f", {sqltext.quote(c)} {SQLITE_TYPES[k]}" for c, k in columns.items() if c != "simulation_id")
        target.execute(f"CREATE TABLE {sqltext.quote(table)} (simulation_id TEXT NOT NULL{cols})")
        return True
    # the columns a merge added for schema drift
    table_columns.add_missing_columns(target, table, {c: SQLITE_TYPES[k] for c, k in columns.items()}, present=have)
    return False


def _copy(conn: Connection, target: sqlite3.Connection, tool, table: str, columns: dict[str, str],
          simulation_ids: Sequence[str] | None) -> int:
    source = sa.table(table, *[sa.column(c) for c in columns])
    selected = [sa.cast(source.c[c], sa.Text).label(c) if k == "json" else source.c[c] for c, k in columns.items()]
    query = select(*selected)
    if table == "experiments":  # the experiments the copied simulations belong to
        query = query.where(source.c.experiment_id.in_(
            select(SIMULATIONS.c.experiment_id).where(tool.in_scope(SIMULATIONS.c.simulation_id, simulation_ids))))
    else:
        query = query.where(tool.in_scope(source.c.simulation_id, simulation_ids))
    key = sa.inspect(conn).get_pk_constraint(table)["constrained_columns"] or [next(iter(columns))]
    query = query.order_by(*[source.c[k] for k in key])
    insert = (f"INSERT INTO {sqltext.quote(table)} ({', '.join(sqltext.quote(c) for c in columns)}) "
              f"VALUES ({', '.join('?' * len(columns))})")
    count = 0
    for chunk in _chunks(conn.execution_options(yield_per=CHUNK_ROWS).execute(query)):
        target.executemany(insert, [tuple(as_stored(v) for v in row) for row in chunk])
        count += len(chunk)
    return count


def _chunks(result) -> Iterator[list]:
    while chunk := result.fetchmany(CHUNK_ROWS):
        yield chunk


def as_stored(value: Any) -> Any:
    """A value from the server as a SQLite experiment database stores it."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, datetime):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, memoryview):
        return bytes(value)
    return value
