"""What a database error means: its one line for a message (:func:`first_line`), another
connection holding the lock (:func:`is_locked`), and why SQLite could not write (a full
disk, a file size limit, a read-only file or folder) with its remedy; read from sqlite3's
errors, the drivers', or SQLAlchemy's wrapping them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

#: What SQLite says when another connection holds the lock it needs.
_LOCKED_MESSAGES = ("database is locked", "database is busy", "database table is locked")


def first_line(error: BaseException) -> str:
    """The first line of a (driver's) error message, for a message of ours."""
    return str(getattr(error, "orig", None) or error).strip().splitlines()[0]


def is_locked(error: BaseException) -> bool:
    """True for SQLite's "database is locked"/"busy" errors (sqlite3's, or SQLAlchemy's
    wrapping them): another connection holds the lock, and another try may get past it."""
    error = getattr(error, "orig", None) or error
    if not isinstance(error, sqlite3.OperationalError):
        return False
    message = str(error).lower()
    return any(m in message for m in _LOCKED_MESSAGES)


#: I/O errors met while reading: a source's problem, not a failure to write.
_READ_IOERRS = frozenset({"SQLITE_IOERR_READ", "SQLITE_IOERR_SHORT_READ"})


def write_failure(error: BaseException | None) -> str | None:
    """Why SQLite could not write, if ``error`` (sqlite3's, or SQLAlchemy's wrapping it) or an
    error it was raised from says so: disk full, a file size limit or a failing disk, a
    read-only file; else None.  (After a failed write SQLite has rolled back, and clean-up
    code, Alembic's for one, then fails on what is gone: the cause is further down.)"""
    cause = _write_cause(error)
    return cause[1] if cause else None


#: What to do about a write that ran out of room (a full disk, a file size limit).
MAKE_ROOM = "make room and run the same command again"


def write_problem(error: BaseException | None, path: Path | None) -> tuple[str, str] | None:
    """:func:`write_failure`'s reason for ``error`` with the remedy that fits its cause, for
    the SQLite database ``path`` (None: a server's): ``(reason, hint)``, or None if
    ``error`` is no failure to write.

    A full disk or a failed write is told to make room; a read-only database or one SQLite
    cannot open is looked at (:func:`farm_merge.storage.files.unwritable`): not a regular
    file, a read-only file system, a file or folder this user may not write, each with its
    own remedy.
    """
    cause = _write_cause(error)
    if cause is None:
        return None
    kind, reason = cause
    if kind in ("full", "io"):
        return reason, MAKE_ROOM
    from farm_merge.storage import files

    found = files.unwritable(path) if path is not None else None
    if found is not None:
        return found
    where = f"{path} and its folder" if path is not None else "the database"
    return reason, f"check that {files.user_name()} can write {where}, and run the same command again"


def _write_cause(error: BaseException | None) -> tuple[str, str] | None:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        cause = _write_failure(error)
        if cause is not None:
            return cause
        error = error.__cause__ or error.__context__
    return None


def _write_failure(error: BaseException) -> tuple[str, str] | None:
    error = getattr(error, "orig", None) or error
    if not isinstance(error, sqlite3.Error):
        return None
    name, message = getattr(error, "sqlite_errorname", ""), str(error)  # errorname: Python 3.11+
    if name == "SQLITE_FULL" or "database or disk is full" in message:
        return "full", "database or disk is full"
    if name.startswith("SQLITE_READONLY") or "readonly database" in message:
        return "readonly", message
    if name.startswith("SQLITE_CANTOPEN") or "unable to open database file" in message:
        return "cantopen", message
    if (name.startswith("SQLITE_IOERR") and name not in _READ_IOERRS) or (not name and "disk I/O error" in message):
        # SQLite reports a write cut short by anything but ENOSPC (EFBIG, EIO) this way.
        return "io", "disk I/O error while writing (no space left, a file size limit, or a failing disk)"
    return None
