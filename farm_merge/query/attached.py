"""Writing new SQLite files from an experiment database, through ATTACH.

Export and split create a file and fill it with ``INSERT INTO out.t … SELECT … FROM
main.t WHERE simulation_id = ?`` on the experiment database's own connection, so rows
move inside SQLite, never through Python.  Files are built in a staging folder and moved
into place when complete (:class:`farm_merge.storage.outputs.Staging`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from sqlalchemy import Connection

from farm_merge.storage import db, sqltext


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str  # as declared
    not_null: bool
    key_position: int  # 1-based position in the primary key, 0 if not a key column


def columns_of(conn: Connection, table: str, schema: str = "main") -> list[ColumnInfo]:
    """The columns of ``schema.table`` as SQLite declares them."""
    rows = conn.exec_driver_sql(f"PRAGMA {schema}.table_info({sqltext.quote(table)})").all()
    return [ColumnInfo(r[1], r[2] or "", bool(r[3]), r[5]) for r in rows]


def key_of(columns: list[ColumnInfo]) -> list[str]:
    """Primary-key columns in key order (``simulation_id`` alone if there is no key)."""
    key = [c.name for c in sorted((c for c in columns if c.key_position), key=lambda c: c.key_position)]
    return key or ["simulation_id"]


@contextmanager
def attached(conn: Connection, path: Path, alias: str = "out") -> Iterator[None]:
    """ATTACH ``path`` (created if missing) to ``conn`` as ``alias`` for the block.

    ATTACH and DETACH cannot run inside a transaction; the caller opens its own with
    ``conn.begin()`` inside the block.
    """
    if conn.in_transaction():
        conn.rollback()
    raw = conn.connection.driver_connection
    raw.execute(f"ATTACH DATABASE ? AS {alias}", (db.file_uri(path, mode="rwc"),))
    try:
        yield
    finally:
        # An interrupt (KeyboardInterrupt) inside a statement makes SQLAlchemy invalidate the
        # connection, closing it; and a block an interrupt cut short may be closed only later,
        # with its connection: there is nothing left to detach from then.
        if not (conn.invalidated or conn.closed):
            if conn.in_transaction():
                conn.rollback()
            raw.execute(f"DETACH DATABASE {alias}")
