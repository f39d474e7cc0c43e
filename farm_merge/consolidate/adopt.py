"""Bringing a database that farm-merge did not create under its revision history.

Two kinds are recognised (:func:`farm_merge.storage.versions.describe`):

* **A legacy AgentFarm run file** of any era (:mod:`farm_merge.storage.legacy`): one simulation,
  single-column keys, ``simulation_id`` absent (before 2025-03) or partly NULL.  Its tables
  are rebuilt in the per-run layout of ``0001_per_run_layout`` (the union of every era's
  columns, AgentFarm's index names) and the file is stamped there; ``0002`` then gives
  every row the simulation's id and the composite keys.
* **An experiment file written by AgentFarm's ExperimentDatabase**: several simulations
  told apart by ``simulation_id``, but single-column keys and no version table.  The
  per-run layout holds one simulation (``simulation_steps`` is keyed by ``step_number``
  alone), so its tables are rebuilt in the layout of ``0002_simulation_keys`` and the file
  is stamped there.  Rows AgentFarm wrote without an id (its death incidents) go to the
  one simulation whose rows name their agent; the rest (its experiment-level
  configuration) to a simulation of their own.  Where two simulations collided on a
  single-column key, the file kept one row; that row is kept, and the collision reported.

The layouts are not written out here: they are read off the migrations themselves, run
once on an in-memory database, so an adopted file is exactly what its revision describes.
Everything happens on the caller's connection, inside the caller's transaction.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field

from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, create_engine, insert, update

from farm_merge.consolidate import records
from farm_merge.consolidate.sources import AGENT_TABLES, RESERVED_TABLES, SourceInfo
from farm_merge.storage import columns, migrations, sqltext, versions
from farm_merge.storage.legacy import DATA_TABLE_KEYS
from farm_merge.storage.schema import Simulation

PER_RUN_REVISION = versions.PER_RUN_REVISION
SEVERAL_SIMULATIONS_REVISION = "0002_simulation_keys"

#: Columns that name an agent of the row's own simulation.
AGENT_REFERENCES = {"agent_states": "agent_id", "agent_actions": "agent_id", "health_incidents": "agent_id",
                    "learning_experiences": "agent_id"}


@dataclass(frozen=True)
class TableLayout:
    name: str
    create_sql: str
    index_sql: tuple[str, ...]
    columns: tuple[str, ...]


@functools.lru_cache(maxsize=None)
def layout(revision: str) -> dict[str, TableLayout]:
    """Every table of the schema at ``revision``, as its migrations create it on SQLite.

    The scripts run on an in-memory database through Alembic's operations (not through
    ``alembic.command``, which must not nest inside a running ``env.py``).
    """
    engine = create_engine("sqlite://")
    try:
        with engine.connect() as conn:
            with conn.begin():
                context = MigrationContext.configure(conn)
                scripts = migrations.script_directory()
                with Operations.context(context):
                    for script in reversed(list(scripts.walk_revisions("base", revision))):
                        script.module.upgrade()
            objects = conn.exec_driver_sql(
                "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid").all()
            tables = {}
            for kind, name, _, sql in objects:
                if kind == "table" and name != versions.VERSION_TABLE:
                    indexes = tuple(s for k, _, t, s in objects if k == "index" and t == name)
                    tables[name] = TableLayout(name, sql, indexes, tuple(columns.column_names(conn, name)))
            return tables
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Collision:
    """Rows of ``simulation_id`` that name agents whose only ``agents`` row is another simulation's."""

    simulation_id: str
    agents: int
    recorded_under: tuple[str, ...]

    def __str__(self) -> str:
        return (f"simulation {self.simulation_id!r} refers to {self.agents} agent id(s) whose only agents row "
                f"belongs to {', '.join(map(repr, self.recorded_under))} (the file's single-column key kept one "
                "row per id; it is kept as it is)")


@dataclass
class Adoption:
    """What adopting one file does; decided before anything is written."""

    kind: str  # "legacy-run" or "agentfarm-experiment"
    era: str | None
    revision: str  # the revision the file is stamped at
    simulation_id: str  # one simulation: the id of every row; several: the id of rows that have none
    recorded_id: str | None  # one simulation: the id the file itself records
    simulation_ids: list[str]
    orphans: dict[str, int]  # several simulations: rows without simulation_id no agent attributes, per table
    expected: dict[str, dict[str, int]]  # rows per table and simulation once upgraded
    added_columns: list[str] = field(default_factory=list)
    collisions: list[Collision] = field(default_factory=list)
    attributed: dict[str, int] = field(default_factory=dict)  # rows without an id given to their agent's simulation
    agent_owners: dict[str, str] = field(default_factory=dict)  # agent id -> its simulation, for those rows

    @property
    def several(self) -> bool:
        return self.revision != PER_RUN_REVISION

    def to_dict(self) -> dict:
        return {
            "kind": self.kind, "era": self.era, "stamped_at": self.revision, "simulation_ids": self.simulation_ids,
            "recorded_id": self.recorded_id, "orphans": self.orphans,
            "orphans_simulation_id": self.simulation_id if self.orphans else None, "attributed": self.attributed,
            "added_columns": self.added_columns, "collisions": [str(c) for c in self.collisions],
        }


def plan(info: SourceInfo, simulation_id: str | None = None) -> Adoption:
    """Decide ids and layout for a foreign file.

    One simulation: its rows get ``simulation_id``, else the id the file records, else its
    file stem (as a merge would name it).  Several: each keeps its own id; a row without one
    goes to the simulation that alone has its agent (as a merge decides it,
    :meth:`SourceInfo.rows_of`), the others get ``simulation_id``, else the file stem.
    """
    recorded = info.recorded_simulation_ids
    era = info.era.label if info.era else None
    kind = "agentfarm-experiment" if len(recorded) > 1 or info.experiments else "legacy-run"
    if len(recorded) <= 1:
        own = recorded[0] if recorded else None
        chosen = simulation_id or own or info.path.stem
        expected = {t.name: {chosen: t.rows} for t in info.tables.values()}
        return Adoption(kind, era, PER_RUN_REVISION, chosen, own, [chosen], {}, expected)
    orphan_id = simulation_id or info.path.stem
    orphans, attributed, expected = {}, {}, {}
    for table in info.tables.values():
        counts: dict[str, int] = {}
        for sim, n in [*((s, n) for s, n in table.counts.items() if s is not None), *table.attributed.items()]:
            counts[sim] = counts.get(sim, 0) + n
        left = table.counts.get(None, 0) - sum(table.attributed.values())
        if left:
            counts[orphan_id] = counts.get(orphan_id, 0) + left
            orphans[table.name] = left
        if table.attributed:
            attributed[table.name] = sum(table.attributed.values())
        expected[table.name] = counts
    ids = sorted(set(recorded) | ({orphan_id} if orphans else set()))
    return Adoption(kind, era, SEVERAL_SIMULATIONS_REVISION, orphan_id, None, ids, orphans, expected,
                    attributed=attributed, agent_owners=dict(info.agent_owners))


def adopt(conn: Connection, info: SourceInfo, adoption: Adoption, *, indexes: bool = True) -> None:
    """Rebuild the file's tables in the layout of ``adoption.revision`` and stamp it there.

    Rows are copied by column name: columns a table lacks are NULL, columns the layout
    lacks are added (and reported), unknown tables get a ``simulation_id`` column.
    ``indexes=False`` leaves out the layout's secondary indexes, for an upgrade that goes
    on past this revision in the same transaction (0002 drops the per-run indexes first
    thing; building them costs an eighth of an upgrade).
    """
    if adoption.several:
        adoption.collisions = find_collisions(conn)
    target = layout(adoption.revision)
    existing = set(columns.table_names(conn))
    # References from views or other tables keep naming the rebuilt table, not the renamed old one.
    conn.exec_driver_sql("PRAGMA legacy_alter_table = ON")
    try:
        for table in target.values():
            _rebuild(conn, table, table.name in existing, adoption, indexes)
    finally:
        conn.exec_driver_sql("PRAGMA legacy_alter_table = OFF")
    for name in sorted(existing - set(target) - RESERVED_TABLES):
        _tag_unknown_table(conn, name, adoption)
    if not adoption.several and adoption.recorded_id not in (None, adoption.simulation_id):
        for name in DATA_TABLE_KEYS:  # the caller named the simulation: its recorded id gives way
            conn.exec_driver_sql(f"UPDATE {sqltext.quote(name)} SET simulation_id = ? WHERE simulation_id IS NOT NULL",
                                 (adoption.simulation_id,))
    context = MigrationContext.configure(conn, opts={"version_table": versions.VERSION_TABLE})
    context.stamp(migrations.script_directory(), adoption.revision)


def _rebuild(conn: Connection, table: TableLayout, present: bool, adoption: Adoption, indexes: bool) -> None:
    name = sqltext.quote(table.name)
    if not present:
        conn.exec_driver_sql(table.create_sql)
    else:
        old = sqltext.quote(f"_farm_merge_old_{table.name}")
        conn.exec_driver_sql(f"ALTER TABLE {name} RENAME TO {old}")
        conn.exec_driver_sql(table.create_sql)
        old_columns = {c.name: c.type for c in columns.columns_of(conn, f"_farm_merge_old_{table.name}")}
        added = columns.add_missing_columns(conn, table.name, old_columns, present=table.columns)
        adoption.added_columns += [f"{table.name}.{column}" for column in added]
        # One simulation: the file's simulations row becomes the catalogue row written after
        # the upgrade (records.simulation_values), as a merge would write it.
        if table.name != "simulations" or adoption.several:
            targets, sources, params = [], [], []
            for column in old_columns:
                targets.append(sqltext.quote(column))
                if column == "simulation_id" and adoption.several and table.name in DATA_TABLE_KEYS:
                    if adoption.agent_owners and table.name in AGENT_TABLES and "agent_id" in old_columns:
                        # the row's agent's simulation (see plan), else the simulation of rows without one
                        sources.append("coalesce(simulation_id, "
                                       "(SELECT value FROM json_each(?) WHERE key = agent_id), ?)")
                        params += [json.dumps(adoption.agent_owners), adoption.simulation_id]
                    else:
                        sources.append("coalesce(simulation_id, ?)")
                        params.append(adoption.simulation_id)
                else:
                    sources.append(sqltext.quote(column))
            if adoption.several and table.name in DATA_TABLE_KEYS and "simulation_id" not in old_columns:
                targets.append("simulation_id")
                sources.append("?")
                params.append(adoption.simulation_id)
            conn.exec_driver_sql(
                f"INSERT INTO {name} ({', '.join(targets)}) SELECT {', '.join(sources)} FROM {old}", tuple(params))
        conn.exec_driver_sql(f"DROP TABLE {old}")
    for index_sql in table.index_sql if indexes else ():
        conn.exec_driver_sql(index_sql)


def _tag_unknown_table(conn: Connection, name: str, adoption: Adoption) -> None:
    """An unknown table is kept, with every row tagged by its simulation, as a merge copies it."""
    q = sqltext.quote(name)
    if columns.add_missing_columns(conn, name, {"simulation_id": "TEXT"}):
        adoption.added_columns.append(f"{name}.simulation_id")
    if adoption.several:
        conn.exec_driver_sql(f"UPDATE {q} SET simulation_id = ? WHERE simulation_id IS NULL", (adoption.simulation_id,))
    else:
        conn.exec_driver_sql(f"UPDATE {q} SET simulation_id = ?", (adoption.simulation_id,))
    conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {sqltext.quote(f'ix_{name}_simulation_id')} ON {q} (simulation_id)")


def find_collisions(conn: Connection) -> list[Collision]:
    """Simulations whose rows name agents that only another simulation's ``agents`` row holds.

    Run on the file as AgentFarm wrote it, where ``agents.agent_id`` alone is the key.
    """
    tables = set(columns.table_names(conn))
    if "agents" not in tables:
        return []
    selects = [f"SELECT simulation_id, {column} AS agent_id FROM {table}"
               for table, column in AGENT_REFERENCES.items() if table in tables]
    if not selects:
        return []
    rows = conn.exec_driver_sql(f"""
        SELECT r.simulation_id, count(DISTINCT r.agent_id), group_concat(DISTINCT a.simulation_id)
        FROM ({' UNION '.join(selects)}) AS r
        JOIN agents AS a ON a.agent_id = r.agent_id AND a.simulation_id IS NOT r.simulation_id
        WHERE r.simulation_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM agents AS b WHERE b.agent_id = r.agent_id AND b.simulation_id IS r.simulation_id)
        GROUP BY r.simulation_id ORDER BY r.simulation_id""").all()
    return [Collision(str(sim), n, tuple(sorted(str(owners).split(",")))) for sim, n, owners in rows]


def write_catalog(conn: Connection, info: SourceInfo, adoption: Adoption) -> None:
    """One ``simulations`` row per simulation, as a merge of the file would write it.

    One simulation: built from the file's own record and configuration.  Several: the
    file's rows are kept, gaining the era and recorded id our schema adds; a simulation
    without a row (rows without an id, a run that never recorded itself) gets one.
    Written after the upgrade, so that it has every column the revision reached.
    """
    table = Simulation.__table__
    present_columns = set(columns.column_names(conn, "simulations"))
    present = {str(s) for (s,) in conn.exec_driver_sql("SELECT simulation_id FROM simulations")}
    experiments = [str(e["experiment_id"]) for e in info.experiments if e.get("experiment_id") is not None]
    recorded = set(info.recorded_simulation_ids)
    for sim in adoption.simulation_ids:
        # several: the id rows without one were given is not one the file recorded
        theirs = adoption.recorded_id if not adoption.several else (sim if sim in recorded else None)
        record = records.source_record(info, theirs)
        experiment_id = record.get("experiment_id") or (experiments[0] if len(experiments) == 1 else None)
        values = records.simulation_values(info, theirs, sim, experiment_id=experiment_id)
        if sim in present:
            keep = {k: v for k, v in values.items() if k in ("era", "source_simulation_id") and k in present_columns}
            if keep:
                conn.execute(update(table).where(table.c.simulation_id == sim).values(**keep))
        else:
            conn.execute(insert(table).values(**{k: v for k, v in values.items() if k in present_columns}))
