"""What PostgreSQL needs that SQLite does not: COPY, types for what a source brings, its
refusals in one line.

Shared by the merge into PostgreSQL (:mod:`farm_merge.consolidate.postgres`) and the logger's writes
(:mod:`farm_merge.storage.writer`).  psycopg 3 is imported only when a PostgreSQL database is in
use (the ``postgres`` extra).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from farm_merge.storage import sqltext

#: How many rows of a source are read and sent at a time (memory stays flat).
CHUNK_ROWS = 5000


def column_type(declared: str) -> str:
    """The PostgreSQL type of a column a source brings that the schema lacks.

    SQLite takes a declared type as a hint (its affinity) and stores what it is given;
    PostgreSQL enforces its types.  Integers are BIGINT (SQLite's hold 64 bits), reals and
    decimals DOUBLE PRECISION, booleans BOOLEAN, blobs BYTEA; everything else is TEXT:
    ``VARCHAR(n)`` too (real run files do not keep to declared lengths), and dates and
    JSON, which SQLite files store as whatever text their writer chose.
    """
    upper = declared.upper()
    if "INT" in upper:
        return "BIGINT"
    if any(word in upper for word in ("REAL", "FLOA", "DOUB", "NUM", "DEC")):
        return "DOUBLE PRECISION"
    if "BOOL" in upper:
        return "BOOLEAN"
    if "BLOB" in upper:
        return "BYTEA"
    return "TEXT"


#: What a reflected column type is, for reading and checksumming its values.
KINDS = ("int", "float", "bool", "timestamp", "json", "bytes", "text")


def kind_of(sql_type: Any) -> str:
    """The kind (:data:`KINDS`) of a reflected SQLAlchemy column type."""
    if isinstance(sql_type, sa.Boolean):
        return "bool"
    if isinstance(sql_type, sa.Integer):
        return "int"
    if isinstance(sql_type, (sa.Float, sa.Numeric)):
        return "float"
    if isinstance(sql_type, (sa.DateTime, sa.Date, sa.Time)):
        return "timestamp"
    if isinstance(sql_type, sa.JSON):
        return "json"
    if isinstance(sql_type, sa.LargeBinary):
        return "bytes"
    return "text"


def copy_statement(table: str, columns: Sequence[str], *, binary: bool = False) -> str:
    return (f"COPY {sqltext.quote(table)} ({', '.join(sqltext.quote(c) for c in columns)}) FROM STDIN"
            + (" (FORMAT BINARY)" if binary else ""))


def copy_rows(conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence],
              binary_types: Sequence[str] | None = None) -> int:
    """Send ``rows`` (tuples in ``columns`` order) with one COPY; return the rows copied.

    Runs in the connection's current transaction.  psycopg formats each row in C and
    streams it to the server in blocks, so ``rows`` may be a generator of any length.
    psycopg's errors come out as SQLAlchemy's, as from any statement on ``conn`` (a
    constraint violation as :class:`~sqlalchemy.exc.IntegrityError`; a lost connection
    invalidates ``conn``, so that its next use connects anew).

    ``binary_types`` (psycopg's type names, one per column) sends the rows in COPY's binary
    format: each value is packed as the server stores it, where the text format prints it
    here and has the server parse it.  Nothing is converted on the way: a value that does
    not fit its column's binary form (text for an ``int8``, a float for ``text``) raises
    :class:`TypeError` (or the server refuses it), and the caller decides what then.
    """
    statement = copy_statement(table, columns, binary=binary_types is not None)
    dbapi_connection = conn.connection.dbapi_connection
    try:
        with dbapi_connection.cursor() as cursor:
            with cursor.copy(statement) as copy:
                if binary_types is not None:
                    copy.set_types(binary_types)
                write = copy.write_row
                for row in rows:
                    write(row)
            return cursor.rowcount
    except conn.dialect.loaded_dbapi.Error as e:
        lost = conn.dialect.is_disconnect(e, dbapi_connection, None)
        if lost:
            conn.invalidate(e)
        raise DBAPIError.instance(statement, None, e, conn.dialect.loaded_dbapi.Error, connection_invalidated=lost,
                                  dialect=conn.dialect) from e


def refusal(error: BaseException) -> str | None:
    """One line for an error PostgreSQL raised (None if it is not one of psycopg's).

    A value COPY could not take names the table, line and column the server reported.
    """
    orig = getattr(error, "orig", None) or error
    try:
        import psycopg
    except ImportError:  # pragma: no cover - only called with a PostgreSQL database in use
        return None
    if not isinstance(orig, psycopg.Error):
        return None
    diag = orig.diag
    message = (diag.message_primary or str(orig) or type(orig).__name__).strip().splitlines()[0]
    if orig.sqlstate in ("23505", "23502"):  # unique_violation, not_null_violation
        return f"{message} (duplicate or missing key in the source)"
    context = (diag.context or "").strip().splitlines()
    if context and context[0].startswith("COPY "):
        return f"PostgreSQL refused a value: {message} ({context[0]})"
    return message
