"""One reading of a database error: its one line, and whether another connection holds the lock."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from farm_merge.storage import failures


def _locked_pair(path) -> tuple[sqlite3.OperationalError, OperationalError]:
    """A real "database is locked", from sqlite3 and from SQLAlchemy wrapping it."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    try:
        other = sqlite3.connect(path, isolation_level=None, timeout=0)
        with pytest.raises(sqlite3.OperationalError) as raw:
            other.execute("BEGIN IMMEDIATE")
        other.close()
        engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
        with pytest.raises(OperationalError) as wrapped, engine.connect() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
            conn.commit()
        engine.dispose()
    finally:
        holder.close()
    return raw.value, wrapped.value


def test_a_lock_held_elsewhere_reads_as_locked_raw_or_wrapped(tmp_path):
    raw, wrapped = _locked_pair(tmp_path / "db.sqlite")
    assert failures.is_locked(raw) and failures.is_locked(wrapped)
    assert failures.first_line(raw) == failures.first_line(wrapped) == "database is locked"


@pytest.mark.parametrize("error", [sqlite3.OperationalError("no such table: t"), sqlite3.IntegrityError("locked"),
                                   ValueError("database is locked")])
def test_other_errors_are_not_a_lock(error):
    assert not failures.is_locked(error)


def test_the_first_line_of_a_message_of_several_lines():
    assert failures.first_line(sqlite3.DatabaseError("  file is not a database\n(more)\n")) == "file is not a database"
