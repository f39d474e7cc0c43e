"""Simulations out of an experiment database as Parquet datasets (pyarrow, the ``parquet``
extra), in the layout Spark, DuckDB, Polars and pandas read directly.

``DIR/<table>/simulation_id=<id>/part-0.parquet``: one dataset per table (``simulations``
and every data table with rows for the simulations), partitioned by ``simulation_id`` in
the Hive layout.  The id is in the folder name, %-escaped as
:func:`farm_merge.storage.outputs.partition_name` makes it (``a/b`` is
``simulation_id=a%2Fb``), which ``pyarrow.dataset``'s Hive partitioning, DuckDB and pandas
decode back; the files hold the other columns.  Readers guess a partition column's type from
the folder names (``0001`` would become the number 1): read ids back exactly by declaring it
text, e.g. ``pyarrow.dataset.dataset(DIR / "agents", partitioning=pyarrow.dataset.partitioning(
pyarrow.schema([("simulation_id", pyarrow.string())]), flavor="hive"))``, or DuckDB's
``read_parquet('DIR/agents/*/*.parquet', hive_partitioning=true, hive_types={'simulation_id':
VARCHAR})``.

As readers take the id from the folder name alone, an id that no folder name gives back
exactly is refused before anything is written (:class:`~farm_merge.errors.UnpartitionableId`,
which points at ``--format sqlite`` and ``csv``): one whose escaped name is longer than the
file system allows (a shortened name would make readers see another id; storing the real one
in the files as well would not help, as pyarrow lets the folder's value win and prunes a
filter on the real id to nothing), one only case tells from another (one folder on macOS and
Windows), and ``__HIVE_DEFAULT_PARTITION__`` (read as null).

Rows are streamed: each table is read in key order (its key leads with ``simulation_id``,
so no sort) in batches of :data:`BATCH_ROWS`, turned into Arrow columns, and each
simulation's rows go to a ``ParquetWriter`` of its own in row groups of up to
:data:`ROW_GROUP_ROWS`, closed when the next simulation starts, so memory stays flat
whatever the size of the table.  Column types are the schema's (those PostgreSQL enforces;
SQLite's declared ones for a column the schema lacks): integers int64, reals float64, text
string, booleans bool, times timestamp[us], blobs binary, JSON its text.  A value that does
not fit its column's type (SQLite keeps any value anywhere) stops the export with a one-line
error naming the column; none is truncated or dropped.
The datasets are built in the output folder's staging folder
(:class:`~farm_merge.storage.outputs.Staging`) and moved into place together once every table
is written, an existing dataset replaced whole (``overwrite``): an export that fails or is
interrupted leaves no dataset, and none that looks complete.
"""

from __future__ import annotations

import itertools
import os
import time
from operator import itemgetter
from pathlib import Path
from typing import Any, Callable, Sequence

import sqlalchemy as sa
from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql

from farm_merge.errors import (
    NothingToWrite,
    OutputRefused,
    UnexportableValue,
    UnpartitionableId,
    optional_import,
)
from farm_merge.query.export import ExportedTable, ExportReport
from farm_merge.query.fromserver import snapshot
from farm_merge.query.scope import ExperimentReader
from farm_merge.storage.outputs import HIVE_NULL, Staging, distinct_names, name_limit, partition_name
from farm_merge.storage.schema import DATA_TABLES, Simulation

#: Rows fetched at a time: as Python objects they take about 50 times the room they take in Arrow.
BATCH_ROWS = 10_000

#: Rows of a Parquet row group (fewer for a simulation's last one): what readers skip or read at once.
ROW_GROUP_ROWS = 100_000

PARTITION = "simulation_id"

#: The schema's own tables, whose declared types say what a column holds.
MODELS = {"simulations": Simulation.__table__, **DATA_TABLES}


def partition_names(simulation_ids: Sequence[str], folder: Path) -> dict[str, str]:
    """Each simulation's partition folder (:func:`~farm_merge.storage.outputs.partition_name`),
    or :class:`UnpartitionableId` for the first id no folder name gives back exactly."""
    limit = name_limit(folder, room=0)  # a folder's name: nothing is ever appended to it
    names = {sim: partition_name(PARTITION, sim) for sim in simulation_ids}
    by_case: dict[str, str] = {}
    for sim, name in names.items():
        if sim == HIVE_NULL:
            raise UnpartitionableId(sim, "readers take a folder of that name for a null id")
        size = len(name.encode())
        if size > limit:
            raise UnpartitionableId(sim, f"its folder name, escaped, is {size} bytes, past the {limit} a name may "
                                         "have here")
        other = by_case.setdefault(name.lower(), sim)
        if other != sim:
            raise UnpartitionableId(sim, f"only case tells it from {other!r}, and on macOS and Windows "
                                         "their folders would be one")
    return names


def export_parquet(tool: ExperimentReader, output: str | os.PathLike, *, simulation_ids: Sequence[str] | None = None,
                   overwrite: bool = False) -> ExportReport:
    """Write the simulations of ``tool``'s database (default: every one in its scope) as a
    Parquet dataset per table in the folder ``output`` (see the module docstring).
    Existing datasets are replaced only with ``overwrite``."""
    started = time.monotonic()
    pa = optional_import("pyarrow", "parquet", "format='parquet'")
    pq = optional_import("pyarrow.parquet", "parquet", "format='parquet'", package="pyarrow")
    ids = tool.simulation_ids(simulation_ids)
    if not ids:
        raise NothingToWrite(tool.db_path, "export")
    explicit = list(simulation_ids) if simulation_ids else None
    folder = Path(output)
    if folder.exists() and not folder.is_dir():
        raise OutputRefused(str(folder), "is a file; format='parquet' writes a folder of datasets")
    partitions = partition_names(ids, folder)
    report = ExportReport(str(folder), "parquet", ids)
    with tool.engine.connect() as conn:
        conn = snapshot(conn)  # one read transaction: a consistent snapshot
        tables = ["simulations", *tool.data_tables(conn)]
        names = distinct_names(tables, limit=name_limit(folder, room=0))  # table names come from the data
        with Staging(folder, overwrite=overwrite, protect=tool.location.path) as staging:
            staging.check(names.values())
            for table in tables:
                rows = _write_dataset(conn, tool, table, explicit, staging.add_folder(names[table]), partitions, pa, pq)
                if rows:
                    report.tables.append(ExportedTable(table, rows, str(folder / names[table])))
    report.seconds = time.monotonic() - started
    return report


def _write_dataset(conn: Connection, tool, table: str, explicit: list[str] | None, target: Path,
                   partitions: dict[str, str], pa, pq) -> int:
    """Write ``table``'s rows of the simulations as a dataset in the new folder ``target``
    (none when it has no rows for them); return how many."""
    source = sa.Table(table, sa.MetaData(), autoload_with=conn)
    key = list(source.primary_key.columns) or [source.c[PARTITION]]
    columns = [c for c in source.columns if c.name != PARTITION]
    model = MODELS.get(table)
    converters = [_converter(conn.dialect.name, c, _value_type(model, c), pa) for c in columns]
    schema = pa.schema([pa.field(c.name, arrow_type) for c, (_, arrow_type, _) in zip(columns, converters)])
    query = (select(source.c[PARTITION], *[selected for selected, _, _ in converters])
             .where(tool.in_scope(source.c[PARTITION], explicit)).order_by(*key))

    part = _Partition(target, partitions, schema, pa, pq)
    count = 0
    try:
        result = conn.execution_options(yield_per=BATCH_ROWS).execute(query)
        for batch in result.partitions():
            for simulation_id, rows in itertools.groupby(batch, key=itemgetter(0)):
                rows = list(rows)
                part.add(simulation_id, _arrow_table(table, rows, columns, converters, schema, pa))
                count += len(rows)
        part.close()
    finally:
        part.abandon()  # the staging folder, and whatever it holds, goes with the Staging
    return count


class _Partition:
    """The ``ParquetWriter`` of the simulation being written, and its rows not yet written
    (Arrow tables, fewer than :data:`ROW_GROUP_ROWS`)."""

    def __init__(self, folder: Path, partitions: dict[str, str], schema, pa, pq):
        self.folder, self.partitions, self.schema, self.pa, self.pq = folder, partitions, schema, pa, pq
        self.simulation_id: str | None = None
        self.writer = None
        self.pending: list = []
        self.rows = 0

    def add(self, simulation_id: str, rows) -> None:
        if simulation_id != self.simulation_id:
            self.close()
            self.simulation_id = simulation_id
            if simulation_id not in self.partitions:  # logged since the ids were read: checked alike
                self.partitions.update(partition_names([*self.partitions, simulation_id], self.folder.parent))
            path = self.folder / self.partitions[simulation_id]
            path.mkdir(parents=True)
            self.writer = self.pq.ParquetWriter(path / "part-0.parquet", self.schema)
        self.pending.append(rows)
        self.rows += rows.num_rows
        while self.rows >= ROW_GROUP_ROWS:  # full row groups only, until the simulation's last
            rows = self.pa.concat_tables(self.pending)
            self.writer.write_table(rows.slice(0, ROW_GROUP_ROWS))
            rest = rows.slice(ROW_GROUP_ROWS)
            self.pending, self.rows = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> None:
        """Write what is pending and close the simulation's file."""
        if self.writer is not None:
            if self.pending:
                self.writer.write_table(self.pa.concat_tables(self.pending))
            self.abandon()

    def abandon(self) -> None:
        """Close the file without writing what is pending (the export failed)."""
        self.pending, self.rows = [], 0
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()


def _value_type(model: sa.Table | None, column: sa.Column) -> sa.types.TypeEngine:
    """What ``column`` holds: the schema's type where it declares the column (as on
    PostgreSQL, where the declared type is the one enforced: SQLite's INTEGER
    ``average_agent_age`` holds fractions), else the database's declared type."""
    if model is not None and column.name in model.c:
        return model.c[column.name].type.dialect_impl(postgresql.dialect())
    return column.type


def _converter(dialect: str, column: sa.Column, kind: sa.types.TypeEngine,
               pa) -> tuple[sa.ColumnElement, Any, Callable | None]:
    """What to select for ``column``, its Arrow type, and how to turn the fetched values
    into an Arrow array when ``pa.array(values, type)`` would not (None)."""
    if isinstance(kind, sa.JSON):  # the stored text, as the CSV export writes it
        return sa.cast(column, sa.Text).label(column.name), pa.string(), None
    if isinstance(kind, sa.Boolean):
        return column, pa.bool_(), None
    if isinstance(kind, sa.Integer):  # inferred then cast: pa.array(values, int64) would truncate 9.7 to 9
        return column, pa.int64(), lambda values: pa.array(values).cast(pa.int64())
    if isinstance(kind, sa.Float):
        return column, pa.float64(), None
    if isinstance(kind, sa.Numeric):  # NUMERIC comes back as Decimal on a server
        return sa.cast(column, sa.Float).label(column.name), pa.float64(), None
    if isinstance(kind, sa.DateTime):
        if dialect == "sqlite":  # stored as ISO text: parsed by Arrow, a whole batch at once
            timestamp = pa.timestamp("us")
            return (sa.type_coerce(column, sa.Text).label(column.name), timestamp,
                    lambda values: pa.array(values, pa.string()).cast(timestamp))
        return column, pa.timestamp("us"), None
    if isinstance(kind, sa.Date):
        return column, pa.date32(), None
    if isinstance(kind, sa.LargeBinary):
        return column, pa.binary(), None
    if isinstance(kind, (sa.String, sa.Text)):
        return column, pa.string(), None
    # No declared type (a table a merge copied as it found it): SQLite may hold anything; kept as text.
    return sa.cast(column, sa.Text).label(column.name), pa.string(), None


def _arrow_table(table: str, rows: list, columns: list[sa.Column], converters, schema, pa):
    arrays = []
    for i, (column, (_, arrow_type, convert)) in enumerate(zip(columns, converters), start=1):
        values = [row[i] for row in rows]
        try:
            arrays.append(convert(values) if convert else pa.array(values, type=arrow_type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
            raise UnexportableValue(f"{table}.{column.name}", f"holds a value that is not {arrow_type} "
                                                                 f"(declared {column.type}): {e}") from None
    return pa.Table.from_arrays(arrays, schema=schema)
