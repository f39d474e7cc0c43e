"""Writing new SQLite files from an experiment database, through ATTACH.

Export and split create a file and fill it with ``INSERT INTO out.t … SELECT … FROM
main.t WHERE simulation_id = ?`` on the experiment database's own connection, so rows
move inside SQLite, never through Python.  A file is built under a ``.partial`` name and
renamed into place only when it is complete: an interrupted command leaves no
half-written file under the final name.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from sqlalchemy import Connection

from farm_merge.errors import FarmMergeError, OutputExists
from farm_merge.storage import db

SIDECARS = ("-journal", "-wal", "-shm")


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str  # as declared
    not_null: bool
    key_position: int  # 1-based position in the primary key, 0 if not a key column


def columns_of(conn: Connection, table: str, schema: str = "main") -> list[ColumnInfo]:
    """The columns of ``schema.table`` as SQLite declares them."""
    rows = conn.exec_driver_sql(f"PRAGMA {schema}.table_info({db.quote(table)})").all()
    return [ColumnInfo(r[1], r[2] or "", bool(r[3]), r[5]) for r in rows]


def key_of(columns: list[ColumnInfo]) -> list[str]:
    """Primary-key columns in key order (``simulation_id`` alone if there is no key)."""
    key = [c.name for c in sorted((c for c in columns if c.key_position), key=lambda c: c.key_position)]
    return key or ["simulation_id"]


def check_free(paths: list[Path], overwrite: bool, source: Path | None = None) -> None:
    """Refuse to overwrite files (unless asked), and never the experiment database itself."""
    real = source.resolve() if source is not None else None
    for path in paths:
        if real is not None and path.resolve() == real:
            raise FarmMergeError(f"{path} is the experiment database itself; choose another --output")
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise OutputExists(str(existing[0]), len(existing) - 1)


def partial_name(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def remove_partial(path: Path) -> None:
    partial = partial_name(path)
    for suffix in ("", *SIDECARS):
        Path(f"{partial}{suffix}").unlink(missing_ok=True)


def finish(path: Path) -> None:
    """Move a completed ``.partial`` file to its final name (replacing an old one)."""
    for suffix in SIDECARS:
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    os.replace(partial_name(path), path)


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
        if conn.in_transaction():
            conn.rollback()
        raw.execute(f"DETACH DATABASE {alias}")
