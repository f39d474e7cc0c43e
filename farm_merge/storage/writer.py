"""Write transactions that survive other writers: take the lock up front, retry while locked.

Several processes may log into one SQLite experiment database at once.  SQLite lets
one of them write at a time.  A transaction is started with ``BEGIN IMMEDIATE`` so that
a writer waits *before* it has done any work (a deferred transaction that later needs
the write lock can fail half-way instead).  The wait is short on purpose: SQLite's busy
handler gives up after a few milliseconds with "database is locked", the transaction is
rolled back and tried again after a randomised pause of 1 to 10 ms, until the lock is
free or the deadline passes.  (Left to itself the busy handler sleeps up to 100 ms at a
time, while the lock may already be free: with four writers SQLite then stood idle a
fifth of the time.)  The work function must therefore be repeatable: it gets a fresh
transaction each time and must not change Python state that a rollback would not undo.
On PostgreSQL there is no database lock to wait for (writers of different rows do not
block each other); what is retried there is a lost connection (a server restart, a
network break, an administrator ending the session) and a transaction the server
rolled back to break a deadlock.  A connection lost *while committing* leaves it
unknown whether the commit happened: before the work is run again, ``landed`` (given by
the caller) looks for what it wrote, so that nothing is written twice.  Connection losses
are retried with pauses growing from 0.05 to 2 s, up to the same deadline.

Only these are retried.  A constraint violation or any other error is the caller's
problem and is raised at once.

Rows go in with :func:`prepare_insert`: a Core ``INSERT`` compiled once per dialect,
executed as one ``executemany``; on PostgreSQL, one ``COPY`` per table.
"""

from __future__ import annotations

import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

from sqlalchemy import Connection, Dialect, Engine, Table, column, insert
from sqlalchemy import table as table_clause
from sqlalchemy.exc import DBAPIError, OperationalError

from farm_merge.storage import failures

T = TypeVar("T")

#: Page cache of a logging connection, MiB: the secondary indexes' pages stay in memory
#: while rows arrive in step order (about a quarter faster at 200 agents x 1,000 steps).
CACHE_MIB = 64


@dataclass(frozen=True)
class RetryPolicy:
    """How long a writer keeps trying while the database is locked by others."""

    deadline_s: float = 600.0  # give up (and raise) after this long
    # SQLite's own wait for the write lock (its busy handler) in one attempt.  Kept short:
    # that handler sleeps in steps of up to 100 ms, and the lock may sit free meanwhile
    # while other writers queue; the pauses below hand it on within a few ms.
    lock_wait_s: float = 0.005
    first_pause_s: float = 0.001
    max_pause_s: float = 0.01
    # After a lost connection: the server may take a while to come back.
    reconnect_first_pause_s: float = 0.05
    reconnect_max_pause_s: float = 2.0


#: SQLSTATEs of a transaction the server rolled back on its own (deadlock, serialization).
_ROLLED_BACK = ("40001", "40P01")
#: SQLSTATEs of a session the server ended (administrator, crash, shutting down).
_SESSION_ENDED = ("57P01", "57P02", "57P03")


def is_connection_lost(error: BaseException) -> bool:
    """True for a database connection that broke or could not be made (a server's)."""
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate is not None:
        return sqlstate.startswith("08") or sqlstate in _SESSION_ENDED
    # psycopg reports a failed connect, or one that dropped mid-way, without a SQLSTATE.
    return isinstance(error, OperationalError) and type(error.orig).__module__.startswith("psycopg")


def is_rolled_back_by_server(error: BaseException) -> bool:
    """True for a deadlock or serialization failure: the server undid the transaction."""
    return isinstance(error, DBAPIError) and getattr(error.orig, "sqlstate", None) in _ROLLED_BACK


def write_transaction(
    engine: Engine,
    work: Callable[[Connection], T],
    *,
    policy: RetryPolicy = RetryPolicy(),
    on_retry: Callable[[int, BaseException], None] | None = None,
    landed: Callable[[Connection], bool] | None = None,
) -> T | None:
    """Run ``work(connection)`` in one write transaction and commit; retry it while locked
    (SQLite) or after a lost connection (a server's).

    On SQLite the transaction starts with ``BEGIN IMMEDIATE``.  ``on_retry(attempt, error)``
    is called before each new attempt.  ``landed(connection)`` tells whether ``work``'s
    writes are in the database: asked only after a connection was lost during a commit,
    and if it says yes the work is not run again and None is returned.  Leave it out for
    work that may safely run twice.  Raises the last error once ``policy.deadline_s`` has
    passed, and any error that is not retried at once.
    """
    deadline = time.monotonic() + policy.deadline_s
    pause = policy.first_pause_s
    reconnect_pause = policy.reconnect_first_pause_s
    attempt = 0
    unsure = False  # a commit was interrupted: it may or may not have happened
    while True:
        attempt += 1
        committing = False
        try:
            with engine.connect().execution_options(immediate=True) as conn, _lock_wait(conn, policy.lock_wait_s):
                if unsure and landed is not None:
                    found = landed(conn)
                    conn.rollback()
                    if found:
                        return None
                unsure = False
                with conn.begin():
                    result = work(conn)
                    committing = True  # leaving the block commits
                return result
        except DBAPIError as e:
            if failures.is_locked(e):
                wait = pause
                pause = min(pause * 2, policy.max_pause_s)
            elif is_connection_lost(e) or is_rolled_back_by_server(e):
                unsure = unsure or (committing and is_connection_lost(e))
                wait = reconnect_pause
                reconnect_pause = min(reconnect_pause * 2, policy.reconnect_max_pause_s)
            else:
                raise
            if time.monotonic() + wait > deadline:
                raise
            if on_retry is not None:
                on_retry(attempt, e)
        # Jitter keeps writers that collided once from colliding again in lockstep.
        time.sleep(wait * random.uniform(0.5, 1.5))


@contextmanager
def _lock_wait(conn: Connection, seconds: float) -> Iterator[None]:
    """On SQLite, wait at most ``seconds`` for the write lock in this transaction; reads on
    the connection keep the engine's longer busy timeout."""
    if conn.dialect.name != "sqlite":
        yield
        return
    raw = conn.connection.driver_connection  # outside SQLAlchemy's transaction: a PRAGMA, not a statement
    (before,) = raw.execute("PRAGMA busy_timeout").fetchone()
    raw.execute(f"PRAGMA busy_timeout = {max(int(seconds * 1000), 1)}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA busy_timeout = {before}")


@dataclass(frozen=True)
class PreparedInsert:
    """An INSERT of many rows, ready to run: SQL text for one dialect and its parameter sets
    (on PostgreSQL: a COPY of the table's ``columns``)."""

    sql: str
    params: list
    table: str = ""
    columns: tuple[str, ...] = ()
    copy: bool = False

    def run(self, conn: Connection) -> None:
        if self.copy:
            from farm_merge.storage.postgres import copy_rows

            copy_rows(conn, self.table, self.columns, self.params)
        else:
            conn.exec_driver_sql(self.sql, self.params)


_PLANS: dict[tuple, tuple[str, bool, tuple]] = {}


def prepare_insert(dialect: Dialect, table: Table, columns: tuple[str, ...], rows: list[tuple]) -> PreparedInsert:
    """``INSERT INTO table (columns) VALUES ...`` for ``rows`` (tuples in ``columns`` order).

    The statement is SQLAlchemy Core's, compiled once per dialect and column list, and
    values pass through the dialect's type processors (booleans, datetimes) as
    ``Connection.execute`` would pass them; what is skipped is its per-row parameter
    bookkeeping, which costs more than SQLite's insert itself.  Preparing the parameters
    before the transaction keeps the write lock held only while SQLite works.
    """
    key = (dialect.name, dialect.paramstyle, table.name, columns)
    plan = _PLANS.get(key)
    if plan is None:
        # A table clause with the columns in the rows' order: the compiled statement then
        # takes each row as it is.
        target = table_clause(table.name, *(column(c, table.c[c].type) for c in columns))
        compiled = insert(target).compile(dialect=dialect)
        processors = tuple((i, p) for i, c in enumerate(columns)
                           if (p := table.c[c].type.dialect_impl(dialect).bind_processor(dialect)) is not None)
        plan = _PLANS[key] = (str(compiled), compiled.positional, processors)
    sql, positional, processors = plan
    if processors:
        converted = []
        for row in rows:
            row = list(row)
            for i, process in processors:
                if row[i] is not None:
                    row[i] = process(row[i])
            converted.append(tuple(row))
        rows = converted
    if dialect.name == "postgresql":  # COPY: the server parses rows in bulk
        return PreparedInsert(sql, rows, table.name, columns, copy=True)
    params = rows if positional else [dict(zip(columns, row)) for row in rows]  # named: other servers' drivers
    return PreparedInsert(sql, params)
