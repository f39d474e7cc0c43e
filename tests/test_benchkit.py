"""scripts/benchkit.py, what the benchmarks share: real child processes, the best of the
rounds, aligned tables; and every benchmark script still starts (they import it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import benchkit  # noqa: E402  (scripts/benchkit.py)


def script(tmp_path, body: str):
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_a_child_reports_its_result_with_its_own_cpu_time_and_peak_memory(tmp_path):
    child = script(tmp_path, """
        import json, sys, time
        block = bytearray(64 * 1024 * 1024)  # touched, so that it is resident
        for i in range(0, len(block), 4096):
            block[i] = 1
        print(json.dumps({"args": sys.argv[1:], "spent": time.process_time()}))
    """)
    result = benchkit.run(child, "a", "b c")
    assert result["args"] == ["a", "b c"]
    assert result["peak_rss_mib"] >= 64
    assert result["cpu_s"] >= result["spent"] > 0
    assert result["seconds"] > 0


def test_a_childs_own_seconds_are_kept(tmp_path):
    child = script(tmp_path, 'import json; print(json.dumps({"seconds": 123.0}))')
    assert benchkit.run(child)["seconds"] == 123.0


def test_a_failed_child_ends_the_benchmark(tmp_path):
    child = script(tmp_path, "raise SystemExit(3)")
    with pytest.raises(SystemExit, match="failed with status 3"):
        benchkit.run(child, "--child")


def test_a_child_imports_farm_merge_from_the_tree_it_is_given(tmp_path):
    (tmp_path / "other" / "farm_merge").mkdir(parents=True)
    (tmp_path / "other" / "farm_merge" / "__init__.py").write_text("")
    child = script(tmp_path, 'import json, farm_merge; print(json.dumps({"from": farm_merge.__file__}))')
    other = str(tmp_path / "other" / "farm_merge" / "__init__.py")
    assert benchkit.run(child, tree=tmp_path / "other")["from"] == other
    assert benchkit.run(child)["from"] != other


def test_best_is_the_fastest_run_with_the_least_cpu_and_the_largest_peak_asked_for():
    runs = [{"seconds": 2.0, "cpu_s": 0.5, "peak_rss_mib": 90, "n": 1},
            {"seconds": 1.0, "cpu_s": 0.9, "peak_rss_mib": 80, "n": 2},
            {"seconds": 3.0, "cpu_s": 0.7, "peak_rss_mib": 99, "n": 3}]
    assert benchkit.best(runs) == {"seconds": 1.0, "cpu_s": 0.5, "peak_rss_mib": 80, "n": 2}
    assert benchkit.best(runs, by="n", largest=("peak_rss_mib",)) == {
        "seconds": 2.0, "cpu_s": 0.5, "peak_rss_mib": 99, "n": 1}


def test_alternate_runs_every_job_once_a_round_in_turn():
    calls = []

    def job(name: str, times: list[float]):
        return lambda round_: calls.append((round_, name)) or {"seconds": times[round_]}

    best = benchkit.alternate(3, {"a": job("a", [3, 1, 2]), "b": job("b", [1, 5, 4])})
    assert calls == [(0, "a"), (0, "b"), (1, "a"), (1, "b"), (2, "a"), (2, "b")]
    assert best == {"a": {"seconds": 1}, "b": {"seconds": 1}}


def test_best_in_turns_warms_each_job_up_then_keeps_its_first_result():
    calls = []
    timed = benchkit.best_in_turns({"x": lambda: calls.append("x") or len(calls),
                                    "y": lambda: calls.append("y") or -len(calls)}, 2)
    assert calls == ["x", "y", "x", "y", "x", "y"]
    assert (timed["x"].result, timed["y"].result) == (1, -2)
    assert all(t.seconds >= 0 for t in timed.values())


def test_a_table_lines_its_cells_up_under_the_titles():
    table = benchkit.Table(benchkit.Column("name", 8, left=True), benchkit.Column("seconds", 9, "{:.2f}"),
                           benchkit.Column("peak RSS", 11, "{:.0f} MiB"), benchkit.Column("ratio", 8, "{:.2f}x", gap=2),
                           benchkit.Column("note", 0, left=True, gap=2))
    assert table.header() == "name      seconds   peak RSS     ratio  note"
    assert table.row("merge", 1.234, 61.6, 0.912, "ok") == "merge        1.23     62 MiB     0.91x  ok"
    # None leaves a cell blank; a string is written as it is; the blanks at the end are cut
    assert table.row("re-run", "0.1", None, None, None) == "re-run        0.1"
    with pytest.raises(ValueError):
        table.row("too few")


def test_workdir_is_kept_when_given_and_removed_otherwise(tmp_path):
    with benchkit.workdir(tmp_path / "kept", "x-") as folder:
        (folder / "file").write_text("")
    assert (tmp_path / "kept" / "file").exists()
    with benchkit.workdir(None, "farm-merge-test-") as folder:
        (folder / "file").write_text("")
    assert not folder.exists()


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "scripts").glob("bench_*.py")))
def test_every_benchmark_script_starts(name):
    result = subprocess.run([sys.executable, str(REPO / "scripts" / name), "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ")
