"""Write transactions that survive other writers: take the lock up front, retry while locked.

Several processes may log into one SQLite experiment database at once.  SQLite lets
one of them write at a time; the others wait on the busy timeout.  A transaction is
started with ``BEGIN IMMEDIATE`` so that a writer waits *before* it has done any work
(a deferred transaction that later needs the write lock can fail half-way instead),
and if the wait still ends in "database is locked" the whole transaction is rolled
back and run again after a randomised, growing pause.  The work function must
therefore be repeatable: it gets a fresh transaction each time and must not change
Python state that a rollback would not undo.

Only lock contention is retried.  A constraint violation or any other error is the
caller's problem and is raised at once.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

T = TypeVar("T")

#: What SQLite says when another connection holds the lock it needs.
_LOCKED_MESSAGES = ("database is locked", "database is busy", "database table is locked")


@dataclass(frozen=True)
class RetryPolicy:
    """How long a writer keeps trying while the database is locked by others."""

    deadline_s: float = 600.0  # give up (and raise) after this long
    first_pause_s: float = 0.005
    max_pause_s: float = 0.5


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
            with engine.connect().execution_options(immediate=True) as conn:
                with conn.begin():
                    return work(conn)
        except OperationalError as e:
            if not is_lock_contention(e) or time.monotonic() + pause > deadline:
                raise
            if on_retry is not None:
                on_retry(attempt, e)
        # Jitter keeps writers that collided once from colliding again in lockstep.
        time.sleep(pause * random.uniform(0.5, 1.5))
        pause = min(pause * 2, policy.max_pause_s)
