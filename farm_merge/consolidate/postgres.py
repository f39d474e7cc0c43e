"""Merging into PostgreSQL: sources read from SQLite, streamed in with COPY.

The same contract as the SQLite target (:mod:`farm_merge.consolidate.sqlite`): one source is one
transaction holding every table's rows, the ``simulations`` row and the ledger row; row
counts are checked before the commit; ``--verify`` compares a content checksum of every
table; schema drift is kept.  What differs is how rows travel: SQLite cannot ATTACH a
server, so each table of a source is read with one ``SELECT`` on a read-only SQLite
connection and streamed with one ``COPY … FROM STDIN`` (psycopg 3 packs rows in C and
sends them in blocks); memory stays flat whatever the size of a table.

A table without a TIMESTAMP column goes in COPY's binary format: integers, floats and
text are packed as the server stores them, with nothing printed here or parsed there
(about a fifth less CPU on each side).  Binary COPY converts nothing, so a source holding a
value of another type than its column's is rolled back and merged again in text, which
converts what SQLite's affinity would have converted, or fails with the server's reason as
below.  ``--verify`` goes in text.

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
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Callable, Iterator, Sequence

from sqlalchemy import inspect

from farm_merge.consolidate.plan import Plan
from farm_merge.consolidate.report import FAILED, SourceResult
from farm_merge.consolidate.sources import SourceInfo
from farm_merge.consolidate.target import MergeTarget, copy_failure
from farm_merge.errors import ConnectionLost, SourceError
from farm_merge.progress import progress_bar
from farm_merge.storage import hashing, indexes, sqltext
from farm_merge.storage.postgres import CHUNK_ROWS, column_type, copy_rows, kind_of, refusal
from farm_merge.storage.writer import is_connection_lost

#: Key of the advisory lock that makes merges into one database take turns.
MERGE_LOCK_KEY = 0x6D657267  # "merg"

#: Connections that build the secondary indexes at the end of a first merge.
INDEX_CONNECTIONS = 2


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
        except Exception as e:
            # A session the server ended took its lock with it; the error that ended the
            # merge (if any) is the one to report.
            if not (exc[0] is not None or is_connection_lost(e)):
                raise
        finally:
            super().__exit__(*exc)

    def bulk_load_end(self, progress: bool | None) -> None:
        """Build the missing secondary indexes on :data:`INDEX_CONNECTIONS` connections at
        once: the client has nothing else to do by then, and the server's sorting then uses
        both cores.  Each connection builds its share in one transaction; a kill leaves
        whole indexes or none, and the next merge builds what is missing."""
        if not self.bulk:
            return
        with self.conn.begin():
            missing = indexes.missing(self.conn)
            sizes = dict(self.conn.exec_driver_sql(
                "SELECT relname, pg_relation_size(oid) FROM pg_class WHERE relkind = 'r'").fetchall())
        shares: list[list] = [[] for _ in range(INDEX_CONNECTIONS)]
        load = [0] * INDEX_CONNECTIONS
        for index in sorted(missing, key=lambda ix: -sizes.get(ix.table.name, 0)):  # biggest first, to the least loaded
            lightest = load.index(min(load))
            shares[lightest].append(index)
            load[lightest] += sizes.get(index.table.name, 0)
        bar = progress_bar(progress, "indexing", len(missing), unit="index")

        def build(share: list) -> None:
            with self.engine.connect() as conn, conn.begin():
                for index in share:
                    index.create(conn)
                    bar.update(1)

        with ThreadPoolExecutor(max_workers=INDEX_CONNECTIONS) as pool:
            futures = [pool.submit(build, share) for share in shares if share]
        bar.close()
        for future in futures:
            future.result()  # the first failure, once every share is done
        self.bulk = False

    def column_type(self, declared: str) -> str:
        return column_type(declared)

    def _read_columns(self) -> None:
        inspector = inspect(self.conn)
        self.kinds = {t: {c["name"]: kind_of(c["type"]) for c in inspector.get_columns(t)}
                      for t in inspector.get_table_names()}
        self.columns = {t: set(kinds) for t, kinds in self.kinds.items()}

    def _column_added(self, table: str, column: str, column_type: str) -> None:
        kind = {"BIGINT": "int", "DOUBLE PRECISION": "float", "BOOLEAN": "bool", "BYTEA": "bytes"}.get(
            column_type, "text")
        self.kinds.setdefault(table, {})[column] = kind
        super()._column_added(table, column, column_type)

    # --- one source ----------------------------------------------------------------
    def _merge_attempt(self, plan: Plan, *, replace: bool, verify: bool) -> SourceResult:
        """In binary COPY first (without ``verify``), then, if that refused a value, in text."""
        result = super()._merge_attempt(plan, replace=replace, verify=verify, binary=not verify)
        if result is _BINARY_REFUSED:
            # Binary COPY converts nothing: a value of another type than its column's (text
            # in a number column, a whole REAL in an INTEGER one, 't' in a BOOLEAN) or one the
            # server refuses stops it.  The source is merged again from the start, in text,
            # which converts the value as SQLite would have or fails the source with the
            # server's reason.
            result = super()._merge_attempt(plan, replace=replace, verify=verify, binary=False)
        return result

    def _open_source(self, info: SourceInfo) -> sqlite3.Connection:
        """A read-only connection of its own, one snapshot of the source for all its tables
        (SQLite cannot ATTACH a server)."""
        try:
            source = sqlite3.connect(info.uri, uri=True, isolation_level=None, timeout=0, check_same_thread=False)
        except sqlite3.Error as e:
            raise SourceError(str(info.path), f"cannot open: {e}") from e
        try:
            source.execute("PRAGMA trusted_schema = OFF")
            source.execute("BEGIN")
        except sqlite3.Error as e:
            source.close()
            raise SourceError(str(info.path), copy_failure(e)) from e
        return source

    def _close_source(self, source: sqlite3.Connection) -> None:
        source.close()

    def _target_failure(self, error: Exception, plan: Plan) -> BaseException | None:
        if not is_connection_lost(error):
            return None
        # The server is gone (and with the session, the lock that keeps merges apart): stop.
        # The next run finds the indexes missing and builds them.
        self.bulk = False
        return ConnectionLost(
            self.engine.url.render_as_string(hide_password=True), f"merging {plan.info.path}",
            refusal(error) or copy_failure(error),
            "the sources merged before it are in: run the same command again to merge the rest")

    def _source_failure(self, error: Exception, plan: Plan, *, binary: bool = False) -> SourceResult:
        return _BINARY_REFUSED if binary else plan.result(FAILED, refusal(error) or copy_failure(error))

    def _copy(self, source: sqlite3.Connection, info: SourceInfo, theirs: str | None, ours: str, *, single: bool,
              verify: bool, binary: bool) -> tuple[dict[str, int], dict[str, str]]:
        """COPY every table's rows of simulation ``theirs`` in under ``ours``; check the counts
        (and with ``verify`` the content checksums) against the source's.  ``binary``: each
        table without a TIMESTAMP column goes in COPY's binary format."""
        counts, checksums = {}, {}
        raw = self.conn.connection.driver_connection
        for table in info.tables.values():
            columns = [c for c in table.columns if c != "simulation_id"]
            kinds = [self.kinds[table.name][c] for c in columns]
            expected = table.rows if single else info.rows_expected(table.name, theirs)
            types = _binary_types(kinds) if binary else None
            expression = _binary_expression if types else _source_expression
            selected = "".join(f", {expression(c, k)}" for c, k in zip(columns, kinds))
            where, params = ("", ()) if single else info.rows_of(table.name, theirs)
            # The simulation id comes first in every row, as SQLite hands the row over:
            # no tuple is built again here.
            cursor = source.execute(f"SELECT ?{selected} FROM {sqltext.quote(table.name)}{where}", (ours, *params))
            digest = hashing.RowHash() if verify else None
            got = copy_rows(self.conn, table.name, ["simulation_id", *columns],
                            _hashed(cursor, digest, kinds) if verify else cursor, types)
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
        selected = ", ".join(f"{sqltext.quote(c)}::text" if k == "json" else sqltext.quote(c)
                             for c, k in zip(columns, kinds)) or "NULL"
        digest = hashing.RowHash()
        canonical = [_TARGET_FORMS[k] for k in kinds]
        with raw.cursor(name="farm_merge_verify") as cursor:  # server-side: rows come in chunks
            cursor.itersize = CHUNK_ROWS
            cursor.execute(f"SELECT {selected} FROM {sqltext.quote(table)} WHERE simulation_id = %s", (ours,))
            for row in cursor:
                digest.step(*[None if v is None else form(v) for form, v in zip(canonical, row)] if columns else [])
        return digest.finalize()


def _source_expression(column: str, kind: str) -> str:
    """How to read a source column for a target column of ``kind``: as SQLite's affinity
    would have stored it in the SQLite target (TEXT: numbers become their text; INTEGER:
    a whole REAL becomes an integer)."""
    q = sqltext.quote(column)
    if kind in ("text", "json"):
        return f"CAST({q} AS TEXT)" if kind == "text" else q
    if kind == "int":
        return f"CASE WHEN typeof({q}) = 'real' AND {q} = CAST({q} AS INTEGER) THEN CAST({q} AS INTEGER) ELSE {q} END"
    return q


#: A binary attempt at a source failed on a value; it is merged again in text.
_BINARY_REFUSED = SourceResult("", FAILED, "binary COPY refused a value")

#: How a value of each kind goes in binary COPY (psycopg's type names).  JSON goes as its
#: text (the binary form of ``json`` is the text); a BOOLEAN as the one byte the server
#: stores (see :func:`_binary_expression`).  TIMESTAMP has none here: a run file holds
#: whatever text its writer chose, which only the server's text parser reads, so a table
#: with a TIMESTAMP column goes in text.
_BINARY_TYPES = {"int": "int8", "float": "float8", "text": "text", "json": "text", "bytes": "bytea", "bool": "bytea"}


def _binary_types(kinds: Sequence[str]) -> list[str] | None:
    """psycopg's type names for a table's columns, the simulation id first; None when a
    column has no binary form here (the table then goes in text)."""
    if any(k not in _BINARY_TYPES for k in kinds):
        return None
    return ["text", *(_BINARY_TYPES[k] for k in kinds)]


def _binary_expression(column: str, kind: str) -> str:
    """:func:`_source_expression`, and a BOOLEAN's 0 and 1 as the bytes 00 and 01 (the binary
    form of false and true); any other value stays what it is, and its dumper refuses it."""
    if kind != "bool":
        return _source_expression(column, kind)
    q = sqltext.quote(column)
    return f"CASE WHEN typeof({q}) = 'integer' AND {q} IN (0, 1) THEN CASE {q} WHEN 1 THEN x'01' ELSE x'00' END ELSE {q} END"


def _hashed(cursor: sqlite3.Cursor, digest: hashing.RowHash, kinds: Sequence[str]) -> Iterator[tuple]:
    """The source's rows (the simulation id first), each hashed on the way without it."""
    canonical = [_SOURCE_FORMS[k] for k in kinds]
    while chunk := cursor.fetchmany(CHUNK_ROWS):
        for row in chunk:
            digest.step(*[None if v is None else form(v) for form, v in zip(canonical, row[1:])] if kinds else [])
        yield from chunk


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
