"""Each simulation of an experiment database back to a per-run SQLite file, in the
layout of the AgentFarm era it came from.

The era is the one the merge recorded (``simulations.era``: ``2025-03``, or
``~2025-03`` for a near match); a simulation logged directly has none and gets the
current layout (:data:`farm_merge.storage.legacy.CURRENT_ERA`).  Tables, indexes and foreign
keys are those of the era (:meth:`LegacyTable.create_sql`), and so are the page size and
the journal (WAL from 2025-02 on); rows are copied with INSERT…SELECT through ATTACH.  Writing into the era's own column types undoes the merge's one conversion: an
id the experiment schema holds as TEXT goes back into an INTEGER column as an integer.

Nothing that holds a value is dropped for not fitting the era:

* a column the era lacks but that holds values for the simulation (schema drift the
  merge added, or a column of a near-match source) is added to the table, after the
  era's columns, with the experiment schema's declared type;
* a table the era lacks but that holds rows for the simulation is created: a known
  data table in the layout of the latest era that had it, a table unknown to AgentFarm
  as the merge created it (without ``simulation_id``);
* a NOT NULL column of the era that has NULLs for the simulation is created nullable.

Each of these is listed in the report.  What the experiment database cannot give back:
rows of a 2025-03 file whose ``simulation_id`` was NULL get the file's simulation id
(they belonged to it); the ``simulations`` catalogue row is rebuilt from the experiment's
record (its ``parameters`` are the experiment's, which for a merged run is the run's
``simulation_config`` JSON; times are written as the experiment stores them); the
``experiments`` table is left empty, as in a per-run file; rowids of tables without an
integer key follow key order.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

from sqlalchemy import Connection, select

from farm_merge.errors import NothingToWrite, OutputRefused, VerificationFailed
from farm_merge.progress import progress_bar
from farm_merge.query.attached import attached
from farm_merge.query.export import write_experiment_file
from farm_merge.query.scope import ExperimentReader
from farm_merge.storage import db, legacy, sqltext
from farm_merge.storage.columns import ColumnInfo, add_missing_columns, columns_of, key_of
from farm_merge.storage.outputs import Staging, run_file_names
from farm_merge.storage.schema import Simulation

SIMULATIONS = Simulation.__table__


@dataclass
class SplitFile:
    """One run file written by :func:`split`."""

    simulation_id: str
    path: str
    era: str  # the layout written
    rows: int
    tables: dict[str, int] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)  # what the era lacked but the simulation held


@dataclass
class SplitReport:
    output: str
    files: list[SplitFile] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output, "files": [asdict(f) for f in self.files],
                "rows": sum(f.rows for f in self.files), "seconds": round(self.seconds, 3)}


def split(tool: ExperimentReader, output_dir: str | os.PathLike, *, simulation_ids: Sequence[str] | None = None,
          overwrite: bool = False, progress: bool | None = False) -> SplitReport:
    """Write each simulation in ``tool``'s scope (or the given ones) to
    ``output_dir/<simulation_id>.db`` in its era's layout; see the module docstring.

    Names are made by :func:`farm_merge.storage.outputs.run_file_names` (escaped, ``/``
    making folders, shortened past the file system's limit); the files are written into a
    staging folder and put in place together at the end, so an interrupted split leaves
    none of them."""
    started = time.monotonic()
    source = tool.location.path  # None: a server database
    ids = tool.simulation_ids(simulation_ids)
    if not ids:
        raise NothingToWrite(tool.db_path, "split")
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise OutputRefused(str(folder), "is a file; split writes a folder of run files")
    names = run_file_names(ids, folder)
    report = SplitReport(str(folder))
    with Staging(folder, overwrite=overwrite, protect=source) as staging:
        staging.check(names.values())
        if source is None:
            # A server cannot be ATTACHed: its simulations are first streamed into a scratch
            # SQLite experiment file in the staging folder (farm_merge.query.fromserver).
            scratch = staging.scratch("experiment.db")
            write_experiment_file(tool, scratch, ids)
            with ExperimentReader(scratch) as local:
                _write_run_files(local, ids, names, staging, report, progress)
        else:
            _write_run_files(tool, ids, names, staging, report, progress)
    report.seconds = time.monotonic() - started
    return report


def _write_run_files(tool: ExperimentReader, ids: list[str], names: dict[str, str], staging: Staging,
                     report: SplitReport, progress: bool | None) -> None:
    bar = progress_bar(progress, "splitting", len(ids), unit="simulation")
    with tool.engine.connect() as conn:
        records = {r.simulation_id: r for r in conn.execute(
            select(SIMULATIONS.c.simulation_id, SIMULATIONS.c.era, SIMULATIONS.c.source_simulation_id)
            .where(tool.in_scope(SIMULATIONS.c.simulation_id, ids)))}
        tables = {t: columns_of(conn, t) for t in tool.data_tables(conn)}
        conn.rollback()
        try:
            for sim in ids:
                bar.set_postfix_str(sim, refresh=False)
                writer = _RunFileWriter(conn, tables, records[sim], staging.add(names[sim]),
                                        staging.folder / names[sim])
                report.files.append(writer.write())
                bar.update(1)
        finally:
            bar.close()


class _RunFileWriter:
    """Writes one simulation's run file."""

    def __init__(self, conn: Connection, tables: dict[str, list[ColumnInfo]], record, path: Path, final: Path):
        self.conn, self.tables = conn, tables
        self.path, self.final = path, final  # where it is written, where it is put when all are done
        self.simulation_id = record.simulation_id
        # The id the run file recorded in its rows; a simulation logged here directly has its own.
        self.recorded_id = record.source_simulation_id or record.simulation_id
        self.added: list[str] = []
        name = (record.era or legacy.CURRENT_ERA.name).lstrip("~")
        try:
            self.era = legacy.era(name)
        except ValueError:
            self.era = legacy.CURRENT_ERA
            self.added.append(f"unknown era {record.era!r}: written in the {self.era.name} layout")
        self.counts: dict[str, int] = {}
        self.indexes: list[str] = []

    def write(self) -> SplitFile:
        # AgentFarm's file format as well as its tables: its page size and its era's journal
        # (a file ATTACH creates would get the rollback journal whatever the era).
        db.initialize_sqlite(self.path, page_size=legacy.PAGE_SIZE, journal_mode=self.era.journal_mode)
        with attached(self.conn, self.path):
            with self.conn.begin():  # one snapshot of the simulation, one transaction on the file
                for table in self.era.tables:
                    self._table(table, self.era.tables[table])
                for table in self.tables:
                    if table not in self.era.tables:
                        self._extra_table(table)
        con = sqlite3.connect(self.path, isolation_level=None)
        try:  # indexes after the rows: built once instead of updated row by row
            for statement in self.indexes:
                con.execute(statement)
        finally:
            con.close()
        if not self.era.has_simulation_id and Path(self.final.name).stem != self.simulation_id.split("/")[-1]:
            self.added.append(f"the {self.era.name} layout records no simulation id and this one is not the file's "
                              "name (escaped or shortened): merged again, the simulation is named after the file")
        data = {t: n for t, n in self.counts.items() if t not in legacy.CATALOG_TABLES}
        return SplitFile(self.simulation_id, str(self.final), self.era.name, sum(data.values()), self.counts,
                         self.added)

    # --- tables ------------------------------------------------------------------------
    def _table(self, name: str, layout: legacy.LegacyTable) -> None:
        if name == "simulations":
            self._create(layout)
            self._simulations_row(layout)
        elif name == "experiments":
            self._create(layout)  # a per-run file's experiments table is empty
        elif name in self.tables:
            self._copy(name, layout)
        else:  # a data table of the era that the experiment database never had: empty
            self._create(layout)

    def _extra_table(self, name: str) -> None:
        """A table the era lacks: written only if it holds rows of this simulation."""
        if self._scalar(f"SELECT 1 FROM main.{sqltext.quote(name)} WHERE simulation_id = ? LIMIT 1") is None:
            return
        latest = next((era.tables[name] for era in reversed(legacy.ERAS) if name in era.tables), None)
        if latest is not None:
            self.added.append(f"table {name} (from the {self._era_of(name)} layout)")
            self._copy(name, latest)
            return
        columns = [c for c in self.tables[name] if c.name != "simulation_id"]
        cols = ", ".join(f"{sqltext.quote(c.name)} {c.type}".rstrip() for c in columns)
        self.conn.exec_driver_sql(f"CREATE TABLE out.{sqltext.quote(name)} ({cols})")
        self.added.append(f"table {name}")
        self._insert(name, [c.name for c in columns], columns_known={c.name for c in columns})

    @staticmethod
    def _era_of(name: str) -> str:
        return next(era.name for era in reversed(legacy.ERAS) if name in era.tables)

    def _copy(self, name: str, layout: legacy.LegacyTable) -> None:
        """Copy a table the era has (not through sqlite-utils: the file is the attached ``out``)."""
        ours = {c.name: c for c in self.tables[name]}
        theirs = set(layout.column_names)
        required = [c.name for c in layout.columns if c.not_null and c.name != "simulation_id"]
        extra = [c for c in self.tables[name] if c.name not in theirs and c.name != "simulation_id"]
        # One pass over the simulation's rows: how many, NULLs in NOT NULL columns, values in extra columns.
        probes = [f"count({sqltext.quote(c)})" if c in ours else "0" for c in required]
        probes += [f"count({sqltext.quote(c.name)})" for c in extra]
        found = self.conn.exec_driver_sql(
            f"SELECT count(*){''.join(', ' + p for p in probes)} FROM main.{sqltext.quote(name)} WHERE simulation_id = ?",
            (self.simulation_id,)).one()
        rows, filled = found[0], found[1:]
        relaxed = {c for c, n in zip(required, filled[: len(required)]) if n < rows}
        kept = [c for c, n in zip(extra, filled[len(required):]) if n > 0]
        if relaxed:
            layout = replace(layout, columns=tuple(replace(c, not_null=False) if c.name in relaxed else c
                                                   for c in layout.columns))
            self.added += [f"{name}.{c} nullable" for c in sorted(relaxed)]
        self._create(layout)
        new = add_missing_columns(self.conn, name, [(c.name, c.type) for c in kept], schema="out",
                                  present=layout.column_names)
        self.added += [f"{name}.{column}" for column in new]
        self._insert(name, [*layout.column_names, *(c.name for c in kept)], columns_known=set(ours),
                     expected=rows)

    def _create(self, layout: legacy.LegacyTable) -> None:
        self.conn.exec_driver_sql(layout.create_sql(schema="out")[0])
        self.indexes += layout.create_sql()[1:]  # run on the finished file, as its main database
        self.counts.setdefault(layout.name, 0)

    def _insert(self, name: str, columns: list[str], *, columns_known: set[str], expected: int | None = None) -> None:
        values, params = [], []
        for column in columns:
            if column == "simulation_id":
                values.append("?")
                params.append(self.recorded_id)
            elif column in columns_known:
                values.append(sqltext.quote(column))
            else:
                values.append("NULL")
        key = key_of(self.tables[name])
        got = self.conn.exec_driver_sql(
            f"INSERT INTO out.{sqltext.quote(name)} ({', '.join(sqltext.quote(c) for c in columns)}) "
            f"SELECT {', '.join(values)} FROM main.{sqltext.quote(name)} WHERE simulation_id = ? "
            f"ORDER BY {', '.join(sqltext.quote(k) for k in key)}",
            (*params, self.simulation_id)).rowcount
        if expected is not None and got != expected:
            raise VerificationFailed(f"split of {self.simulation_id!r}", f"{name} wrote {got} rows, expected {expected}")
        self.counts[name] = got

    def _simulations_row(self, layout: legacy.LegacyTable) -> None:
        """The per-run file's one ``simulations`` row, rebuilt from the experiment's record."""
        integer_id = sqltext.affinity(layout.column("simulation_id").type) == "INTEGER"
        if self.recorded_id == self.simulation_id and integer_id:
            # Before 2025-03 the row's id was an autoincrement integer, 1 in a per-run file.
            run_id: Any = 1
        else:
            run_id = self.recorded_id
        values = {
            "simulation_id": "?", "experiment_id": "NULL", "parameters": "coalesce(parameters, '{}')",
            "simulation_db_path": "coalesce(simulation_db_path, ?)",
        }
        columns = list(layout.column_names)
        select_list = [values.get(c, sqltext.quote(c)) for c in columns]
        self.counts["simulations"] = self.conn.exec_driver_sql(
            f"INSERT INTO out.simulations ({', '.join(columns)}) SELECT {', '.join(select_list)} "
            "FROM main.simulations WHERE simulation_id = ?",
            (run_id, str(self.final), self.simulation_id)).rowcount

    def _scalar(self, sql: str):
        return self.conn.exec_driver_sql(sql, (self.simulation_id,)).scalar()
