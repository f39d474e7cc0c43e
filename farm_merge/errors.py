"""farm-merge's exceptions: one root, a few subclasses that carry what went wrong.

The CLI turns any :class:`FarmMergeError` into a one-line message and exit status 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class FarmMergeError(Exception):
    """Root of every error farm-merge reports to its user."""


class DatabaseNotFound(FarmMergeError):
    def __init__(self, path: str):
        self.path = path
        super().__init__(f"{path}: no such file")


class NotAnExperimentDatabase(FarmMergeError):
    """A database farm-merge did not create (or not a database at all)."""

    def __init__(self, target: str, looks_like: str):
        self.target, self.looks_like = target, looks_like
        super().__init__(f"{target} is not a farm-merge experiment database ({looks_like})")


class SchemaOutOfDate(FarmMergeError):
    """The database is at an older schema revision than this release."""

    def __init__(self, target: str, current: str | None, head: str):
        self.target, self.current, self.head = target, current, head
        super().__init__(
            f"{target} is at schema revision {current}, this release needs {head}; "
            f"run: farm-merge upgrade {target}"
        )


class SchemaTooNew(FarmMergeError):
    """The database was written by a newer farm-merge."""

    def __init__(self, target: str, current: str, head: str):
        self.target, self.current, self.head = target, current, head
        super().__init__(
            f"{target} is at schema revision {current}, newer than this release knows ({head}); "
            f"upgrade farm-merge: pip install -U farm-merge"
        )


class SourceError(FarmMergeError):
    """A source file cannot be merged; ``reason`` is the one line the report shows."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


class SimulationNotFound(FarmMergeError):
    def __init__(self, simulation_id: str, target: str):
        self.simulation_id, self.target = simulation_id, target
        super().__init__(f"no simulation {simulation_id!r} in {target}")


class SimulationExists(FarmMergeError):
    """A simulation id that is already in the database was asked to log again."""

    def __init__(self, simulation_id: str, target: str, status: str | None):
        self.simulation_id, self.target, self.status = simulation_id, target, status
        super().__init__(f"simulation {simulation_id!r} is already in {target} (status {status or 'unknown'}); "
                         "give the new run another simulation id")


class RunFileExists(FarmMergeError):
    """A per-run file is written once; the path given already holds one."""

    def __init__(self, path: str):
        self.path = path
        super().__init__(f"{path} already exists; a run file is written once (remove it or choose another path)")


class ConfigurationError(FarmMergeError, ValueError):
    """Settings that do not fit together (arguments or environment variables)."""
