"""farm-merge's exceptions: one root, a few subclasses that carry what went wrong.

The CLI turns any :class:`FarmMergeError` into a one-line message and exit status 1;
anything else is a bug and keeps its traceback.  Bad input from a caller is also a
``ValueError`` (:class:`ConfigurationError`, :class:`InvalidArgument`).  Messages name a
function's parameters as a Python caller writes them (``replace=True``,
``id_template='{stem}'``); the command line says its flags instead (``--replace``).
"""

from __future__ import annotations

import importlib
from types import ModuleType


class FarmMergeError(Exception):
    """Root of every error farm-merge reports to its user."""


class DatabaseNotFound(FarmMergeError):
    """No file behind the name: nothing there (or a symbolic link to nowhere), or
    ``reason`` says otherwise why not (a loop of symbolic links)."""

    def __init__(self, path: str, reason: str = "no such file"):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


class NotAnExperimentDatabase(FarmMergeError):
    """A database farm-merge did not create (or not a database at all).

    ``fix`` is the command that makes it one in place, when there is one (a legacy run
    file or an AgentFarm experiment file is upgraded in place); such a file is first
    pointed at a merge into a new experiment database, which leaves it as it is.
    """

    def __init__(self, target: str, looks_like: str, fix: str | None = None):
        self.target, self.looks_like, self.fix = target, looks_like, fix
        hint = (f"; merge it into a new experiment database, which leaves it as it is: "
                f"farm-merge merge {_quoted(target)} --into NEW.db (or make it one in place, rewriting it: {fix})"
                if fix else "")
        super().__init__(f"{target} is not a farm-merge experiment database ({looks_like}){hint}")


def _quoted(path: str) -> str:
    import shlex

    return shlex.quote(path)


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


class SourceActive(SourceError):
    """A source that a process may still be writing: skipped, not failed (merge it when it is done)."""


class TargetWriteError(FarmMergeError):
    """The target could not be written (disk full, a file size limit, an I/O error, read-only,
    not a regular file, locked by other processes for longer than the busy timeout).

    A merge stops there.  The transaction that failed was rolled back, so the target holds
    whole simulations only; ``merged`` sources went in before it stopped (None: it failed
    while being opened), and the same command completes the merge once the target can be
    written.  ``then`` says what to do about this cause (who may not write where, which
    process holds the lock, make room).
    """

    def __init__(self, target: str, reason: str, merged: int | None = None, then: str | None = None):
        self.target, self.reason, self.merged, self.then = target, reason, merged, then
        stopped = "" if merged is None else (
            f"; the merge stopped after {merged} source{'' if merged == 1 else 's'} and the target holds whole "
            "simulations only")
        hint = then or ("run the same command again once it can be written" if merged is not None else "")
        super().__init__(f"cannot write to {target}: {reason}{stopped}{'; ' + hint if hint else ''}")


class DatabaseUnreadable(FarmMergeError):
    """A database that cannot be read where it is (read-only storage that SQLite would need to write)."""

    def __init__(self, target: str, reason: str):
        self.target, self.reason = target, reason
        super().__init__(f"cannot read {target}: {reason}")


class SimulationNotFound(FarmMergeError):
    def __init__(self, simulation_id: str, target: str):
        self.simulation_id, self.target = simulation_id, target
        super().__init__(f"no simulation {simulation_id!r} in {target}")


class UpgradeInProgress(FarmMergeError):
    """Another process holds the upgrade lock of this database."""

    def __init__(self, target: str):
        self.target = target
        super().__init__(f"{target} is being upgraded by another process; try again when it is done")


class UpgradeFailed(FarmMergeError):
    """An upgrade stopped; its transaction was rolled back, so the database is as it was."""

    def __init__(self, target: str, reason: str, backup: str | None = None):
        self.target, self.reason, self.backup = target, reason, backup
        kept = f" (a backup is at {backup})" if backup else ""
        super().__init__(f"upgrade of {target} failed, the database is unchanged{kept}: {reason}")


class ExperimentNotFound(FarmMergeError):
    def __init__(self, experiment_id: str, target: str, known: list[str]):
        self.experiment_id, self.target, self.known = experiment_id, target, known
        held = f"; it holds {', '.join(repr(k) for k in known)}" if known else "; it holds no experiment"
        super().__init__(f"no experiment {experiment_id!r} in {target}{held}")


class UnknownName(FarmMergeError):
    """A table, column or parameter that the database does not hold; ``valid`` lists those it does."""

    def __init__(self, kind: str, name: str, valid: list[str]):
        self.kind, self.name, self.valid = kind, name, valid
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(valid) or 'none'}")


class UnknownMetric(FarmMergeError):
    """A metric that is not a numeric column of ``simulation_steps``."""

    def __init__(self, metric: str, valid: list[str]):
        self.metric, self.valid = metric, valid
        super().__init__(f"unknown metric {metric!r}; valid metrics: {', '.join(valid)}")


class StepNotFound(FarmMergeError):
    """``compare --at STEP`` where no simulation has the step; ``steps`` says, per simulation,
    which it has (``"steps 0-39"``, ``"no steps"``)."""

    def __init__(self, step: int, steps: dict[str, str]):
        self.step, self.steps = step, steps
        groups: dict[str, list[str]] = {}
        for simulation_id, described in sorted(steps.items()):
            groups.setdefault(described, []).append(simulation_id)
        # Many simulations of one length are counted, not listed: the line stays one line.
        parts = sorted((", ".join(ids) if len(ids) <= 3 else f"{len(ids)} simulations", described)
                       for described, ids in groups.items())
        super().__init__(f"no simulation has step {step}; " + "; ".join(f"{who}: {what}" for who, what in parts))


class MissingDependency(FarmMergeError):
    """An optional extra is needed for what was asked."""

    def __init__(self, package: str, extra: str, purpose: str):
        self.package, self.extra = package, extra
        super().__init__(f"{purpose} needs {package}, which is not installed: pip install 'farm-merge[{extra}]'")


def optional_import(module: str, extra: str, purpose: str, package: str | None = None) -> ModuleType:
    """Import ``module`` of an optional extra, or raise :class:`MissingDependency` naming
    ``pip install 'farm-merge[extra]'`` (``package``: what to call it, default the top
    module's name)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependency(package or module.partition(".")[0], extra, purpose) from e


class OutputExists(FarmMergeError):
    """A file the command would write is already there."""

    def __init__(self, path: str, others: int = 0):
        self.path, self.others = path, others
        more = f" (and {others} more)" if others else ""
        super().__init__(f"{path} already exists{more}; pass overwrite=True to replace")


class UnpartitionableId(FarmMergeError):
    """A simulation id that no Parquet partition folder name gives back exactly (``reason``
    says why): readers take ``simulation_id`` from that name alone, so it is not exported so."""

    def __init__(self, simulation_id: str, reason: str):
        self.simulation_id, self.reason = simulation_id, reason
        super().__init__(f"simulation id {simulation_id!r} cannot name a Parquet partition folder: {reason}; "
                         "readers take simulation_id from that folder's name, so export it with format='sqlite' "
                         "or format='csv', which keep the id in the data")


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


class InvalidArgument(ConfigurationError):
    """A value passed for ``parameter`` that cannot be used, and why."""

    def __init__(self, parameter: str, value: object, reason: str):
        self.parameter, self.value, self.reason = parameter, value, reason
        super().__init__(f"{parameter}={value!r}: {reason}")


class UnsupportedDatabase(ConfigurationError):
    """A database URL farm-merge cannot parse or does not work on (SQLite files and
    PostgreSQL are what it knows)."""

    def __init__(self, target: str, reason: str):
        self.target, self.reason = target, reason
        super().__init__(f"{target}: {reason}")


class NothingToWrite(FarmMergeError):
    """An export or split of an experiment (or a scope of it) that holds no simulations."""

    def __init__(self, target: str, action: str):
        self.target, self.action = target, action
        super().__init__(f"{target} holds no simulations to {action}")


class RowRejected(FarmMergeError):
    """A flush the database refused because of one row it was given; every buffered row is
    still buffered (the flush wrote nothing).  ``table`` and ``index`` say which buffered row
    (``row``, as buffered; ``table`` is ``"deaths"`` for an agent's death time);
    :meth:`~farm_merge.logging.logger.ExperimentDataLogger.discard_rejected` drops it."""

    def __init__(self, simulation_id: str, table: str | None, index: int | None, row: object,
                 cause: BaseException, reason: str, pending: int):
        self.simulation_id, self.table, self.index, self.row, self.cause = simulation_id, table, index, row, cause
        where = (f"row {index} of the buffered {table} {row!r}" if table is not None
                 else "a row it could not find again")
        super().__init__(f"the database refused {where} of simulation {simulation_id!r} ({reason}); "
                         f"all {pending} buffered rows are kept: fix or drop that row "
                         "(logger.discard_rejected(error)) and flush again")


class OutputRefused(FarmMergeError):
    """An output path farm-merge will not write: a file where a folder must be, a symbolic
    link inside the output folder, the experiment database itself."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path} {reason}")


class OutputWriteFailed(FarmMergeError):
    """An output could not be written (no space, a name too long, no permission): nothing of it is left."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"cannot write {path}: {reason}")


class VerificationFailed(FarmMergeError):
    """What was written does not match what was read (the output is not kept)."""

    def __init__(self, what: str, reason: str):
        self.what, self.reason = what, reason
        super().__init__(f"{what}: {reason}")


class UnexportableValue(FarmMergeError):
    """A value an export format cannot hold as its column's type (``column``: ``table.column``)."""

    def __init__(self, column: str, reason: str):
        self.column, self.reason = column, reason
        super().__init__(f"{column} {reason}")


class CannotListen(FarmMergeError):
    """``farm-merge serve`` cannot listen where asked; ``in_use``: another process has the port."""

    def __init__(self, host: str, port: int | None, reason: str, *, in_use: bool = False):
        self.host, self.port, self.reason, self.in_use = host, port, reason, in_use
        where = host if port is None else f"{host}:{port}"
        super().__init__(f"port {port} on {host} is already in use; choose another port" if in_use
                         else f"cannot listen on {where}: {reason}")


class DatabaseUnavailable(FarmMergeError):
    """A server database that cannot be reached (server down, no such database, refused login)."""

    def __init__(self, target: str, reason: str):
        self.target, self.reason = target, reason
        super().__init__(f"cannot connect to {target}: {reason}")


class ConnectionLost(FarmMergeError):
    """The connection to a server database broke part-way (the server restarted, an
    administrator ended the session, the network failed).  Whatever was committed before
    is kept, the transaction that was open is gone; ``then`` says what that leaves and that
    the same command completes the work."""

    def __init__(self, target: str, doing: str, reason: str, then: str):
        self.target, self.doing, self.reason, self.then = target, doing, reason, then
        super().__init__(f"lost the connection to {target} while {doing} ({reason}); {then}")


class OutOfScope(FarmMergeError):
    """A session handed to a simulator's code tried to read or change rows that are not its
    simulation's (see :mod:`farm_merge.logging.session`)."""


class AgentFarmNotInstalled(FarmMergeError):
    """Something that uses AgentFarm's own code (its repositories, its simulation) was asked
    for where AgentFarm cannot be imported."""

    def __init__(self, purpose: str, error: ImportError):
        self.purpose = purpose
        super().__init__(f"{purpose} needs AgentFarm, which cannot be imported here ({error}); install it, or run "
                         "from its checkout (its folder on sys.path)")
