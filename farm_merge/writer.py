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
All of this is SQLite's; on another database the transaction simply runs.

Only lock contention is retried.  A constraint violation or any other error is the
caller's problem and is raised at once.

Rows go in with :func:`prepare_insert`: a Core ``INSERT`` compiled once per dialect,
executed as one ``executemany``.
"""

from __future__ import annotations

import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

from sqlalchemy import Connection, Dialect, Engine, Table, column, insert
from sqlalchemy import table as table_clause
from sqlalchemy.exc import OperationalError

T = TypeVar("T")

#: What SQLite says when another connection holds the lock it needs.
_LOCKED_MESSAGES = ("database is locked", "database is busy", "database table is locked")

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


def is_lock_contention(error: BaseException) -> bool:
    """True for SQLite's "database is locked"/"busy" errors, which another try may get past."""
    if not isinstance(error, OperationalError):
        return False
    message = str(error.orig if error.orig is not None else error).lower()
    return any(m in message for m in _LOCKED_MESSAGES)


def write_transaction(
    engine: Engine,
    work: Callable[[Connection], T],
    *,
    policy: RetryPolicy = RetryPolicy(),
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Run ``work(connection)`` in one write transaction and commit; retry it while locked.

    On SQLite the transaction starts with ``BEGIN IMMEDIATE``.  ``on_retry(attempt, error)``
    is called before each new attempt.  Raises the last lock error once
    ``policy.deadline_s`` has passed, and any other error at once.
    """
    deadline = time.monotonic() + policy.deadline_s
    pause = policy.first_pause_s
    attempt = 0
    while True:
        attempt += 1
        try:
            with engine.connect().execution_options(immediate=True) as conn, \
                    _lock_wait(conn, policy.lock_wait_s), conn.begin():
                return work(conn)
        except OperationalError as e:
            if not is_lock_contention(e) or time.monotonic() + pause > deadline:
                raise
            if on_retry is not None:
                on_retry(attempt, e)
        # Jitter keeps writers that collided once from colliding again in lockstep.
        time.sleep(pause * random.uniform(0.5, 1.5))
        pause = min(pause * 2, policy.max_pause_s)


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
    """An INSERT of many rows, ready to run: SQL text for one dialect and its parameter sets."""

    sql: str
    params: list

    def run(self, conn: Connection) -> None:
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
    params = rows if positional else [dict(zip(columns, row)) for row in rows]  # named: PostgreSQL's drivers
    return PreparedInsert(sql, params)
