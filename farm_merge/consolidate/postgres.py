"""Merging into PostgreSQL: sources read from SQLite, streamed in with COPY.

The same contract as the SQLite target (:mod:`farm_merge.consolidate.sqlite`): one source is one
transaction holding every table's rows, the ``simulations`` row and the ledger row; row
counts are checked before the commit; ``--verify`` compares a content checksum of every
table; schema drift is kept.  What differs is how rows travel: SQLite cannot ATTACH a
server, so each table of a source is read with one ``SELECT`` on a read-only SQLite
connection, in chunks, and sent with one ``COPY … FROM STDIN`` (psycopg 3 formats rows in
C); memory stays flat whatever the size of a table.

Values are sent as SQLite holds them and PostgreSQL parses them into the column's type:
0/1 into BOOLEAN, date-time text into TIMESTAMP, JSON text into JSON.  Where SQLite's
column affinity would have converted a value on insert, the source's ``SELECT`` does the
same conversion (a number into a TEXT column becomes its text, a whole REAL in an INTEGER
column its integer).  A value PostgreSQL cannot take (text in a number column, invalid
JSON, NUL characters in text, bytes that are not UTF-8 in a TEXT column) fails the source
with the server's reason, naming table, line and column; nothing of it is written.

Merges into one database take turns (a session advisory lock), since a first merge drops
and rebuilds the secondary indexes; loggers writing meanwhile are not held up.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime
from typing import Any, Callable, Iterator, Sequence

from sqlalchemy import inspect

from farm_merge.consolidate.plan import Plan
from farm_merge.consolidate.report import FAILED, MERGED, SourceResult
from farm_merge.consolidate.sources import SourceInfo
from farm_merge.consolidate.target import MergeTarget, copy_failure
from farm_merge.errors import FarmMergeError, SourceError
from farm_merge.storage import db
from farm_merge.storage.postgres import CHUNK_ROWS, column_type, copy_rows, kind_of, refusal
from farm_merge.storage.writer import is_connection_lost

#: Key of the advisory lock that makes merges into one database take turns.
MERGE_LOCK_KEY = 0x6D657267  # "merg"


class PostgresTarget(MergeTarget):
    """An experiment database on PostgreSQL, open for one merge run."""

    def __enter__(self) -> "PostgresTarget":
        super().__enter__()
        # Session-level: held across this run's transactions until __exit__.
        self.conn.exec_driver_sql(f"SELECT pg_advisory_lock({MERGE_LOCK_KEY})")
        self.conn.commit()
        return self

    def __exit__(self, *exc) -> None:
        try:
            if not self.conn.invalidated:
                self.conn.rollback()
                self.conn.exec_driver_sql(f"SELECT pg_advisory_unlock({MERGE_LOCK_KEY})")
                self.conn.commit()
        finally:
            super().__exit__(*exc)

    def _load_columns(self) -> None:
        inspector = inspect(self.conn)
        self.kinds = {t: {c["name"]: kind_of(c["type"]) for c in inspector.get_columns(t)}
                      for t in inspector.get_table_names()}
        self.columns = {t: set(kinds) for t, kinds in self.kinds.items()}
        self.conn.rollback()

    # --- one source ----------------------------------------------------------------
    def merge_one(self, plan: Plan, *, replace: bool, verify: bool) -> SourceResult:
        started = time.monotonic()
        info = plan.info
        try:
            source = sqlite3.connect(info.uri, uri=True, isolation_level=None, timeout=0, check_same_thread=False)
        except sqlite3.Error as e:
            return plan.result(FAILED, f"cannot open: {e}")
        try:
            source.execute("PRAGMA trusted_schema = OFF")
            source.execute("BEGIN")  # one snapshot of the source for all its tables
            with self.conn.begin():
                added = self._prepare_tables(info)
                checksums, rows = {}, 0
                for theirs, ours in plan.simulations:
                    if replace:
                        self._delete_simulation(ours)
                    counts, checksums = self._copy(source, info, theirs, ours, single=len(plan.simulations) == 1,
                                                   verify=verify)
                    rows += sum(counts.values())
                    self._write_catalog(info, theirs, ours, counts, checksums, added)
        except SourceError as e:
            self._load_columns()
            return plan.result(FAILED, e.reason)
        except Exception as e:  # a database error while copying: report it, keep going
            if is_connection_lost(e):
                # The server is gone (and with the session, the lock that keeps merges apart):
                # stop. The next run finds the indexes missing and builds them.
                self.bulk = False
                raise FarmMergeError(
                    f"lost the connection to {self.engine.url.render_as_string(hide_password=True)} while merging "
                    f"{info.path} ({refusal(e) or copy_failure(e)}); the sources merged before it are in: run the "
                    "same command again to merge the rest") from e
            self._load_columns()
            return plan.result(FAILED, refusal(e) or copy_failure(e))
        finally:
            source.close()
        return plan.result(MERGED, None, rows=rows, added_columns=added, seconds=time.monotonic() - started)

    def _prepare_tables(self, info: SourceInfo) -> list[str]:
        """Add what the source has and the target lacks: unknown tables, new columns."""
        added = []
        for table in info.tables.values():
            q = db.quote(table.name)
            if table.name not in self.columns:
                cols = ", ".join(f"{db.quote(c)} {column_type(t)}" for c, t in table.columns.items()
                                 if c != "simulation_id")
                self.conn.exec_driver_sql(f"CREATE TABLE {q} (simulation_id TEXT NOT NULL{', ' if cols else ''}{cols})")
                self.conn.exec_driver_sql(
                    f"CREATE INDEX {db.quote('ix_' + table.name + '_simulation_id')} ON {q} (simulation_id)")
                self._added(table.name, "simulation_id", "TEXT")
                for c, t in table.columns.items():
                    self._added(table.name, c, column_type(t))
                added.append(f"table {table.name}")
                continue
            for column, declared in table.columns.items():
                if column not in self.columns[table.name]:
                    self.conn.exec_driver_sql(f"ALTER TABLE {q} ADD COLUMN {db.quote(column)} {column_type(declared)}")
                    self._added(table.name, column, column_type(declared))
                    added.append(f"{table.name}.{column}")
        return added

    def _added(self, table: str, column: str, pg_type: str) -> None:
        kind = {"BIGINT": "int", "DOUBLE PRECISION": "float", "BOOLEAN": "bool", "BYTEA": "bytes"}.get(pg_type, "text")
        self.kinds.setdefault(table, {})[column] = kind
        self.columns.setdefault(table, set()).add(column)

    def _copy(self, source: sqlite3.Connection, info: SourceInfo, theirs: str | None, ours: str, *, single: bool,
              verify: bool) -> tuple[dict[str, int], dict[str, str]]:
        """COPY every table's rows of simulation ``theirs`` in under ``ours``; check the counts
        (and with ``verify`` the content checksums) against the source's."""
        counts, checksums = {}, {}
        raw = self.conn.connection.driver_connection
        for table in info.tables.values():
            columns = [c for c in table.columns if c != "simulation_id"]
            kinds = [self.kinds[table.name][c] for c in columns]
            expected = table.rows if single else info.rows_expected(table.name, theirs)
            selected = ", ".join(_source_expression(c, k) for c, k in zip(columns, kinds)) or "NULL"
            where, params = ("", ()) if single else info.rows_of(table.name, theirs)
            cursor = source.execute(f"SELECT {selected} FROM {db.quote(table.name)}{where}", params)
            digest = db.RowHash() if verify else None
            got = copy_rows(self.conn, table.name, ["simulation_id", *columns],
                            _tagged(cursor, ours, len(columns), digest, kinds))
            if got != expected:
                raise SourceError(str(info.path), f"verification failed: {table.name} has {got} rows for "
                                                  f"{ours!r} in the target, the source has {expected}")
            counts[table.name] = got
            if verify:
                source_sum, merged = digest.finalize(), self._checksum(raw, table.name, columns, kinds, ours)
                if source_sum != merged:
                    raise SourceError(str(info.path), f"verification failed: content checksum of {table.name} "
                                                      f"differs (source {source_sum}, target {merged})")
                checksums[table.name] = merged
        return counts, checksums

    def _checksum(self, raw: Any, table: str, columns: list[str], kinds: list[str], ours: str) -> str:
        """The checksum of a simulation's rows as PostgreSQL holds them, read back in chunks."""
        selected = ", ".join(f"{db.quote(c)}::text" if k == "json" else db.quote(c)
                             for c, k in zip(columns, kinds)) or "NULL"
        digest = db.RowHash()
        canonical = [_TARGET_FORMS[k] for k in kinds]
        with raw.cursor(name="farm_merge_verify") as cursor:  # server-side: rows come in chunks
            cursor.itersize = CHUNK_ROWS
            cursor.execute(f"SELECT {selected} FROM {db.quote(table)} WHERE simulation_id = %s", (ours,))
            for row in cursor:
                digest.step(*[None if v is None else form(v) for form, v in zip(canonical, row)] if columns else [])
        return digest.finalize()


def _source_expression(column: str, kind: str) -> str:
    """How to read a source column for a target column of ``kind``: as SQLite's affinity
    would have stored it in the SQLite target (TEXT: numbers become their text; INTEGER:
    a whole REAL becomes an integer)."""
    q = db.quote(column)
    if kind in ("text", "json"):
        return f"CAST({q} AS TEXT)" if kind == "text" else q
    if kind == "int":
        return f"CASE WHEN typeof({q}) = 'real' AND {q} = CAST({q} AS INTEGER) THEN CAST({q} AS INTEGER) ELSE {q} END"
    return q


def _tagged(cursor: sqlite3.Cursor, ours: str, width: int, digest: db.RowHash | None,
            kinds: Sequence[str]) -> Iterator[tuple]:
    """The source's rows, chunk by chunk, with the simulation id in front (and hashed)."""
    canonical = [_SOURCE_FORMS[k] for k in kinds]
    while chunk := cursor.fetchmany(CHUNK_ROWS):
        if digest is not None:
            for row in chunk:
                digest.step(*[None if v is None else form(v) for form, v in zip(canonical, row)] if width else [])
        if width:
            for row in chunk:
                yield (ours, *row)
        else:
            for _ in chunk:
                yield (ours,)


# --- checksums comparable across the two engines ------------------------------------------
# --verify hashes each value in one text form per kind: the form of the value PostgreSQL
# parsed from what was sent (source side) and of the value it returns (target side).

_TRUE = {"1", "t", "true", "y", "yes", "on"}


def _bool_form(value: Any) -> str:
    if isinstance(value, str):
        return "1" if value.strip().lower() in _TRUE else "0"
    return "1" if value else "0"


def _timestamp_form(value: Any) -> str:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None).isoformat(sep=" ")
    try:  # PostgreSQL's TIMESTAMP (without time zone) ignores an offset in the text
        return datetime.fromisoformat(str(value).strip()).replace(tzinfo=None).isoformat(sep=" ")
    except ValueError:
        return str(value)


def _bytes_form(value: Any) -> str:
    if isinstance(value, str):
        value = value.encode()
    return bytes(value).hex()


_SOURCE_FORMS: dict[str, Callable[[Any], str]] = {
    "int": lambda v: str(int(v)),
    "float": lambda v: repr(float(v)),
    "bool": _bool_form,
    "timestamp": _timestamp_form,
    "json": str,
    "bytes": _bytes_form,
    "text": str,
}
_TARGET_FORMS: dict[str, Callable[[Any], str]] = {
    **_SOURCE_FORMS,
    "float": repr,
    "bytes": lambda v: bytes(v).hex(),
}
