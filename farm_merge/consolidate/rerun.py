"""What a re-run can skip without opening a source: content the ledger says is merged already.

Inspecting a source (its schema, a pass over every table to count rows per simulation, and
its sha256) is what a re-run of a large merge spends its time on, although most sources are
skipped as identical.  So before inspecting, the ledger is read once, and a source the
ledger knows by its path, at the size it had, is only hashed: the same sha256 means the
same bytes, hence the same simulations and rows, and it is skipped with the result the full
path gives (``already merged (identical content)``).  Anything else is inspected as before.

Content is what counts, as in :meth:`MergeTarget.decide_all`: the whole file is hashed, so a
changed file is always noticed, whatever its size and times say (a stat shortcut on size
and modification time would not be: they can be set back, and coarse clocks miss rewrites).

The shortcut must reach the decision a full inspection would, for every simulation of the
source, and it decides only when it can tell that it does: when every simulation the
source held (the ledger row records how many, ``source_simulations``) is still in the
ledger from this path, and under the id the full path would give it.  Without
``--id-template`` that id is the one the source records (``source_recorded_id``), or its
stem when it records none; with a template of ``{stem}``, ``{parent}`` and ``{relpath}``
only, the one id it makes.  A simulation since replaced by another source, or merged under
an id another template made, sends the source down the full path, which reports what
became of each.  Not with ``--replace``, a template that reads the content
(``{simulation_id}``, ``{era}``), or a source with a non-empty ``-wal`` or ``-journal``
beside it (its content is more than the file): those take the full path.
"""

from __future__ import annotations

import sqlite3
import string
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from farm_merge.consolidate.report import SKIPPED, SourceResult
from farm_merge.consolidate.sources import SourceFile
from farm_merge.storage import db, hashing, versions
from farm_merge.storage.db import Location
from farm_merge.storage.files import real_path

#: Template fields that depend on the path only, not on the content.
PATH_FIELDS = frozenset({"stem", "parent", "relpath"})


@dataclass(frozen=True)
class LedgerRow:
    simulation_id: str
    size: int
    sha256: str
    era: str | None
    source_simulations: int | None  # how many simulations its source held
    source_recorded_id: str | None  # the id its source records for it (None: none)


@dataclass(frozen=True)
class KnownSource:
    """A source skipped by the shortcut: its result, and the sha256 it was found to have."""

    result: SourceResult
    sha256: str


def ledger_by_path(into: Location) -> dict[str, list[LedgerRow]]:
    """The ledger's rows by source path (resolved, as the merge records it); empty when the
    target is new, not ours at head, or cannot be read (opening it for the merge says why)."""
    path = into.path
    query = ("SELECT source_path, simulation_id, source_size, source_sha256, era, source_simulations, "
             "source_recorded_id FROM merge_ledger")
    try:
        if path is not None:
            if not path.is_file() or path.stat().st_size == 0 or versions.probe_file(path):
                return {}
            con = db.connect_sqlite(path)
            try:
                found = con.execute(query).fetchall() if versions.describe(con).at_head else []
            finally:
                con.close()
        else:
            found = _server_ledger(into, query)
    except (sqlite3.Error, OSError, ImportError):
        return {}
    ledger: dict[str, list[LedgerRow]] = {}
    for source_path, *row in found:
        ledger.setdefault(source_path, []).append(LedgerRow(*row))
    return ledger


def _server_ledger(into: Location, query: str) -> list[tuple]:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        engine = into.engine()
    except Exception:  # a URL or driver problem: opening it for the merge says what
        return []
    try:
        with engine.connect() as conn:
            found = conn.exec_driver_sql(query).fetchall() if versions.describe(conn).at_head else []
            conn.rollback()
            return found
    except SQLAlchemyError:
        return []
    finally:
        engine.dispose()


def skip_known_content(files: list[SourceFile], ledger: dict[str, list[LedgerRow]], *, id_template: str | None,
                       replace: bool, threads: int) -> dict[SourceFile, KnownSource]:
    """The sources the ledger holds with exactly their present content, found by hashing
    them (on ``threads`` threads) instead of inspecting them: each one's skipped result."""
    fields = {f for _, f, _, _ in string.Formatter().parse(id_template or "") if f is not None}
    if replace or not ledger or not fields <= PATH_FIELDS:
        return {}
    candidates = []
    for f in files:
        rows = ledger.get(str(real_path(f.path)))
        if not rows or any(_has_content(Path(f"{f.path}{s}")) for s in ("-wal", "-journal")):
            continue
        try:
            size = f.path.stat().st_size
        except OSError:
            continue
        rows = _rows_an_inspection_would_name(f, rows, id_template)
        if rows and all(r.size == size for r in rows) and len({r.sha256 for r in rows}) == 1:
            candidates.append((f, rows, size))

    def same_content(candidate: tuple) -> bool:
        f, rows, _ = candidate
        try:
            return hashing.sha256_of(f.path) == rows[0].sha256
        except OSError:
            return False

    with ThreadPoolExecutor(max_workers=threads) as pool:  # hashlib releases the GIL
        same = list(pool.map(same_content, candidates))
    return {f: KnownSource(SourceResult(str(f.path), SKIPPED, "already merged (identical content)",
                                        sorted(r.simulation_id for r in rows), rows[0].era, size, rows=0),
                           rows[0].sha256)
            for (f, rows, size), ok in zip(candidates, same) if ok}


def _rows_an_inspection_would_name(f: SourceFile, rows: list[LedgerRow], id_template: str | None) -> list[LedgerRow]:
    """The ledger's rows for this path under the ids an inspection of the content they
    record would give now (see :func:`farm_merge.consolidate.plan.simulation_ids`), if they
    are every simulation that content held; else none (the full path decides)."""
    if id_template is not None:
        ours = id_template.format(stem=f.path.stem, parent=real_path(f.path).parent.name, relpath=f.relpath)
        named = [r for r in rows if r.simulation_id == ours]
    else:
        named = [r for r in rows if r.simulation_id == (
            r.source_recorded_id if (r.source_simulations or 0) > 1 else r.source_recorded_id or f.path.stem)]
    if not named or any(r.source_simulations != len(named) for r in named):
        return []  # some have since been replaced from another source: the full path reports them
    return named


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False
