"""Choosing where a simulation logs: the experiment database or its own run file.

``DatabaseFactory.create(...)`` is the one line a simulator changes (or, with the
environment variables, none at all, for a simulator that calls it or is given
``DatabaseFactory`` as its ``db_factory``)::

    USE_EXPERIMENT_DB=1 EXPERIMENT_ID=exp_001 EXPERIMENT_DB_PATH=experiments/exp_001.db \\
        python my_simulation.py

AgentFarm's ``run_simulation`` does neither: :mod:`farm_merge.agentfarm` puts the factory
into it (``python -m farm_merge.agentfarm run_simulation.py``).

Arguments win over the environment.  With the experiment database on, the simulation
logs into ``EXPERIMENT_DB_PATH`` (default ``experiments/<EXPERIMENT_ID>.db``, a path or a
SQLAlchemy URL) through a :class:`~farm_merge.logging.experiment.SimulationContext`; off, into a
per-run file in AgentFarm's layout (:class:`~farm_merge.logging.runfile.SimulationDatabase`) that
``farm-merge merge`` takes later.  Both have the same interface.  ``EXPERIMENT_DB_NULL_POOL=1``
makes the experiment database hold no connection between writes (jobs on a cluster).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from farm_merge.errors import ConfigurationError
from farm_merge.logging.experiment import ExperimentDatabase, SimulationContext, default_experiment_path
from farm_merge.logging.rows import DataLoggingConfig
from farm_merge.logging.runfile import SimulationDatabase

USE_EXPERIMENT_DB = "USE_EXPERIMENT_DB"
EXPERIMENT_ID = "EXPERIMENT_ID"
EXPERIMENT_DB_PATH = "EXPERIMENT_DB_PATH"
EXPERIMENT_DB_NULL_POOL = "EXPERIMENT_DB_NULL_POOL"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Destination:
    """Where a simulation will log, once arguments and environment are combined."""

    use_experiment_db: bool
    db_path: str
    experiment_id: str | None
    null_pool: bool = False  # connect for each write instead of keeping connections


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "")
    if raw.strip().lower() not in _TRUE | _FALSE:
        raise ConfigurationError(f"{name}={raw!r} is not one of 1/0, true/false, yes/no, on/off")
    return raw.strip().lower() in _TRUE


def resolve(simulation_id: str | None, use_experiment_db: bool | None = None, experiment_id: str | None = None,
            db_path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None,
            null_pool: bool | None = None) -> Destination:
    """Combine arguments with ``USE_EXPERIMENT_DB``, ``EXPERIMENT_ID``, ``EXPERIMENT_DB_PATH``
    and ``EXPERIMENT_DB_NULL_POOL``.

    Raises :class:`ConfigurationError` for settings that do not fit together.
    """
    env = os.environ if environ is None else environ
    if not isinstance(simulation_id, str) or not simulation_id:
        raise ConfigurationError(f"simulation_id must be a non-empty string, got {simulation_id!r}")
    if use_experiment_db is None:
        use_experiment_db = _flag(env, USE_EXPERIMENT_DB)
    if not use_experiment_db:
        return Destination(False, str(db_path or f"{simulation_id}.db"),
                           experiment_id or env.get(EXPERIMENT_ID) or None)
    return experiment_destination(experiment_id, db_path, environ=env, null_pool=null_pool)


def experiment_destination(experiment_id: str | None = None, db_path: str | os.PathLike | None = None, *,
                           environ: Mapping[str, str] | None = None, null_pool: bool | None = None) -> Destination:
    """The experiment database to log into: arguments, else ``EXPERIMENT_ID``,
    ``EXPERIMENT_DB_PATH`` (default ``experiments/<id>.db``) and ``EXPERIMENT_DB_NULL_POOL``."""
    env = os.environ if environ is None else environ
    experiment_id = experiment_id or env.get(EXPERIMENT_ID) or None
    if not experiment_id:
        raise ConfigurationError(f"the experiment database is on but no experiment is named: pass experiment_id=... "
                                 f"or set {EXPERIMENT_ID}")
    path = db_path or env.get(EXPERIMENT_DB_PATH) or default_experiment_path(experiment_id)
    return Destination(True, str(path), experiment_id, _flag(env, EXPERIMENT_DB_NULL_POOL) if null_pool is None
                       else null_pool)


def in_memory_requested(config: Mapping[str, Any] | None) -> bool:
    """Whether an AgentFarm configuration (``config.to_dict()``: ``database.use_in_memory_db``
    as a dotted key, or nested, or at the top as older releases had it) asks for its
    in-memory database."""
    if not isinstance(config, Mapping):
        return False
    nested = config.get("database")
    values = (config.get("database.use_in_memory_db"), nested.get("use_in_memory_db") if isinstance(nested, Mapping)
              else None, config.get("use_in_memory_db"))
    return any(v is True or (isinstance(v, str) and v.strip().lower() in _TRUE) for v in values)


#: Why a configuration asking for AgentFarm's in-memory database is refused.
IN_MEMORY_REFUSED = (
    "AgentFarm's configuration asks for its in-memory database (database.use_in_memory_db, on in its development "
    "and testing environments): run_simulation would put it in place of farm-merge's once the environment is "
    "built, and nothing would reach {where}; set config.database.use_in_memory_db = False, or start the script "
    "with python -m farm_merge.agentfarm (or call farm_merge.agentfarm.install() before importing "
    "run_simulation), which turns it off")


def parameters_of(config: Any) -> dict | None:
    """A simulation config as a dict: a mapping, a dataclass, or anything with ``to_dict()``."""
    if config is None:
        return None
    if isinstance(config, Mapping):
        return dict(config)
    if callable(getattr(config, "to_dict", None)):
        return dict(config.to_dict())
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    raise ConfigurationError(f"config must be a dict, a dataclass or have to_dict(), got {type(config).__name__}")


class DatabaseFactory:
    """Gives a simulator its database: experiment database or per-run file, same interface."""

    @staticmethod
    def create(config: Any = None, simulation_id: str | None = None, use_experiment_db: bool | None = None,
               experiment_id: str | None = None, db_path: str | os.PathLike | None = None, *,
               logging_config: DataLoggingConfig | None = None,
               null_pool: bool | None = None) -> SimulationContext | SimulationDatabase:
        """The database ``simulation_id`` logs into; ``config`` becomes its parameters.

        ``use_experiment_db``, ``experiment_id``, ``db_path`` and ``null_pool`` default to
        the environment variables ``USE_EXPERIMENT_DB``, ``EXPERIMENT_ID``,
        ``EXPERIMENT_DB_PATH`` and ``EXPERIMENT_DB_NULL_POOL``.  ``db_path`` is the
        experiment database's path or URL when it is on, the run file's path (default
        ``<simulation_id>.db``) when it is off.  ``null_pool`` keeps no connection open
        between writes (see :class:`~farm_merge.logging.experiment.ExperimentDatabase`).  Close the
        result when the simulation ends: that flushes the last rows and releases the database.
        """
        where = resolve(simulation_id, use_experiment_db, experiment_id, db_path, null_pool=null_pool)
        parameters = parameters_of(config)
        if not where.use_experiment_db:
            return SimulationDatabase(where.db_path, simulation_id, experiment_id=where.experiment_id,
                                      parameters=parameters, logging_config=logging_config)
        database = ExperimentDatabase(where.db_path, where.experiment_id, logging_config=logging_config,
                                      null_pool=where.null_pool)
        try:
            context = database.create_simulation_context(simulation_id, parameters)
        except BaseException:
            database.close()
            raise
        context.owns_database = True
        return context

    @staticmethod
    def setup_db(db_path: str | os.PathLike | None, simulation_id: str, config: Mapping[str, Any] | None = None, *,
                 use_experiment_db: bool | None = None, experiment_id: str | None = None,
                 experiment_db_path: str | os.PathLike | None = None, logging_config: DataLoggingConfig | None = None,
                 null_pool: bool | None = None) -> SimulationContext | SimulationDatabase | None:
        """AgentFarm's ``DatabaseFactoryProtocol``: ``Environment(db_factory=DatabaseFactory)``
        (the class or an instance, ``DatabaseFactory()``, alike).

        The keywords and otherwise the environment variables decide as in :meth:`create`
        (``experiment_db_path`` is :meth:`create`'s ``db_path``); ``db_path`` is the run file
        the simulator asked for, used when the experiment database is off (None: no
        database, as in AgentFarm).  A ``config`` that asks for AgentFarm's in-memory
        database is refused (:class:`ConfigurationError`) before anything is written:
        AgentFarm's ``run_simulation`` would swap it in and log nothing here.
        """
        where = resolve(simulation_id, use_experiment_db, experiment_id, experiment_db_path, null_pool=null_pool)
        if in_memory_requested(config):
            raise ConfigurationError(IN_MEMORY_REFUSED.format(where=where.db_path if where.use_experiment_db
                                                              else "a run file"))
        if not where.use_experiment_db:
            if db_path is None:
                return None
            if str(db_path) in ("", ":memory:"):
                raise ConfigurationError(f"db_path {str(db_path)!r} names no run file; farm-merge writes a file "
                                         "(turn the experiment database on to log into one)")
            return DatabaseFactory.create(config=config, simulation_id=simulation_id, use_experiment_db=False,
                                          db_path=Path(db_path), logging_config=logging_config)
        return DatabaseFactory.create(config=config, simulation_id=simulation_id, use_experiment_db=True,
                                      experiment_id=where.experiment_id, db_path=where.db_path,
                                      logging_config=logging_config, null_pool=where.null_pool)
