"""Simulations out of an experiment database: CSV files per table, or a standalone
SQLite experiment database holding only them.

CSV is written by streaming each table's rows in key order (SQLAlchemy Core, so it works
on any back end); every file has the ``simulation_id`` column, so one layout serves one
simulation and ``--all``.  The SQLite form is an experiment database at the current
schema revision, so every ``farm-merge`` query command works on it; its rows are copied
with INSERT…SELECT through ATTACH, or from a server database streamed in chunks
(:mod:`farm_merge.query.fromserver`).  (To get run files that merge again, use ``split``.)
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy import Connection, select

from farm_merge.errors import InvalidArgument, NothingToWrite, OutputRefused
from farm_merge.query.attached import attached
from farm_merge.query.fromserver import copy_into_sqlite, snapshot
from farm_merge.query.scope import ExperimentReader
from farm_merge.storage import db, indexes, sqltext, versions
from farm_merge.storage.columns import add_missing_columns, columns_of
from farm_merge.storage.outputs import Staging, distinct_names, file_name, name_limit

FORMATS = ("csv", "sqlite")
CATALOG = ("experiments", "simulations", "merge_ledger")


@dataclass
class ExportedTable:
    table: str
    rows: int
    path: str | None = None  # the CSV file; None for a table inside a SQLite export


@dataclass
class ExportReport:
    output: str
    format: str
    simulation_ids: list[str]
    tables: list[ExportedTable] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables if t.table not in CATALOG)

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output, "format": self.format, "simulation_ids": self.simulation_ids,
                "rows": self.rows, "seconds": round(self.seconds, 3), "tables": [asdict(t) for t in self.tables]}


def export(tool: ExperimentReader, output: str | os.PathLike, *, simulation_ids: Sequence[str] | None = None,
           format: str = "csv",
           overwrite: bool = False) -> ExportReport:
    """Export simulations of ``tool``'s database (default: every one in its scope).

    ``csv``: ``output`` is a folder that gets ``simulations.csv`` and one
    ``<table>.csv`` per data table that has rows for them.  ``sqlite``: ``output`` is
    the file to write, or an existing folder that gets ``<simulation_id>.db`` (one
    simulation) or ``<database stem>.db``.  Existing files are replaced only with
    ``overwrite``.  Names made from ids and table names are those of
    :mod:`farm_merge.storage.outputs` (kept inside the folder); the files are written into a
    staging folder and put in place together at the end, so an interrupted export leaves
    none of them.
    """
    started = time.monotonic()
    if format not in FORMATS:
        raise InvalidArgument("format", format, f"use {' or '.join(FORMATS)}")
    ids = tool.simulation_ids(simulation_ids)
    if not ids:
        raise NothingToWrite(tool.db_path, "export")
    explicit = list(simulation_ids) if simulation_ids else None
    if format == "csv":
        report = _export_csv(tool, Path(output), explicit, ids, overwrite)
    else:
        report = _export_sqlite(tool, Path(output), explicit, ids, overwrite)
    report.seconds = time.monotonic() - started
    return report


# --- CSV --------------------------------------------------------------------------------
def _export_csv(tool: ExperimentReader, folder: Path, explicit: list[str] | None, ids: list[str],
                overwrite: bool) -> ExportReport:
    if folder.exists() and not folder.is_dir():
        raise OutputRefused(str(folder), "is a file; format='csv' writes a folder of CSV files")
    report = ExportReport(str(folder), "csv", ids)
    with tool.engine.connect() as conn:
        conn = snapshot(conn)  # one read transaction: a consistent snapshot
        tables = ["simulations", *tool.data_tables(conn)]
        names = distinct_names(tables, ".csv", limit=name_limit(folder))  # table names come from the data
        with Staging(folder, overwrite=overwrite) as staging:
            staging.check(names.values())
            for table in tables:
                rows = _write_csv(conn, tool, table, explicit, staging.add(names[table]))
                if rows:
                    report.tables.append(ExportedTable(table, rows, str(folder / names[table])))
    return report


def _write_csv(conn: Connection, tool, table: str, explicit: list[str] | None, path: Path) -> int:
    """Write ``table``'s rows of the simulations to ``path``; a table without any leaves no file."""
    inspector = sa.inspect(conn)
    columns = [c["name"] for c in inspector.get_columns(table)]
    key = inspector.get_pk_constraint(table)["constrained_columns"] or ["simulation_id"]
    source = sa.table(table, *[sa.column(c) for c in columns])
    # PostgreSQL hands JSON back parsed; the CSV gets the text it kept, as from SQLite.
    json_columns = {c["name"] for c in inspector.get_columns(table) if isinstance(c["type"], sa.JSON)} \
        if conn.dialect.name == "postgresql" else set()
    selected = [sa.cast(source.c[c], sa.Text).label(c) if c in json_columns else source.c[c] for c in columns]
    query = (select(*selected).where(tool.in_scope(source.c.simulation_id, explicit))
             .order_by(*[source.c[k] for k in key]))
    count = 0
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in conn.execution_options(yield_per=5000).execute(query):
            writer.writerow([csv_value(v) for v in row])
            count += 1
    if not count:
        path.unlink()
    return count


def csv_value(value: Any) -> Any:
    """A stored value as CSV text: NULL empty, floats exact, blobs as hex, JSON as JSON,
    booleans 1/0 (as SQLite stores them, so that both back ends export alike)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (datetime, date)):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


# --- SQLite -----------------------------------------------------------------------------
def _export_sqlite(tool: ExperimentReader, output: Path, explicit: list[str] | None, ids: list[str],
                   overwrite: bool) -> ExportReport:
    source = tool.location.path  # None: a server database
    if output.is_dir():
        stem = source.stem if source is not None else tool.location.database_name
        folder, name = output, file_name(ids[0] if len(ids) == 1 else stem, ".db", limit=name_limit(output))
    else:  # the file the user named
        folder, name = output.parent, output.name
    report = ExportReport(str(folder / name), "sqlite", ids)
    with Staging(folder, overwrite=overwrite, protect=source) as staging:
        report.tables = write_experiment_file(tool, staging.add(name), explicit)
    return report


def write_experiment_file(tool: ExperimentReader, path: Path, simulation_ids: list[str] | None) -> list[ExportedTable]:
    """Write a new standalone experiment database at ``path`` holding the simulations of
    ``tool``'s scope (or ``simulation_ids``); return what each table got."""
    versions.create_database(path)
    with versions.open_checked(path) as engine, engine.begin() as out:
        indexes.drop(out)  # built once, densely, after the copy
    report = ExportReport(str(path), "sqlite", [])
    if tool.location.path is None:  # no ATTACH for a server: its rows are streamed into the file
        copied = copy_into_sqlite(tool, path, simulation_ids)
        report.tables += [ExportedTable(t, n) for t, (n, _) in copied.items()]
        added_tables = [t for t, (_, created) in copied.items() if created]
    else:
        with tool.engine.connect() as conn, attached(conn, path):
            with conn.begin():
                added_tables = _copy_all(conn, tool, simulation_ids, report)
    with versions.open_checked(path) as engine, engine.begin() as out:
        indexes.ensure(out)
        for table in added_tables:
            out.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {sqltext.quote('ix_' + table + '_simulation_id')} "
                                f"ON {sqltext.quote(table)} (simulation_id)")
    con = db.connect_sqlite(path)
    try:
        con.execute("PRAGMA journal_mode = DELETE")  # a standalone file: no -wal beside it
    finally:
        con.close()
    return report.tables


def _copy_all(conn: Connection, tool, explicit: list[str] | None, report: ExportReport) -> list[str]:
    """Copy the catalogue rows and every data table's rows; return tables created in ``out``
    (not through sqlite-utils: it cannot name the attached ``out`` schema)."""
    filters = _filters(tool, explicit)
    added_tables = []
    for table in CATALOG:
        columns = [c.name for c in columns_of(conn, table, "out")]
        cols = ", ".join(sqltext.quote(c) for c in columns)
        rows = 0
        for where, params in filters:
            if table == "experiments":
                sql = (f"INSERT OR IGNORE INTO out.experiments ({cols}) SELECT {cols} FROM main.experiments "
                       f"WHERE experiment_id IN (SELECT experiment_id FROM main.simulations{where})")
            else:
                q = sqltext.quote(table)
                sql = f"INSERT INTO out.{q} ({cols}) SELECT {cols} FROM main.{q}{where}"
            rows += conn.exec_driver_sql(sql, params).rowcount
        report.tables.append(ExportedTable(table, rows))
    for table in tool.data_tables(conn):
        ours = columns_of(conn, table)
        theirs = {c.name for c in columns_of(conn, table, "out")}
        if not theirs:
            cols = ", ".join(f"{sqltext.quote(c.name)} {c.type}".rstrip() for c in ours if c.name != "simulation_id")
            conn.exec_driver_sql(f"CREATE TABLE out.{sqltext.quote(table)} (simulation_id TEXT NOT NULL"
                                 f"{', ' if cols else ''}{cols})")
            added_tables.append(table)
        else:  # the columns a merge added for schema drift
            add_missing_columns(conn, table, [(c.name, c.type) for c in ours], schema="out", present=theirs)
        cols = ", ".join(sqltext.quote(c.name) for c in ours)
        rows = 0
        for where, params in filters:
            rows += conn.exec_driver_sql(
                f"INSERT INTO out.{sqltext.quote(table)} ({cols}) SELECT {cols} "
                f"FROM main.{sqltext.quote(table)}{where}",
                params).rowcount
        report.tables.append(ExportedTable(table, rows))
    return added_tables


def _filters(tool: ExperimentReader, explicit: list[str] | None) -> list[tuple[str, tuple]]:
    """WHERE clauses (with parameters) that together select the exported simulations;
    each one reaches the rows through the key's leading ``simulation_id``."""
    if explicit:
        return [(" WHERE simulation_id = ?", (sim,)) for sim in explicit]
    if tool.experiment_id is not None:
        return [(" WHERE simulation_id IN (SELECT simulation_id FROM main.simulations WHERE experiment_id = ?)",
                 (tool.experiment_id,))]
    return [("", ())]
