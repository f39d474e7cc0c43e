"""The catalogue rows every writer shares: an experiment's record, and the time it is stamped with.

Merges and loggers both record the experiment they write into; processes opening one
database at once may both try, so the record is made under the catalogue lock
(:func:`catalog_lock`) and the second finds the first's.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Connection, insert, select, update

from farm_merge.storage.schema import ExperimentModel, Simulation

EXPERIMENTS = ExperimentModel.__table__
SIMULATIONS = Simulation.__table__


def now() -> datetime:
    """The current UTC time, naive: how every time in an experiment database is stored."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def parse_time(value) -> datetime | None:
    """A stored time (a datetime, or ISO text as a run file wrote it); None if it is not one."""
    if isinstance(value, datetime) or value is None:
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


#: Key of the PostgreSQL advisory lock that serialises creating the schema and catalogue rows.
CATALOG_LOCK_KEY = 0x6661726D  # "farm"


def catalog_lock(conn: Connection) -> None:
    """Serialise, for the rest of the transaction, check-then-create work that processes
    opening one database at once may race on: building the schema of a new database,
    recording an experiment or a simulation.

    SQLite's ``BEGIN IMMEDIATE`` already does; on PostgreSQL a transaction-scoped advisory
    lock does, and the second process then finds what the first created (DDL is
    transactional too).
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({CATALOG_LOCK_KEY})")


def record_experiment(conn: Connection, experiment_id: str, name: str | None = None,
                      description: str | None = None) -> None:
    """Record the experiment (status ``active``) unless it is recorded; a name or
    description given replaces the recorded one.  Runs in the caller's transaction."""
    catalog_lock(conn)  # another process may be recording it too: one does, the other finds it
    known = conn.execute(select(EXPERIMENTS.c.experiment_id).where(EXPERIMENTS.c.experiment_id == experiment_id)).first()
    if known is None:
        stamp = now()
        conn.execute(insert(EXPERIMENTS).values(
            experiment_id=experiment_id, name=name or experiment_id, description=description,
            creation_date=stamp, last_updated=stamp, status="active"))
    elif name or description:
        conn.execute(update(EXPERIMENTS).where(EXPERIMENTS.c.experiment_id == experiment_id)
                     .values(**{k: v for k, v in (("name", name), ("description", description)) if v}))


def experiment_status(conn: Connection, experiment_id: str) -> str | None:
    """The status an experiment's simulations give it: ``running`` while any runs, else
    ``failed`` if any failed, else ``completed``; None while it has none.  The one rule every
    writer (a merge, a logger, the manager) applies through :func:`touch_experiment`."""
    statuses = set(conn.scalars(select(SIMULATIONS.c.status).where(SIMULATIONS.c.experiment_id == experiment_id)
                                .distinct()))
    if not statuses:
        return None
    return "running" if "running" in statuses else "failed" if "failed" in statuses else "completed"


def touch_experiment(conn: Connection, experiment_id: str, **values) -> None:
    """Stamp the experiment's ``last_updated`` (and set ``values``) in the caller's
    transaction; unless ``values`` sets it, its status becomes what its simulations give it
    (:func:`experiment_status`)."""
    if "status" not in values:
        status = experiment_status(conn, experiment_id)
        if status is not None:
            values["status"] = status
    conn.execute(update(EXPERIMENTS).where(EXPERIMENTS.c.experiment_id == experiment_id)
                 .values(last_updated=now(), **values))
