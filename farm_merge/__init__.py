"""farm-merge: one experiment database instead of one SQLite file per simulation run."""

__version__ = "0.1.0"

from .query import ExperimentQueryTool  # noqa: E402  (needs __version__ defined first)

__all__ = ["ExperimentQueryTool", "__version__"]
