"""Finding source files and looking at one before it is merged.

A source is only ever opened read-only, through a ``file:`` URI with ``mode=ro``; a
file that no process has open is also opened ``immutable=1`` so that SQLite creates no
``-wal``/``-shm`` files beside it (sources on read-only storage merge too, and nothing
in the source folder changes).  Every problem becomes a :class:`SourceError` whose
reason is the one line the merge report shows.
"""

from __future__ import annotations

import glob
import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from farm_merge.errors import SourceActive, SourceError
from farm_merge.storage import db, failures, hashing, sqltext
from farm_merge.storage import files as fileids
from farm_merge.storage.legacy import CATALOG_TABLES, DATA_TABLE_KEYS, EraMatch, detect_era

SQLITE_MAGIC = b"SQLite format 3\x00"
#: Tables of ours that a source must never write into.
RESERVED_TABLES = frozenset({"merge_ledger", "farm_merge_version", "alembic_version"})
#: Tables whose ``agent_id`` names the agent a row is about (an agent of the row's simulation).
AGENT_TABLES = ("agents", "agent_states", "agent_actions", "health_incidents", "learning_experiences")


@dataclass(frozen=True)
class SourceFile:
    """A file named by the user, with the folder its glob started from (for ``{relpath}``)."""

    path: Path
    base: Path

    @property
    def relpath(self) -> str:
        try:
            rel = self.path.relative_to(self.base)
        except ValueError:
            rel = Path(self.path.name)
        return rel.with_suffix("").as_posix()


@dataclass
class SourceTable:
    name: str
    columns: dict[str, str]  # name -> declared type
    primary_key: tuple[str, ...]
    counts: dict[str | None, int]  # rows per recorded simulation_id (None: no id / NULL)
    attributed: dict[str, int] = field(default_factory=dict)  # rows without an id whose agent is this simulation's

    @property
    def has_simulation_id(self) -> bool:
        return "simulation_id" in self.columns

    @property
    def rows(self) -> int:
        return sum(self.counts.values())


@dataclass
class SourceInfo:
    file: SourceFile
    size: int
    sha256: str
    uri: str
    era: EraMatch | None
    tables: dict[str, SourceTable]  # data tables and unknown tables, in merge order
    simulations: dict[str, dict]  # rows of the legacy ``simulations`` table, by id (as text)
    experiments: list[dict]  # rows of a source ``experiments`` table
    config_json: str | None  # newest ``simulation_config`` row's JSON
    ignored: list[str] = field(default_factory=list)  # views, triggers, reserved tables
    configs: dict[str | None, str] = field(default_factory=dict)  # newest config JSON per recorded simulation id
    revision: str | None = None  # the schema revision of a farm-merge experiment database used as a source
    active: bool = False  # a non-empty -wal beside it (merged with include_active): a writer may still commit
    #: Several simulations: agent id -> the one simulation whose rows name it, for the agents of
    #: rows without a simulation_id (AgentFarm's update_agent_death wrote its incidents so).
    agent_owners: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def era_label(self) -> str | None:
        """The era to report: a legacy era, or what a farm-merge experiment database is at."""
        if self.revision is not None:
            return f"farm-merge {self.revision}"
        return self.era.label if self.era else None

    @property
    def recorded_simulation_ids(self) -> list[str]:
        """The simulation ids the file itself records, in its rows and its simulations table."""
        ids = set(self.simulations) if any(t.has_simulation_id for t in self.tables.values()) else set()
        for table in self.tables.values():
            ids.update(str(k) for k in table.counts if k is not None)
        return sorted(ids)

    def orphan_rows(self) -> dict[str, int]:
        """Rows without a simulation_id, per table, in tables that have the column, that no
        agent ties to one simulation (:attr:`agent_owners`)."""
        found = {t.name: t.counts.get(None, 0) - sum(t.attributed.values())
                 for t in self.tables.values() if t.has_simulation_id}
        return {name: n for name, n in found.items() if n}

    def rows_of(self, table: str, simulation: str) -> tuple[str, tuple]:
        """`` WHERE …`` and its parameters selecting simulation ``simulation``'s rows of
        ``table`` in a file of several: those with its id, and those without one whose
        agent only it has."""
        if not self.tables[table].attributed.get(simulation):
            return " WHERE simulation_id = ?", (simulation,)
        agents = json.dumps([agent for agent, owner in self.agent_owners.items() if owner == simulation])
        return (" WHERE simulation_id = ? OR (simulation_id IS NULL AND agent_id IN (SELECT value FROM json_each(?)))",
                (simulation, agents))

    def rows_expected(self, table: str, simulation: str) -> int:
        """How many rows :meth:`rows_of` selects."""
        t = self.tables[table]
        return t.counts.get(simulation, 0) + t.attributed.get(simulation, 0)


def expand(patterns: list[str]) -> tuple[list[SourceFile], list[str]]:
    """Paths and globs (``**`` recursive, a folder means ``folder/**/*.db``) to files.

    Returns the files, de-duplicated in a stable order (arguments in the order given, each
    glob's matches sorted), and the arguments that matched nothing.  Two names of one file
    (a symbolic link, a hard link, a bind mount) are one source: files are told apart by
    their identity (device and inode), a name that reaches no file by its real path.
    """
    files: list[SourceFile] = []
    seen: set = set()
    unmatched: list[str] = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            base, matches = Path(pattern), _glob(os.path.join(glob.escape(pattern), "**", "*.db"))
        elif glob.has_magic(pattern):
            base, matches = _glob_base(pattern), _glob(pattern)
        else:
            base, matches = Path(pattern).parent, [pattern] if os.path.lexists(pattern) else []
        matches = [m for m in matches if not os.path.isdir(m)]
        if not matches:
            unmatched.append(pattern)
        for match in sorted(matches):
            key = fileids.identity(match) or fileids.real_path(match)
            if key not in seen:
                seen.add(key)
                files.append(SourceFile(Path(match), base))
    return files, unmatched


def _glob(pattern: str) -> list[str]:
    """``glob.glob(pattern, recursive=True)``, but ``**`` enters each folder once.

    Like glob, ``**`` follows symbolic links to folders (a run folder linked into another
    is searched), but never into a folder it has already searched: glob walks a link that
    loops back 40 levels deep, and two such links for ever.
    """
    parts = Path(pattern).parts
    if "**" not in parts:
        return glob.glob(pattern)
    at = parts.index("**")
    head, tail = os.path.join(*parts[:at]) if at else "", parts[at + 1:] or ("*",)
    roots = glob.glob(head) if glob.has_magic(head) else [head or os.curdir]
    found = []
    for root in roots:
        for folder in _folders(root):
            prefix = "" if folder == os.curdir and not head else glob.escape(folder)
            found += _glob(os.path.join(prefix, *tail))
    return found


def _folders(root: str):
    """``root`` and every folder below it that is not hidden, each once (by identity)."""
    seen, stack = set(), [root]
    while stack:
        folder = stack.pop()
        key = fileids.identity(folder)
        if key is None or key in seen or not os.path.isdir(folder):
            continue
        seen.add(key)
        yield folder
        try:
            with os.scandir(folder) as entries:
                names = [e.name for e in entries if not e.name.startswith(".") and _is_dir(e)]
        except OSError:
            continue
        prefix = "" if folder == os.curdir and root == os.curdir else folder
        stack += [os.path.join(prefix, name) for name in sorted(names, reverse=True)]


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _glob_base(pattern: str) -> Path:
    parts = Path(pattern).parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))]]
    return Path(*fixed) if fixed else Path(".")


def inspect_source(source: SourceFile, *, include_active: bool = False, checksum: bool = True) -> SourceInfo:
    """Everything the merge needs to know about a source, read without changing it.

    ``checksum=False`` leaves ``sha256`` empty (the in-place upgrade has no use for it).
    """
    path = source.path
    name = str(path)
    try:
        size = path.stat().st_size
    except OSError as e:  # gone, unreadable, a loop of symbolic links
        raise SourceError(name, f"cannot read: {fileids.os_reason(e)}") from e
    if size == 0:
        raise SourceError(name, "empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError as e:
        raise SourceError(name, f"cannot read: {e.strerror}") from e
    if not header.startswith(SQLITE_MAGIC):
        raise SourceError(name, "not a SQLite database")
    if len(header) < 100:
        raise SourceError(name, f"truncated: {size} bytes, shorter than a SQLite header")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    header_valid = header[24:28] == header[92:96]  # in-header size is valid only then
    if page_size < 512 or page_size & (page_size - 1):
        raise SourceError(name, "malformed: invalid page size in the header")
    if header_valid and pages and size < pages * page_size:
        raise SourceError(name, f"truncated: header says {pages * page_size} bytes, file has {size}")

    wal_mode = header[18] == 2
    uri = _open_uri(path, wal_mode, include_active)
    try:
        con = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=0)
    except sqlite3.Error as e:
        raise SourceError(name, f"cannot open: {e}") from e
    try:
        con.execute("PRAGMA trusted_schema = OFF")
        con.text_factory = _lenient_text
        info = _read(con, source, size, uri)
    except sqlite3.OperationalError as e:
        if failures.is_locked(e):
            raise SourceError(name, "locked by another process (is a simulation still writing it?)") from e
        raise SourceError(name, _reason(e)) from e
    except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
        raise SourceError(name, _reason(e)) from e
    finally:
        con.close()
    info.active = _has_content(Path(f"{path}-wal"))
    if checksum:
        info.sha256 = hashing.sha256_of(path)
    return info


def _open_uri(path: Path, wal_mode: bool, include_active: bool) -> str:
    """The read-only URI to open ``path`` with.

    A rollback-journal file is read with ``mode=ro``: SQLite then creates nothing and its
    shared lock keeps a writer from committing mid-read.  A WAL file is read with
    ``immutable=1`` when it has no ``-wal``, since ``mode=ro`` alone would create ``-wal``
    and ``-shm`` files beside it.  An empty ``-wal`` holds nothing to replay: it is what a
    read-only reader of a WAL file (an experiment database, say) leaves behind, since it
    may not delete it, so it does not make the file "active"; ``mode=ro`` reads it.
    """
    wal, journal = Path(f"{path}-wal"), Path(f"{path}-journal")
    if journal.exists() and journal.stat().st_size > 0:
        raise SourceActive(str(path), f"active: {journal.name} beside it, a writer is mid-transaction or crashed "
                                      "(merge it when it is done, or open it once with sqlite3 to recover it)")
    if wal.exists():
        if not include_active and _has_content(wal):
            raise SourceActive(str(path), f"active: {wal.name} beside it, a simulation may still be writing it "
                                          "(merge it when it is done, or pass include_active=True)")
        return db.file_uri(path, mode="ro")
    if wal_mode:
        return db.file_uri(path, mode="ro", immutable="1")
    _probe_lock(path)
    return db.file_uri(path, mode="ro")


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def _probe_lock(path: Path) -> None:
    """Fail at once if another process holds a write lock on a rollback-journal file."""
    con = sqlite3.connect(db.file_uri(path, mode="ro"), uri=True, isolation_level=None, timeout=0)
    try:
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as e:
        if failures.is_locked(e):
            raise SourceError(str(path), "locked by another process (is a simulation still writing it?)") from e
        raise SourceError(str(path), _reason(e)) from e
    except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
        raise SourceError(str(path), _reason(e)) from e
    finally:
        con.close()


#: Why a source failed when SQLite's error message could not even be read: the message
#: quotes the schema's damaged text, and Python's sqlite3 decodes it as strict UTF-8.
UNDECODABLE = "malformed: damaged schema (SQLite's error message about it is not valid UTF-8)"


def _reason(e: sqlite3.Error | UnicodeDecodeError) -> str:
    if isinstance(e, UnicodeDecodeError):
        return UNDECODABLE
    message = " ".join(str(e).split())  # one line: SQLite quotes a damaged schema's text, newlines and all
    if "malformed" in message or "corrupt" in message:
        return f"malformed: {message}"
    if "unsupported file format" in message:
        return f"malformed: {message} (a damaged header, or a format this SQLite cannot read)"
    if "not a database" in message:
        return "not a SQLite database (or encrypted)"
    return message


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def _read(con: sqlite3.Connection, source: SourceFile, size: int, uri: str) -> SourceInfo:
    objects = con.execute("SELECT type, name FROM sqlite_master ORDER BY rowid").fetchall()
    ignored = [f"{kind} {name}" for kind, name in objects if kind in ("view", "trigger")]
    table_names = [name for kind, name in objects if kind == "table" and not name.startswith("sqlite_")]
    ignored += [f"table {n} (reserved name)" for n in table_names if n in RESERVED_TABLES]
    revision = None
    if "farm_merge_version" in table_names:  # a farm-merge experiment database used as a source
        found = con.execute("SELECT version_num FROM farm_merge_version").fetchone()
        revision = found[0] if found else None
    table_names = [n for n in table_names if n not in RESERVED_TABLES]
    _check_names(con, source, table_names)

    columns = {t: _columns(con, t) for t in table_names}
    era = detect_era({t: list(cols) for t, (cols, _) in columns.items()})
    if era is None:
        shown = ", ".join(table_names[:6]) + (", ..." if len(table_names) > 6 else "") if table_names else "no tables"
        raise SourceError(str(source.path), f"none of AgentFarm's tables (found: {shown})")

    ordered = [t for t in DATA_TABLE_KEYS if t in columns] + sorted(
        t for t in table_names if t not in DATA_TABLE_KEYS and t not in CATALOG_TABLES
    )
    tables = {}
    for name in ordered:
        cols, pk = columns[name]
        tables[name] = SourceTable(name, cols, pk, _counts(con, name, "simulation_id" in cols))
    simulations = {}
    if "simulations" in columns:
        for row in _rows(con, "simulations"):
            simulations[str(row.get("simulation_id"))] = row
    experiments = _rows(con, "experiments") if "experiments" in columns else []
    config_json, configs = _configs(con, columns)
    info = SourceInfo(source, size, "", uri, era, tables, simulations, experiments, config_json, ignored,
                      configs, revision)
    if len(info.recorded_simulation_ids) > 1 and info.orphan_rows():
        _attribute_by_agent(con, info)
    return info


def _attribute_by_agent(con: sqlite3.Connection, info: SourceInfo) -> None:
    """Find the simulation of rows without a simulation_id through their ``agent_id``: an
    agent that the rows of exactly one simulation name is that simulation's.

    AgentFarm's ``update_agent_death`` writes a death's health incident without the id
    (into an experiment file of several simulations as into a run file); each agent id of
    a seeded run is that run's, unless runs numbered their agents alike.
    """
    tables = [info.tables[t] for t in AGENT_TABLES
              if t in info.tables and info.tables[t].has_simulation_id and "agent_id" in info.tables[t].columns]
    orphaned = [t for t in tables if t.counts.get(None)]
    if not orphaned:
        return
    orphans = " UNION ".join(f"SELECT agent_id FROM {sqltext.quote(t.name)} WHERE simulation_id IS NULL" for t in orphaned)
    named = " UNION ALL ".join(f"SELECT agent_id, simulation_id FROM {sqltext.quote(t.name)} WHERE simulation_id IS NOT "
                               "NULL AND agent_id IN (SELECT agent_id FROM orphans)" for t in tables)
    info.agent_owners = {agent: str(owner) for agent, owner in con.execute(
        f"WITH orphans AS ({orphans}) SELECT agent_id, min(simulation_id) FROM ({named}) "
        "GROUP BY agent_id HAVING count(DISTINCT simulation_id) = 1")}
    for table in orphaned:
        for agent, n in con.execute(
                f"SELECT agent_id, count(*) FROM {sqltext.quote(table.name)} WHERE simulation_id IS NULL GROUP BY 1"):
            owner = info.agent_owners.get(agent)
            if owner is not None:
                table.attributed[owner] = table.attributed.get(owner, 0) + n


def _configs(con: sqlite3.Connection, columns: dict) -> tuple[str | None, dict[str | None, str]]:
    """The newest ``simulation_config`` JSON overall, and per recorded simulation id."""
    if "simulation_config" not in columns or "config_data" not in columns["simulation_config"][0]:
        return None, {}
    names = columns["simulation_config"][0]
    # config_id is the rowid in a run file; an experiment database (WITHOUT ROWID) has no rowid
    order = ", ".join(f"{c} DESC" for c in ("timestamp", "config_id") if c in names) or "rowid DESC"
    sim = "simulation_id" if "simulation_id" in names else "NULL"
    newest, configs = None, {}
    for i, (sim_id, data) in enumerate(
            con.execute(f"SELECT {sim}, config_data FROM simulation_config ORDER BY {order}")):
        newest = data if i == 0 else newest
        configs.setdefault(None if sim_id is None else str(sim_id), data)
    return newest, configs


def _check_names(con: sqlite3.Connection, source: SourceFile, tables: list[str]) -> None:
    """Refuse a table or column whose name is not UTF-8 text (a damaged schema): SQL can only
    name it by its decoded form, which names nothing, and SQLite reads a double-quoted name
    that names no column as a string, so its values would be copied as that string."""
    def check(found, what: str) -> None:
        for name, raw in found:
            if name.encode("utf-8", "surrogatepass").hex().upper() != raw:
                raise SourceError(str(source.path), f"malformed: {what} has a name that is not UTF-8 text "
                                                    f"(bytes {raw[:32]}); it cannot be copied by name")

    check(con.execute("SELECT name, hex(name) FROM sqlite_master WHERE type = 'table'"), "a table")
    for table in tables:
        check(con.execute("SELECT name, hex(name) FROM pragma_table_info(?)", (table,)), f"a column of {table}")


def _columns(con: sqlite3.Connection, table: str) -> tuple[dict[str, str], tuple[str, ...]]:
    rows = con.execute(f"PRAGMA table_info({sqltext.quote(table)})").fetchall()
    # SQLite's names are case-insensitive: a "Simulation_ID" column is the simulation_id
    # (and queries naming it simulation_id read it).
    rows = [(r[0], "simulation_id" if r[1].lower() == "simulation_id" else r[1], *r[2:]) for r in rows]
    cols = {r[1]: r[2] or "" for r in rows}
    pk = tuple(r[1] for r in sorted((r for r in rows if r[5]), key=lambda r: r[5]))
    return cols, pk


def _counts(con: sqlite3.Connection, table: str, by_simulation: bool) -> dict[str | None, int]:
    if not by_simulation:
        return {None: con.execute(f"SELECT count(*) FROM {sqltext.quote(table)}").fetchone()[0]}
    # One pass without a sort settles the usual case of a single recorded id.
    total, with_id, low, high = con.execute(
        f"SELECT count(*), count(simulation_id), min(simulation_id), max(simulation_id) FROM {sqltext.quote(table)}"
    ).fetchone()
    if low == high:
        counts = {str(low): with_id} if with_id else {}
        if total > with_id:
            counts[None] = total - with_id
        return counts
    rows = con.execute(f"SELECT simulation_id, count(*) FROM {sqltext.quote(table)} GROUP BY 1").fetchall()
    return {(None if sim is None else str(sim)): n for sim, n in rows}


def _rows(con: sqlite3.Connection, table: str) -> list[dict]:
    cursor = con.execute(f"SELECT * FROM {sqltext.quote(table)}")
    names = [d[0].lower() for d in cursor.description]  # as _columns: "Simulation_ID" is simulation_id
    return [dict(zip(names, row)) for row in cursor]


def json_or_none(value) -> object:
    """Parse a JSON column's stored text; keep other values as they are."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
