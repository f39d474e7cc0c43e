"""farm-merge: one experiment database instead of one SQLite file per simulation run."""

__version__ = "0.1.0"
