"""What the reliability tests share: the checks every fault must leave true, and the
fingerprints that prove a source untouched or a target complete.

Everything reads SQLite files directly (``mode=ro`` URIs), so a check never changes what
it checks, and bytes are compared as bytes: a corrupted source may hold text that is not
UTF-8, which SQLite copies as it is.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from farm_merge.storage import db, legacy, sqltext
from farm_merge.storage.schema import DATA_TABLES

#: The secondary indexes of the data tables, which a first merge drops and builds at the end.
SECONDARY_INDEXES = frozenset(ix.name for table in DATA_TABLES.values() for ix in table.indexes)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def digests(paths) -> dict[str, str]:
    """sha256 of each file that exists among ``paths`` (a source, its -wal, ...)."""
    return {str(p): sha256(p) for p in map(Path, paths) if p.exists()}


def source_files(folder: Path) -> list[Path]:
    """A folder's database files and their -wal/-journal files, not the -shm: that is SQLite's
    shared-memory index, rebuilt from the WAL by any reader, and holds no data."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith("-shm"))


def connect_ro(path: Path, text_factory=bytes) -> sqlite3.Connection:
    """A read-only connection (any file name: '?' and '#' are escaped in the URI)."""
    con = sqlite3.connect(db.file_uri(Path(path), mode="ro"), uri=True, timeout=10, isolation_level=None)
    con.text_factory = text_factory
    return con


def integrity(path: Path) -> list[tuple]:
    con = connect_ro(path, str)
    try:
        return con.execute("PRAGMA integrity_check").fetchall()
    finally:
        con.close()


def index_names(path: Path) -> set[str]:
    con = connect_ro(path)
    try:
        return {n.decode() for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        con.close()


def partial_simulations(path: Path) -> list[str]:
    """What a reader sees that is not a whole merged simulation, in one read transaction:
    a ``simulations`` row without its ledger row (or the reverse), a simulation with rows
    in a data table that its ledger does not count, a count that differs.  [] is good."""
    con = connect_ro(path)
    try:
        con.execute("BEGIN")  # one snapshot for every statement below
        tables = {n.decode() for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "merge_ledger" not in tables:
            return []  # the schema is not there yet (it is created in one transaction)
        ledger = {sim.decode(): json.loads(counts) for sim, counts in
                  con.execute("SELECT simulation_id, row_counts FROM merge_ledger")}
        catalogued = {sim.decode() for (sim,) in con.execute("SELECT simulation_id FROM simulations")}
        problems = [f"{sim}: simulations row without its ledger row" for sim in sorted(catalogued - set(ledger))]
        problems += [f"{sim}: ledger row without its simulations row" for sim in sorted(set(ledger) - catalogued)]
        for table in sorted(tables & set(DATA_TABLES)):
            found = {sim.decode(): n for sim, n in
                     con.execute(f'SELECT simulation_id, count(*) FROM "{table}" GROUP BY simulation_id')}
            for sim, n in sorted(found.items()):
                expected = ledger.get(sim, {}).get(table)
                if n != expected:
                    problems.append(f"{sim}: {n} rows in {table}, the ledger says {expected}")
        con.execute("COMMIT")
        return problems
    finally:
        con.close()


def content(path: Path, *, ignore: dict[str, set[str]] | None = None) -> dict[str, dict[str, str]]:
    """Per simulation, per table (data, catalogue and any table a merge added), a digest of
    its rows: every column, values as stored, in a fixed order.  ``ignore`` leaves out
    columns per table; the ledger's merge time and the experiment id (a target's file stem
    by default) are always left out."""
    ignore = {"merge_ledger": {"merged_at", "experiment_id"}, "simulations": {"experiment_id"}, **(ignore or {})}
    con = connect_ro(path)
    try:
        con.execute("BEGIN")
        tables = [n.decode() for (n,) in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN ('experiments', 'farm_merge_version')")]
        out: dict[str, dict[str, list]] = {}
        for table in tables:
            columns = [c.decode() for (_, c, *_rest) in con.execute(f'PRAGMA table_info("{table}")')]
            kept = [c for c in columns if c not in ignore.get(table, set()) and c != "simulation_id"]
            select = ", ".join(f'"{c}"' for c in kept)
            for sim, *row in con.execute(f'SELECT simulation_id, {select} FROM "{table}"'):
                out.setdefault(sim.decode(), {}).setdefault(table, []).append(repr(row))
        con.execute("COMMIT")
    finally:
        con.close()
    return {sim: {t: hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest() for t, rows in per.items()}
            for sim, per in out.items()}


def assert_faithful(source: Path, target: Path, simulation_id: str, *, several: bool = False) -> None:
    """Every data table of ``source`` has in ``target``, under ``simulation_id``, exactly the
    rows SQLite reads from the source (bytes for bytes; an integer id in a column the
    experiment schema holds as TEXT as its digits, as the merge stores it).  With
    ``several`` the source holds several simulations: only its rows recording
    ``simulation_id`` count."""
    src, dst = connect_ro(source), connect_ro(target)
    try:
        tables = [t.decode() for (t,) in src.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                  if t.decode() not in legacy.CATALOG_TABLES and not t.startswith(b"sqlite_")]
        for table in tables:
            src_cols = [c.decode() for (_, c, *_rest) in src.execute(f'PRAGMA table_info("{_q(table)}")')
                        if c.decode().lower() != "simulation_id"]
            affinity = {c.decode().lower(): sqltext.affinity(t.decode())
                        for (_, c, t, *_rest) in dst.execute(f'PRAGMA table_info("{_q(table)}")')}
            cols = ", ".join(f'"{_q(c)}"' for c in src_cols)
            where, params = (" WHERE simulation_id = ?", (simulation_id,)) if several else ("", ())
            expected = [tuple(str(v).encode() if affinity[c.lower()] == "TEXT" and isinstance(v, (int, float)) else v
                              for c, v in zip(src_cols, row))
                        for row in src.execute(f'SELECT {cols} FROM "{_q(table)}"{where}', params)]
            got = dst.execute(f'SELECT {cols} FROM "{_q(table)}" WHERE simulation_id = ?', (simulation_id,)).fetchall()
            assert sorted(got, key=repr) == sorted(expected, key=repr), f"{table} differs for {simulation_id}"
    finally:
        src.close()
        dst.close()


def _q(name: str) -> str:
    return name.replace('"', '""')


def farm_merge(*args: str, limit_file_size: int | None = None, **kwargs) -> subprocess.Popen:
    """``farm-merge ARGS`` in a child process (stdout and stderr piped, text).

    ``limit_file_size`` caps every file the child writes (RLIMIT_FSIZE) with SIGXFSZ
    ignored, so a write past it fails with EFBIG as on a full disk instead of killing it.
    """
    command = [sys.executable, "-m", "farm_merge", *map(str, args)]
    if limit_file_size is not None:
        command = [sys.executable, "-c", _LIMITED, str(limit_file_size), *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv = ["farm-merge", *sys.argv[2:]]
from farm_merge.cli import main
main()
"""
