"""AgentFarm's own simulation, unchanged, logging into an experiment database: one line.

In a script, before AgentFarm runs (before ``run_simulation`` is imported)::

    import farm_merge.agentfarm; farm_merge.agentfarm.install(experiment_id="exp_001")

or with no change to the script at all, from AgentFarm's checkout::

    EXPERIMENT_ID=exp_001 python -m farm_merge.agentfarm run_simulation.py --steps 100

AgentFarm's ``Environment``, given no ``db_factory`` (``run_simulation`` never gives one),
looks ``farm.database.utilities.setup_db`` up each time it is built and asks it for its
database.  :func:`install` puts :meth:`DatabaseFactory.setup_db
<farm_merge.logging.factory.DatabaseFactory.setup_db>` there, bound to the experiment
database, so that every simulation of the process logs into it through a
:class:`~farm_merge.logging.experiment.SimulationContext`.  It also wraps
``farm.core.simulation.run_simulation``: a configuration asking for AgentFarm's in-memory
database (its development and testing environments do) would have ``run_simulation``
replace farm-merge's database with it once the environment is built, so the wrapper turns
it off for the run and says so; its rows go to the experiment database instead.

The experiment comes from the arguments, else ``EXPERIMENT_ID`` and ``EXPERIMENT_DB_PATH``
(default ``experiments/<id>.db``, a path or a SQLAlchemy URL) and ``EXPERIMENT_DB_NULL_POOL``;
``USE_EXPERIMENT_DB`` is not needed.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import runpy
import sys
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Callable

from farm_merge.errors import AgentFarmNotInstalled, FarmMergeError
from farm_merge.logging.factory import DatabaseFactory, Destination, experiment_destination
from farm_merge.logging.rows import DataLoggingConfig

#: Where AgentFarm looks up what it calls: module, attribute.
SETUP_DB = ("farm.database.utilities", "setup_db")
RUN_SIMULATION = ("farm.core.simulation", "run_simulation")


@dataclass
class Installation:
    """farm-merge put into AgentFarm: where its simulations log, and how to take it out."""

    destination: Destination
    replaced: list[tuple[ModuleType, str, Any]] = field(default_factory=list)

    @property
    def experiment_id(self) -> str:
        return self.destination.experiment_id

    @property
    def db_path(self) -> str:
        return self.destination.db_path

    def uninstall(self) -> None:
        """Give AgentFarm back what it had."""
        global _active
        for module, name, original in reversed(self.replaced):
            setattr(module, name, original)
        self.replaced.clear()
        if _active is self:
            _active = None


_active: Installation | None = None


def install(experiment_id: str | None = None, db_path: str | os.PathLike | None = None, *,
            null_pool: bool | None = None, logging_config: DataLoggingConfig | None = None) -> Installation:
    """Make every AgentFarm simulation of this process log into the experiment database.

    ``experiment_id``, ``db_path`` and ``null_pool`` default to ``EXPERIMENT_ID``,
    ``EXPERIMENT_DB_PATH`` and ``EXPERIMENT_DB_NULL_POOL``.  Imports AgentFarm (which must
    be importable: installed, or its checkout on ``sys.path``); raises
    :class:`~farm_merge.errors.ConfigurationError` when no experiment is named.  Installing
    again replaces the earlier installation; :meth:`Installation.uninstall` undoes it.
    """
    global _active
    destination = experiment_destination(experiment_id, db_path, null_pool=null_pool)
    utilities, simulation = _agentfarm(SETUP_DB[0]), _agentfarm(RUN_SIMULATION[0])
    if _active is not None:
        _active.uninstall()
    installation = Installation(destination)
    setup_db = functools.partial(DatabaseFactory.setup_db, use_experiment_db=True,
                                 experiment_id=destination.experiment_id, experiment_db_path=destination.db_path,
                                 null_pool=destination.null_pool, logging_config=logging_config)
    _replace(installation, utilities, SETUP_DB[1], setup_db)
    _replace(installation, simulation, RUN_SIMULATION[1],
             _without_in_memory_db(getattr(simulation, RUN_SIMULATION[1]), destination))
    _active = installation
    return installation


def _agentfarm(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise AgentFarmNotInstalled("farm_merge.agentfarm.install()", e) from e


def _replace(installation: Installation, module: ModuleType, name: str, value: Any) -> None:
    installation.replaced.append((module, name, getattr(module, name)))
    setattr(module, name, value)


def _without_in_memory_db(run_simulation: Callable[..., Any], destination: Destination) -> Callable[..., Any]:
    """``run_simulation`` with AgentFarm's in-memory database turned off in its ``config``."""
    signature = inspect.signature(run_simulation)

    @functools.wraps(run_simulation)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            config = signature.bind_partial(*args, **kwargs).arguments.get("config")
        except TypeError:  # let AgentFarm report its own arguments
            config = None
        database = getattr(config, "database", None)
        if getattr(database, "use_in_memory_db", False):
            database.use_in_memory_db = False
            warnings.warn(f"farm-merge: AgentFarm's in-memory database (database.use_in_memory_db) is off for this "
                          f"run; its rows go to the experiment database {destination.db_path}", stacklevel=2)
        return run_simulation(*args, **kwargs)

    run.__farm_merge_wrapped__ = True
    return run


USAGE = ("usage: python -m farm_merge.agentfarm SCRIPT [ARGS...]\n"
         "       python -m farm_merge.agentfarm -m MODULE [ARGS...]\n\n"
         "Runs an AgentFarm script (or module) unchanged, its simulations logging into the experiment\n"
         "database named by EXPERIMENT_ID (and EXPERIMENT_DB_PATH, default experiments/<id>.db).\n"
         "Unless PYTHONHASHSEED is 0 it first restarts itself with PYTHONHASHSEED=0, as AgentFarm's\n"
         "run_simulation.py does (whose own restart would leave farm-merge out).")


def main(argv: list[str] | None = None) -> int:
    """``python -m farm_merge.agentfarm``: install, then run the script as ``python SCRIPT`` would."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if not args or args == ["-m"]:
        print(USAGE, file=sys.stderr)
        return 2
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", "farm_merge.agentfarm", *args])
    module = args[1] if args[0] == "-m" else None
    if module is None:
        script = args[0]
        sys.argv = [script, *args[1:]]
        sys.path[0] = os.path.dirname(os.path.abspath(script))  # as `python SCRIPT` has it
    else:
        sys.argv = [module, *args[2:]]
    try:
        installation = install()
        print(f"farm-merge: AgentFarm's simulations log into experiment {installation.experiment_id!r} "
              f"({installation.db_path})", file=sys.stderr)
        if module is None:
            runpy.run_path(script, run_name="__main__")
        else:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except FarmMergeError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
