"""Corrupted and hostile sources, each merged among good ones: none crashes the tool, corrupts
the target, runs anything from the source or keeps the good sources out; each gets a clear
reason or is merged faithfully, and no source changes.

"Faithfully" for a corrupted file that SQLite still reads: a damaged page inside a record
can read back as other values without any error, and nothing can tell those from the
file's own.  What is provable, and asserted, is that the target holds exactly what SQLite
reads from the source, row for row and byte for byte, and that row counts agree.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from conftest import SMALL, rows
from farm_merge import consolidate, samples
from farm_merge.storage import legacy
from faults import assert_faithful, content, digests, farm_merge, integrity, partial_simulations, source_files

pytestmark = pytest.mark.reliability

FUZZ_TRIALS = 160
SEED = 11

#: The reasons a source that cannot be merged may get; anything else fails the test.
REASONS = re.compile(
    r"^(malformed: .+|truncated: .+|not a SQLite database( \(or encrypted\))?|none of AgentFarm's tables .+"
    r"|verification failed: .+|(UNIQUE|NOT NULL) constraint failed: .+ \(duplicate or missing key in the source\))$")


@pytest.fixture
def good(tmp_path) -> list[Path]:
    folder = tmp_path / "runs"
    folder.mkdir()
    return [samples.write_run_file(folder / "good_a.db", "2024-12", seed=1, **SMALL).path,
            samples.write_run_file(folder / "good_b.db", "2025-11", seed=2, **SMALL).path]


def merge_among(good: list[Path], bad: list[Path], target: Path) -> dict[str, consolidate.SourceResult]:
    """Merge ``bad`` between the good sources and check what must hold whatever ``bad`` is:
    no exception, the good ones merged faithfully, a sound target with whole simulations
    and no view or trigger, every source unchanged.  Returns the results by file name."""
    files = [good[0], *bad, good[1]]
    before = digests(files)
    report = consolidate.merge([str(p) for p in files], str(target), progress=False)
    results = {Path(r.path).name: r for r in report.results}
    for path in good:
        assert results[path.name].status == "merged", results[path.name].reason
        assert_faithful(path, target, results[path.name].simulation_ids[0])
    assert integrity(target) == [("ok",)]
    assert partial_simulations(target) == []
    assert rows(target, "SELECT type, name FROM sqlite_master WHERE type IN ('view', 'trigger')") == []
    assert digests(files) == before
    return results


# --- hostile files ------------------------------------------------------------------------------

EVIL = 'x"; DROP TABLE agents; --'


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def test_names_with_quotes_semicolons_spaces_and_sql_are_only_names(good, tmp_path):
    path = samples.write_run_file(tmp_path / "names.db", "2025-11", seed=3, **SMALL).path
    con = sqlite3.connect(path)
    columns = ['y"); DROP TABLE agents; --', "a b", "it's;", "SELECT * FROM agents"]
    con.execute(f"CREATE TABLE {q(EVIL)} ({', '.join(q(c) + ' TEXT' for c in columns)})")
    con.execute(f"INSERT INTO {q(EVIL)} VALUES (?, ?, ?, ?)", ("'; DELETE FROM agents; --", "b", "c", "d"))
    con.execute(f'ALTER TABLE agents ADD COLUMN {q("z; DELETE FROM agent_states; --")} TEXT DEFAULT \'x\'')
    con.execute('CREATE TABLE "" (q)')
    con.execute("INSERT INTO \"\" VALUES ('empty name')")
    con.execute('CREATE TABLE "  " (q)')
    con.commit()
    con.close()

    results = merge_among(good, [path], tmp_path / "exp.db")
    merged = results["names.db"]
    assert merged.status == "merged"
    assert sorted(merged.added_columns) == sorted(
        ["agents.z; DELETE FROM agent_states; --", f"table {EVIL}", "table ", "table   "])
    assert_faithful(path, tmp_path / "exp.db", merged.simulation_ids[0])
    assert rows(tmp_path / "exp.db", f"SELECT {', '.join(q(c) for c in columns)} FROM {q(EVIL)}") == [
        ("'; DELETE FROM agents; --", "b", "c", "d")]
    assert rows(tmp_path / "exp.db", 'SELECT q FROM ""') == [("empty name",)]


def test_names_that_differ_from_ours_only_in_case_are_ours(good, tmp_path):
    path = samples.write_run_file(tmp_path / "case.db", "2025-11", seed=4, **SMALL).path
    con = sqlite3.connect(path)
    con.execute('ALTER TABLE agents RENAME COLUMN genome_id TO "Genome_ID"')
    for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
        if "simulation_id" in [r[1] for r in con.execute(f"PRAGMA table_info({q(table)})")]:
            con.execute(f'ALTER TABLE {q(table)} RENAME COLUMN simulation_id TO "Simulation_Id"')
    con.commit()
    con.close()

    results = merge_among(good, [path], tmp_path / "exp.db")
    assert results["case.db"].status == "merged" and results["case.db"].added_columns == []
    sim = results["case.db"].simulation_ids[0]
    assert sim.startswith("sim_")  # the id the file records, read from its Simulation_Id column
    assert_faithful(path, tmp_path / "exp.db", sim)


def test_views_and_triggers_in_a_source_are_neither_run_nor_copied(good, tmp_path):
    path = samples.write_run_file(tmp_path / "triggers.db", "2025-11", seed=5, **SMALL).path
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE tripwire (fired TEXT)")
    for event in ("INSERT", "DELETE", "UPDATE"):
        con.execute(f"CREATE TRIGGER on_{event.lower()} AFTER {event} ON agents "
                    "BEGIN INSERT INTO tripwire VALUES ('fired'); DELETE FROM agent_states; END")
    con.execute("CREATE VIEW agent_summary AS SELECT agent_type, count(*) AS n FROM agents GROUP BY 1")
    con.execute("CREATE VIEW simulation_stepz AS SELECT * FROM simulation_steps")
    con.commit()
    con.close()

    target = tmp_path / "exp.db"
    results = merge_among(good, [path], target)
    assert results["triggers.db"].status == "merged"
    assert_faithful(path, target, results["triggers.db"].simulation_ids[0])
    assert rows(target, "SELECT count(*) FROM tripwire") == [(0,)]
    assert rows(path, "SELECT count(*) FROM tripwire") == [(0,)]


def test_huge_text_and_blob_values_are_copied_whole(good, tmp_path):
    path = samples.write_run_file(tmp_path / "huge.db", "2025-11", seed=6, **SMALL).path
    blob = random.Random(1).randbytes(24 << 20)
    text = "é" * (8 << 20)  # 16 MiB of UTF-8
    config = json.dumps({"seed": 6, "payload": "x" * (4 << 20)})
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE attachments (step_number INTEGER, data BLOB, note TEXT)")
    con.execute("INSERT INTO attachments VALUES (1, ?, NULL), (2, NULL, ?)", (blob, text))
    con.execute("UPDATE simulation_config SET config_data = ?", (config,))
    con.commit()
    con.close()

    target = tmp_path / "exp.db"
    results = merge_among(good, [path], target)
    assert results["huge.db"].status == "merged"
    sim = results["huge.db"].simulation_ids[0]
    con = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
    try:
        got = dict(con.execute("SELECT step_number, coalesce(data, note) FROM attachments WHERE simulation_id = ?",
                               (sim,)).fetchall())
        (parameters,) = con.execute("SELECT parameters FROM simulations WHERE simulation_id = ?", (sim,)).fetchone()
    finally:
        con.close()
    assert hashlib.sha256(got[1]).digest() == hashlib.sha256(blob).digest()
    assert got[2] == text
    assert json.loads(parameters) == json.loads(config)


def _without_constraints(con: sqlite3.Connection, table: str) -> None:
    """Rebuild ``table`` with its columns and rows but no key, as a careless writer would."""
    con.execute(f"CREATE TABLE loose AS SELECT * FROM {table}")
    con.execute(f"DROP TABLE {table}")
    con.execute(f"ALTER TABLE loose RENAME TO {table}")


def test_nulls_in_key_columns_are_refused_with_the_column(good, tmp_path):
    path = samples.write_run_file(tmp_path / "null_keys.db", "2025-11", seed=7, **SMALL).path
    con = sqlite3.connect(path)
    _without_constraints(con, "agent_states")
    con.execute("UPDATE agent_states SET id = NULL WHERE rowid IN (SELECT rowid FROM agent_states LIMIT 2)")
    con.commit()
    con.close()

    result = merge_among(good, [path], tmp_path / "exp.db")["null_keys.db"]
    assert (result.status, result.reason) == (
        "failed", "NOT NULL constraint failed: agent_states.id (duplicate or missing key in the source)")
    assert rows(tmp_path / "exp.db", "SELECT count(*) FROM simulations") == [(2,)]  # the good ones only


def test_duplicate_keys_in_a_source_without_constraints_are_refused(good, tmp_path):
    path = samples.write_run_file(tmp_path / "duplicates.db", "2025-11", seed=8, **SMALL).path
    con = sqlite3.connect(path)
    _without_constraints(con, "simulation_steps")
    con.execute("INSERT INTO simulation_steps SELECT * FROM simulation_steps WHERE step_number < 3")
    con.commit()
    con.close()

    result = merge_among(good, [path], tmp_path / "exp.db")["duplicates.db"]
    assert (result.status, result.reason) == (
        "failed", "UNIQUE constraint failed: simulation_steps.simulation_id, simulation_steps.step_number "
                  "(duplicate or missing key in the source)")


def test_a_file_whose_header_says_sqlite_but_is_not(good, tmp_path):
    real = samples.write_run_file(tmp_path / "real.tmp", "2025-11", seed=9, **SMALL).path
    fake = tmp_path / "fake.db"
    header = real.read_bytes()[:100]  # a valid header: page size, page count, encoding
    fake.write_bytes(header + random.Random(9).randbytes(len(real.read_bytes()) - 100))
    result = merge_among(good, [fake], tmp_path / "exp.db")["fake.db"]
    assert result.status == "failed"
    assert REASONS.match(result.reason), result.reason


def test_tables_named_like_ours_do_not_reach_our_ledger(good, tmp_path):
    path = samples.write_run_file(tmp_path / "ledger.db", "2025-11", seed=10, **SMALL).path
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE merge_ledger (simulation_id TEXT, source_path TEXT)")
    con.execute("INSERT INTO merge_ledger VALUES ('good_a', '/forged')")
    con.execute("CREATE TABLE alembic_version (version_num TEXT)")
    con.execute("INSERT INTO alembic_version VALUES ('9999_forged')")
    con.commit()
    con.close()

    target = tmp_path / "exp.db"
    results = merge_among(good, [path], target)
    assert results["ledger.db"].status == "merged"
    assert "/forged" not in {p for (p,) in rows(target, "SELECT source_path FROM merge_ledger")}
    assert rows(target, "SELECT count(*) FROM merge_ledger") == [(3,)]


def test_a_file_name_with_uri_and_sql_characters(good, tmp_path):
    path = tmp_path / "sim?mode=rw#frag%20'\"; DROP TABLE agents; --.db"
    samples.write_run_file(path, "2025-11", seed=12, **SMALL)
    results = merge_among(good, [path], tmp_path / "exp.db")
    result = results[path.name]
    assert result.status == "merged"
    assert_faithful(path, tmp_path / "exp.db", result.simulation_ids[0])


# --- corrupted files: a seeded fuzz loop -------------------------------------------------------

def corrupt(data: bytes, kind: str, rng: random.Random) -> bytes:
    """``data`` damaged one way: bits flipped anywhere, in the header or on the first page
    (the schema), cut at a random offset, or one page zeroed."""
    out = bytearray(data)
    page = int.from_bytes(data[16:18], "big")
    if kind == "flip":
        for _ in range(rng.randint(1, 24)):
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
    elif kind == "header":
        for _ in range(rng.randint(1, 3)):
            out[rng.randrange(16, 100)] = rng.randrange(256)
    elif kind == "schema":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(100, page)
            out[i] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del out[rng.randrange(1, len(out)):]
    elif kind == "zero_page":
        n = rng.randrange(len(out) // page)
        out[n * page:(n + 1) * page] = bytes(page)
    return bytes(out)


KINDS = ("flip", "header", "schema", "truncate", "zero_page")


def test_fuzzed_sources_never_crash_the_merge_nor_keep_good_ones_out(good, tmp_path, empty_experiment_db):
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    originals = [samples.write_run_file(pristine / f"{era.name}.db", era, seed=20 + i, **SMALL).path.read_bytes()
                 for i, era in enumerate(legacy.ERAS)]
    rng = random.Random(SEED)
    outcomes: Counter = Counter()
    kept = tmp_path / "kept"
    kept.mkdir()
    for trial in range(FUZZ_TRIALS):
        kind = KINDS[trial % len(KINDS)]
        bad = tmp_path / f"fuzz_{trial:03d}_{kind}.db"
        bad.write_bytes(corrupt(rng.choice(originals), kind, rng))
        target = tmp_path / "exp.db"
        shutil.copy(empty_experiment_db, target)
        for suffix in ("-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)

        result = merge_among(good, [bad], target)[bad.name]
        if result.status == "merged":
            # Exactly what SQLite reads from it.  A flipped simulation_id in one row makes
            # the file hold two simulations, and each is merged as one.
            several = len(result.simulation_ids) > 1
            merged_rows = 0
            for sim in result.simulation_ids:
                assert_faithful(bad, target, sim, several=several)
                counts = rows(target, "SELECT row_counts FROM merge_ledger WHERE simulation_id = ?", (sim,))[0][0]
                merged_rows += sum(json.loads(counts).values())
            assert merged_rows == result.rows
            outcomes["several simulations"] += several
        else:
            assert result.status == "failed"
            assert REASONS.match(result.reason), result.reason
        outcomes[(kind, result.status)] += 1
        if trial % 10 == 0:
            shutil.move(bad, kept / bad.name)  # a sample for the command-line run below
        else:
            bad.unlink()
        target.unlink()

    several = outcomes.pop("several simulations")
    print(f"\n{FUZZ_TRIALS} fuzzed sources: " + ", ".join(f"{k} {s} {n}" for (k, s), n in sorted(outcomes.items()))
          + f"; {several} merged as several simulations")
    assert {kind for kind, _ in outcomes} == set(KINDS)
    assert outcomes[("truncate", "failed")] == FUZZ_TRIALS // len(KINDS)  # a cut file is always refused
    assert sum(n for (_, status), n in outcomes.items() if status == "merged") > 0  # damage SQLite cannot see
    assert sum(n for (_, status), n in outcomes.items() if status == "failed") > 0

    # The same kind of files through the command line: a line each, never a traceback.
    for path in good:
        shutil.copy(path, kept / path.name)
    before = digests(source_files(kept))
    proc = farm_merge("merge", kept, "--into", tmp_path / "cli.db")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in out + err
    for path in kept.glob("*.db"):
        line = next(l for l in out.splitlines() if str(path) in l)
        assert line.split()[0] in ("merged", "failed")
        if path.name.startswith("good_"):
            assert line.startswith("merged")
    assert digests(source_files(kept)) == before
    assert integrity(tmp_path / "cli.db") == [("ok",)]
    assert partial_simulations(tmp_path / "cli.db") == []
    assert set(content(tmp_path / "cli.db")) >= {"good_a"}
