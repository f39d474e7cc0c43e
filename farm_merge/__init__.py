"""farm-merge: one experiment database instead of one SQLite file per simulation run.

Merge per-run files with :func:`farm_merge.consolidate.merge` (``farm-merge merge``); log
new runs straight into an experiment database with :class:`DatabaseFactory`,
:class:`ExperimentManager` or :class:`ExperimentDatabase`; query it with the ORM models,
which keep AgentFarm's names (:class:`AgentStateModel`, :class:`Simulation`, ...).
"""

__version__ = "0.1.0"

from .query import ExperimentQueryTool  # noqa: E402  (needs __version__ defined first)

from .experiment import ExperimentDatabase, ExperimentManager, SimulationContext  # noqa: E402
from .factory import DatabaseFactory  # noqa: E402
from .logger import DataLoggingConfig, ExperimentDataLogger  # noqa: E402
from .runfile import SimulationDatabase  # noqa: E402
from .schema import (  # noqa: E402
    ActionModel,
    AgentModel,
    AgentStateModel,
    ExperimentModel,
    HealthIncident,
    InteractionModel,
    LearningExperienceModel,
    ReproductionEventModel,
    ResourceModel,
    Simulation,
    SimulationConfig,
    SimulationStepModel,
    SocialInteractionModel,
)

__all__ = [
    "ExperimentQueryTool", "__version__", "ActionModel", "AgentModel", "AgentStateModel", "DataLoggingConfig", "DatabaseFactory", "ExperimentDataLogger",
    "ExperimentDatabase", "ExperimentManager", "ExperimentModel", "HealthIncident", "InteractionModel",
    "LearningExperienceModel", "ReproductionEventModel", "ResourceModel", "Simulation", "SimulationConfig",
    "SimulationContext", "SimulationDatabase", "SimulationStepModel", "SocialInteractionModel",
]
