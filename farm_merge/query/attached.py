"""Writing new SQLite files from an experiment database, through ATTACH.

Export and split create a file and fill it with ``INSERT INTO out.t … SELECT … FROM
main.t WHERE simulation_id = ?`` on the experiment database's own connection, so rows
move inside SQLite, never through Python.  Files are built in a staging folder and moved
into place when complete (:class:`farm_merge.storage.outputs.Staging`).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Connection

from farm_merge.storage import db


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
