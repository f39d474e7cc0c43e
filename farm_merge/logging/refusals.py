"""A flush the database refused because of one of its rows: which row, and the error that says so.

Values are checked when they are logged (:mod:`farm_merge.logging.rows`), so a flush that
fails for a row-level reason (a constraint the database holds, a value its driver or server
cannot take) is rare; when it happens the flush has written nothing and every buffered row
is still buffered.  :func:`find_rejected_row` then writes the rows again one by one, each in
a savepoint of a transaction that is rolled back, to name the first the database refuses.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from farm_merge.errors import RowRejected
from farm_merge.logging.rows import COLUMNS, WRITE_TABLES, LogTarget
from farm_merge.storage.failures import first_line
from farm_merge.storage.writer import prepare_insert

__all__ = ["RowRejected", "find_rejected_row", "is_row_level"]  # RowRejected lives in errors


def is_row_level(error: BaseException) -> bool:
    """Whether a write failed because of a value it was given (a constraint, a value the
    driver or the server cannot take), not because of the database's state."""
    if isinstance(error, (IntegrityError, DataError)):
        return True
    if isinstance(error, DBAPIError):
        return False
    if isinstance(error, StatementError):
        error = error.orig
    return isinstance(error, (OverflowError, ValueError, TypeError))


def find_rejected_row(target: LogTarget, simulation_id: str, batches: dict[str, list[tuple]], deaths: list[dict],
                      deaths_statement: Any, error: BaseException) -> RowRejected:
    """The :class:`RowRejected` for a flush of ``batches`` (and ``deaths``) that failed with
    ``error``: the first row the database refuses when they are written one by one."""
    dialect = target.engine.dialect
    found: list[tuple[str, int, Any, BaseException]] = []

    def attempt(conn: Connection, table: str, index: int, row: Any, run) -> bool:
        try:
            with conn.begin_nested():
                run()
        except Exception as e:
            if not is_row_level(e):
                raise
            found.append((table, index, row, e))
            return False
        return True

    def probe(conn: Connection) -> None:
        for name, rows in batches.items():
            columns, prepared = target.prepare(name, COLUMNS[name], rows)
            for i, row in enumerate(prepared):
                insert = prepare_insert(dialect, WRITE_TABLES[name], columns, [row])
                if not attempt(conn, name, i, rows[i], lambda: insert.run(conn)):
                    return
        for i, death in enumerate(deaths):
            if not attempt(conn, "deaths", i, death, lambda: conn.execute(deaths_statement, [death])):
                return

    try:
        with target.engine.connect() as conn:
            with conn.begin() as transaction:
                probe(conn)
                transaction.rollback()
    except Exception:  # the probe itself could not run: the flush's own error is reported
        found.clear()
    table, index, row, cause = found[0] if found else (None, None, None, error)
    pending = sum(len(rows) for rows in batches.values()) + len(deaths)
    orig = getattr(cause, "orig", None) or cause
    reason = f"{type(orig).__name__}: {first_line(cause) if str(orig).strip() else ''}"
    return RowRejected(simulation_id, table, index, row, cause, reason, pending)
