"""The one column helper (farm_merge.storage.columns): it reads a SQLite table's columns and
adds the ones a table lacks with their declared type, on an attached schema too, and no
other module writes ``ADD COLUMN`` by hand."""

from __future__ import annotations

import ast
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine

from farm_merge.storage import columns

PACKAGE = Path(__file__).resolve().parent.parent / "farm_merge"


def test_missing_columns_are_added_to_an_attached_table_with_their_declared_type(tmp_path):
    con = sqlite3.connect(":memory:")
    con.execute("ATTACH DATABASE ? AS out", (str(tmp_path / "out.db"),))
    con.execute("CREATE TABLE out.t (simulation_id TEXT NOT NULL, Step INTEGER)")
    con.execute("CREATE TABLE main.t (other TEXT)")  # the same name in main must stay untouched
    wanted = {"simulation_id": "TEXT", "step": "INTEGER", "agent_id": "VARCHAR(36)", "odd": "x); DROP TABLE t; --"}

    added = columns.add_missing_columns(con, "t", wanted, schema="out")

    assert added == ["agent_id", "odd"]  # "step" is "Step": SQLite compares names without case
    assert [(c.name, c.type) for c in columns.columns_of(con, "t", "out")] == [
        ("simulation_id", "TEXT"), ("Step", "INTEGER"), ("agent_id", "VARCHAR(36)"), ("odd", "NUMERIC")]
    assert columns.column_names(con, "t") == ["other"]
    assert columns.add_missing_columns(con, "t", wanted, schema="out") == []  # nothing added twice


def test_a_sqlalchemy_connection_and_known_columns_are_taken_as_given(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'e.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (a TEXT)")
        seen = []
        added = columns.add_missing_columns(conn, "t", [("b", "REAL"), ("b", "REAL"), ("A", "TEXT")],
                                            present={"a"}, on_added=lambda c, t: seen.append((c, t)))
        assert added == ["b"] and seen == [("b", "REAL")]
        assert columns.column_names(conn, "t") == ["a", "b"]
        assert columns.table_names(conn) == ["t"]
    engine.dispose()


def test_table_names_leave_sqlite_tables_out_but_not_look_alikes():
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE sqliteXfarm (a)")  # not SQLite's: LIKE 'sqlite_%' alone would drop it
    con.execute("CREATE TABLE t (a INTEGER PRIMARY KEY AUTOINCREMENT)")  # makes sqlite_sequence
    assert columns.table_names(con) == ["sqliteXfarm", "t"]


def test_no_module_but_the_column_helper_writes_add_column():
    pattern = re.compile(r"ADD\s+COLUMN", re.IGNORECASE)
    found = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                   if p.name != "columns.py" and pattern.search(p.read_text()))
    assert found == []


def test_sqlite_utils_is_imported_only_inside_the_functions_that_use_it():
    # Its import costs about 0.6 s (it loads pandas and numpy when they are installed):
    # no module of the package may pay it on import, so no command start-up pays it.
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text(), str(path)).body:  # module level only
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "sqlite_utils" for n in names):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []
    code = ("import sys\nimport farm_merge.cli, farm_merge.query.export, farm_merge.query.fromserver\n"
            "print('sqlite_utils' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_a_target_type_is_asked_for_only_for_the_columns_added():
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t (a TEXT)")
    asked = []
    added = columns.add_missing_columns(con, "t", {"a": "VARCHAR(36)", "n": "INTEGER"},
                                        column_type=lambda t: asked.append(t) or "BIGINT")
    assert added == ["n"] and asked == ["INTEGER"]
    assert [(c.name, c.type) for c in columns.columns_of(con, "t")] == [("a", "TEXT"), ("n", "BIGINT")]
