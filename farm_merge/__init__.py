"""farm-merge: one experiment database instead of one SQLite file per simulation run.

Merge per-run files with :func:`merge` (``farm-merge merge``); bring a database to the
current schema in place with :func:`upgrade`; log new runs straight into an experiment
database with :class:`DatabaseFactory`, :class:`ExperimentManager` or
:class:`ExperimentDatabase` (AgentFarm's own simulation: :mod:`farm_merge.agentfarm`); query
it with :class:`ExperimentQueryTool` or with the ORM models, which keep AgentFarm's names
(:class:`AgentStateModel`, :class:`Simulation`, ...).

The names below are imported when first used, so that ``import farm_merge`` (and every
``farm-merge`` command) loads only the parts it needs.  How the package is laid out:
``farm_merge.storage`` at the bottom, ``consolidate`` and ``logging`` on it, ``query`` and
``samples`` above, the command line on top (README, "How it is built").
"""

from __future__ import annotations

from farm_merge._lazy import exports
from farm_merge._version import __version__

#: Public name -> the module that defines it (a literal: the import-layer test reads it).
_PUBLIC = {
    "merge": "farm_merge.consolidate.engine",
    "MergeReport": "farm_merge.consolidate.report",
    "upgrade": "farm_merge.consolidate.inplace",
    "ExperimentDatabase": "farm_merge.logging.experiment",
    "ExperimentManager": "farm_merge.logging.experiment",
    "SimulationContext": "farm_merge.logging.experiment",
    "DatabaseFactory": "farm_merge.logging.factory",
    "DataLoggingConfig": "farm_merge.logging.rows",
    "ExperimentDataLogger": "farm_merge.logging.logger",
    "SimulationDatabase": "farm_merge.logging.runfile",
    "ExperimentQueryTool": "farm_merge.query.tool",
    "ActionModel": "farm_merge.storage.schema",
    "AgentModel": "farm_merge.storage.schema",
    "AgentStateModel": "farm_merge.storage.schema",
    "ExperimentModel": "farm_merge.storage.schema",
    "HealthIncident": "farm_merge.storage.schema",
    "InteractionModel": "farm_merge.storage.schema",
    "LearningExperienceModel": "farm_merge.storage.schema",
    "ReproductionEventModel": "farm_merge.storage.schema",
    "ResourceModel": "farm_merge.storage.schema",
    "Simulation": "farm_merge.storage.schema",
    "SimulationConfig": "farm_merge.storage.schema",
    "SimulationStepModel": "farm_merge.storage.schema",
    "SocialInteractionModel": "farm_merge.storage.schema",
}

__all__ = ["__version__", *_PUBLIC]
__getattr__, __dir__ = exports(__name__, _PUBLIC)
