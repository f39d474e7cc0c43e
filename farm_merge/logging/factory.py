"""Choosing where a simulation logs: the experiment database or its own run file.

``DatabaseFactory.create(...)`` is the one line a simulator changes (or, with the
environment variables, none at all)::

    USE_EXPERIMENT_DB=1 EXPERIMENT_ID=exp_001 EXPERIMENT_DB_PATH=experiments/exp_001.db \\
        python run_simulation.py

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
    experiment_id = experiment_id or env.get(EXPERIMENT_ID) or None
    if not use_experiment_db:
        return Destination(False, str(db_path or f"{simulation_id}.db"), experiment_id)
    if not experiment_id:
        raise ConfigurationError(f"the experiment database is on but no experiment is named: pass experiment_id=... "
                                 f"or set {EXPERIMENT_ID}")
    path = db_path or env.get(EXPERIMENT_DB_PATH) or default_experiment_path(experiment_id)
    return Destination(True, str(path), experiment_id, _flag(env, EXPERIMENT_DB_NULL_POOL) if null_pool is None
                       else null_pool)


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

    def setup_db(self, db_path: str | os.PathLike | None, simulation_id: str,
                 config: Mapping[str, Any] | None = None) -> SimulationContext | SimulationDatabase | None:
        """AgentFarm's ``DatabaseFactoryProtocol``: ``Environment(db_factory=DatabaseFactory())``.

        The environment variables decide as in :meth:`create`; ``db_path`` is the run file
        the simulator asked for, used when the experiment database is off (None: no database,
        as in AgentFarm).
        """
        if not resolve(simulation_id).use_experiment_db:
            if db_path is None:
                return None
            return self.create(config=config, simulation_id=simulation_id, use_experiment_db=False,
                               db_path=Path(db_path))
        return self.create(config=config, simulation_id=simulation_id)
