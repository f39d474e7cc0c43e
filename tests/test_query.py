"""info, list, summary and compare on a merged database of every era, checked against
the source run files; every error a user can make, as one line."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import event

from conftest import REPO, SMALL, rows
from farm_merge import ExperimentQueryTool
from farm_merge.cli import cli
from farm_merge.consolidate import inplace
from farm_merge.errors import (
    DatabaseNotFound,
    ExperimentNotFound,
    FarmMergeError,
    MissingDependency,
    NotAnExperimentDatabase,
    SchemaOutOfDate,
    SimulationNotFound,
    StepNotFound,
    UnknownMetric,
)
from farm_merge.storage import legacy, versions
from query_helpers import build_experiment, experiment, png_size, source_config, source_rows, source_value  # noqa: F401


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# --- info ------------------------------------------------------------------------------------

def test_info_reports_experiment_revision_statuses_rows_and_sources(experiment):
    with ExperimentQueryTool(experiment.path) as tool:
        info = tool.get_experiment_info()
    assert (info["experiment_id"], info["name"]) == ("exp_001", "LR sweep")
    assert info["schema_revision"] == info["head_revision"] == versions.head_revision()
    if experiment.backend == "sqlite":
        assert info["size_bytes"] >= experiment.path.stat().st_size > 0
    else:  # the database's size: at least that of its tables
        (tables_size,) = rows(experiment.path, "SELECT sum(pg_total_relation_size(oid)) FROM pg_class "
                                               "WHERE relkind = 'r' AND relnamespace = current_schema()::regnamespace")[0]
        assert info["size_bytes"] >= tables_size > 0
    assert info["simulations"] == {"total": len(legacy.ERAS), "by_status": {"completed": len(legacy.ERAS)}}
    expected_rows: dict[str, int] = {}
    for run_file in experiment.runs:
        for table, n in run_file.rows.items():
            if table in legacy.DATA_TABLE_KEYS:
                expected_rows[table] = expected_rows.get(table, 0) + n
    assert {t: n for t, n in info["tables"].items() if n} == expected_rows
    sources = info["sources"]
    assert sources["count"] == len(legacy.ERAS)
    assert sources["bytes"] == sum(r.path.stat().st_size for r in experiment.runs)
    assert [e["era"] for e in sources["by_era"]] == sorted(e.name for e in legacy.ERAS)
    assert {Path(f["source_path"]) for f in sources["files"]} == {r.path.resolve() for r in experiment.runs}


def test_info_cli_table_json_and_csv(experiment):
    text = run("info", experiment.path)
    assert text.exit_code == 0, text.output
    assert f"schema revision  {versions.head_revision()}\n" in text.output
    assert "experiment       exp_001\n  name           LR sweep\n" in text.output
    assert f"simulations      {len(legacy.ERAS)} ({len(legacy.ERAS)} completed)" in text.output
    assert f"merged sources   {len(legacy.ERAS)} files" in text.output
    as_json = json.loads(run("info", experiment.path, "--json").output)
    assert as_json["simulations"]["total"] == len(legacy.ERAS)
    rows = list(csv.reader(io.StringIO(run("info", experiment.path, "--csv").output)))
    assert rows[0] == ["section", "key", "value"]
    assert ["table", "simulation_steps", str(len(legacy.ERAS) * SMALL["steps"])] in rows
    assert run("info", experiment.path, "--json", "--csv").exit_code == 2


# --- list ------------------------------------------------------------------------------------

def test_list_has_one_line_per_simulation_with_steps_agents_era_and_source(experiment):
    with ExperimentQueryTool(experiment.path) as tool:
        rows = tool.list_records()
    assert [r["simulation_id"] for r in rows] == experiment.simulation_ids
    for row in rows:
        source = experiment.source(row["simulation_id"])
        assert row["steps"] == SMALL["steps"]
        assert row["agents_ever"] == source_value(source, "SELECT count(*) FROM agents")
        assert row["era"] == source.stem.split("_", 2)[2]
        assert Path(row["source"]) == source.resolve()
        assert row["status"] == "completed"


def test_list_cli_is_an_aligned_table(experiment):
    result = run("list", experiment.path)
    assert result.exit_code == 0
    header, rule, *lines = result.output.splitlines()
    assert header.split() == ["simulation_id", "status", "era", "steps", "agents_ever", "start_time", "end_time",
                              "source"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert len(lines) == len(legacy.ERAS)
    assert [line.split()[0] for line in lines] == experiment.simulation_ids
    parsed = list(csv.DictReader(io.StringIO(run("list", experiment.path, "--csv").output)))
    assert [r["steps"] for r in parsed] == [str(SMALL["steps"])] * len(legacy.ERAS)


# --- summary ---------------------------------------------------------------------------------

def test_summary_final_and_peak_values_match_the_source_files(experiment):
    with ExperimentQueryTool(experiment.path) as tool:
        summary = tool.summary_records()
    assert [s["simulation_id"] for s in summary] == experiment.simulation_ids
    for row in summary:
        source = experiment.source(row["simulation_id"])
        last = source_value(source, "SELECT max(step_number) FROM simulation_steps")
        final = source_rows(source, "SELECT total_agents, total_resources, average_agent_health, average_reward "
                                    "FROM simulation_steps WHERE step_number = ?", (last,))[0]
        peaks = source_rows(source, "SELECT max(total_agents), max(total_resources), sum(births), sum(deaths), "
                                    "min(total_agents) FROM simulation_steps")[0]
        assert (row["total_steps"], row["last_step"]) == (SMALL["steps"], last)
        assert (row["final_total_agents"], row["final_total_resources"], row["final_average_agent_health"],
                row["final_average_reward"]) == final
        assert (row["peak_total_agents"], row["peak_total_resources"], row["total_births"], row["total_deaths"],
                row["min_agents"]) == peaks
        assert row["max_agents"] == row["peak_total_agents"]
        assert row["parameters"] == source_config(source)


def test_summary_is_one_statement_whatever_the_number_of_simulations(experiment):
    with ExperimentQueryTool(experiment.path) as tool:
        statements = []
        event.listen(tool.engine, "before_cursor_execute",
                     lambda conn, cursor, statement, *rest: statements.append(statement))
        tool.summary_records()
    queries = [s for s in statements if s != "BEGIN"]
    assert len(queries) == 1 and "simulation_steps" in queries[0]


def test_summary_of_chosen_simulations_and_unknown_ids(experiment):
    first, second = experiment.simulation_ids[:2]
    with ExperimentQueryTool(experiment.path) as tool:
        assert [s["simulation_id"] for s in tool.summary_records(first)] == [first]
        assert [s["simulation_id"] for s in tool.summary_records(simulation_ids=[second, first])] == [first,
                                                                                                            second]
        with pytest.raises(SimulationNotFound, match=re.escape(f"no simulation 'sim_nope' in {experiment.path}")):
            tool.summary_records("sim_nope")
    result = run("summary", experiment.path, "--simulation-id", "sim_nope")
    assert result.exit_code == 1
    assert result.output == f"Error: no simulation 'sim_nope' in {experiment.path}\n"


def test_summary_table_shows_the_parameters_that_differ(experiment):
    result = run("summary", experiment.path)
    assert result.exit_code == 0
    header, _, *lines = result.output.splitlines()
    assert header.split() == ["simulation_id", "status", "steps", "final_agents", "peak_agents", "final_resources",
                              "peak_resources", "final_health", "peak_health", "final_reward", "births", "deaths",
                              "parameters"]
    by_id = {line.split()[0]: line for line in lines}
    for sim in experiment.simulation_ids:
        config = source_config(experiment.source(sim))
        assert by_id[sim].endswith(f"learning_rate={config['learning_rate']} seed={config['seed']}")
    full = json.loads(run("summary", experiment.path, "--json").output)
    assert full[0]["params.notes"].startswith("xxx")  # every parameter in JSON, whole


# --- compare ---------------------------------------------------------------------------------

@pytest.mark.parametrize("at, sql", [
    ("final", "SELECT total_agents FROM simulation_steps ORDER BY step_number DESC LIMIT 1"),
    ("max", "SELECT max(total_agents) FROM simulation_steps"),
    ("min", "SELECT min(total_agents) FROM simulation_steps"),
    ("mean", "SELECT avg(total_agents) FROM simulation_steps"),
    ("5", "SELECT total_agents FROM simulation_steps WHERE step_number = 5"),
])
def test_compare_reads_the_metric_where_asked(experiment, at, sql):
    with ExperimentQueryTool(experiment.path) as tool:
        result = tool.compare_metric("total_agents", at=at)
    assert [r["simulation_id"] for r in result] == experiment.simulation_ids
    for row in result:
        assert row["value"] == source_value(experiment.source(row["simulation_id"]), sql)
        assert row["step"] == {"final": SMALL["steps"] - 1, "5": 5}.get(at)


@pytest.fixture
def uneven(tmp_path, backend):
    """Simulations of 5, 12 and 12 steps (one with a gap at step 7), and one with none."""
    from farm_merge import consolidate, samples

    runs = tmp_path / "runs"
    runs.mkdir()
    for name, steps in (("short", 5), ("long", 12), ("holed", 12)):
        samples.write_run_file(runs / f"{name}.db", "2025-11", seed=steps, steps=steps, agents=3, resources=2,
                               simulation_id=name)
    con = sqlite3.connect(runs / "holed.db")
    con.execute("DELETE FROM simulation_steps WHERE step_number = 7")
    con.commit()
    con.close()
    target = backend.target()
    assert consolidate.merge([str(runs)], str(target), progress=False).exit_code == 0
    from conftest import execute

    execute(target, "INSERT INTO simulations (simulation_id, experiment_id, status, parameters) "
                    "SELECT 'empty', experiment_id, 'running', '{}' FROM experiments")
    return target


def test_compare_at_a_step_no_simulation_has_names_the_steps_each_has(uneven):
    with ExperimentQueryTool(uneven) as tool:
        with pytest.raises(StepNotFound) as caught:
            tool.compare_metric("births", at=999)
    expected = ("no simulation has step 999; empty: no steps; holed: steps 0-11, 11 steps; long: steps 0-11; "
                "short: steps 0-4")
    assert str(caught.value) == expected
    result = run("compare", uneven, "--metric", "births", "--at", "999")
    assert (result.exit_code, result.output) == (1, f"Error: {expected}\n")


def test_compare_at_a_step_some_simulations_lack_marks_them(uneven):
    with ExperimentQueryTool(uneven) as tool:
        got = {r["simulation_id"]: (r["step"], r["value"] is not None, r["note"]) for r in
               tool.compare_metric("births", at=7)}
    assert got == {"empty": (None, False, "no step 7 (no steps)"),
                   "holed": (None, False, "no step 7 (steps 0-11, 11 steps)"),
                   "long": (7, True, None), "short": (None, False, "no step 7 (steps 0-4)")}
    result = run("compare", uneven, "--metric", "births", "--at", "7")
    assert result.exit_code == 0
    header, _, *lines = result.output.splitlines()
    assert header.split() == ["simulation_id", "step", "step", "7", "births", "note"]
    assert lines[0].split()[0] == "empty" and lines[0].endswith("no step 7 (no steps)")
    assert lines[-1].startswith("1 of 4 simulations: ")
    as_csv = list(csv.reader(io.StringIO(run("compare", uneven, "--at", "7", "--csv").output)))
    assert as_csv[0][-1] == "note" and as_csv[-1][-1] == "no step 7 (steps 0-4)"


def test_compare_cli_table_footer_and_series(experiment):
    result = run("compare", experiment.path, "--metric", "total_agents", "--at", "max")
    assert result.exit_code == 0
    header, _, *lines = result.output.splitlines()
    assert header.split() == ["simulation_id", "max", "total_agents"]
    values = [int(line.split()[1]) for line in lines[:-1]]
    assert lines[-1].startswith(f"{len(legacy.ERAS)} of {len(legacy.ERAS)} simulations: mean ")
    assert f"min {min(values)}, max {max(values)}" in lines[-1]

    first, second = experiment.simulation_ids[:2]
    series = run("compare", experiment.path, "--metric", "births", "--series", "--simulation-id", first,
                 "--simulation-id", second, "--csv")
    rows = list(csv.reader(io.StringIO(series.output)))
    assert rows[0] == ["step_number", first, second]
    expected = [source_rows(experiment.source(s), "SELECT births FROM simulation_steps ORDER BY step_number")
                for s in (first, second)]
    assert rows[1:] == [[str(step), str(a), str(b)] for step, ((a,), (b,)) in enumerate(zip(*expected))]
    as_json = json.loads(run("compare", experiment.path, "--metric", "births", "--series", "--json").output)
    assert [s["simulation_id"] for s in as_json["series"]] == experiment.simulation_ids
    assert as_json["series"][0]["steps"] == list(range(SMALL["steps"]))


def test_unknown_metric_lists_the_valid_ones(experiment):
    with ExperimentQueryTool(experiment.path) as tool:
        with pytest.raises(UnknownMetric) as caught:
            tool.compare_metric("happiness")
        assert "total_agents" in caught.value.valid and "average_reward" in caught.value.valid
        assert "agent_type_counts" not in caught.value.valid  # JSON, not a number
    result = run("compare", experiment.path, "--metric", "happiness")
    assert result.exit_code == 1
    assert result.output.startswith("Error: unknown metric 'happiness'; valid metrics: total_agents, ")
    assert len(result.output.splitlines()) == 1


@pytest.mark.parametrize("at", ["last", "-3", "1.5"])
def test_bad_at_is_one_line(experiment, at):
    result = run("compare", experiment.path, "--at", at)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: --at {at!r}: ")


def test_plot_is_a_png_with_one_line_per_simulation(experiment, tmp_path):
    out = tmp_path / "charts" / "agents.png"
    with ExperimentQueryTool(experiment.path) as tool:
        figure = tool.plot_metric("total_agents", out)
    (axes,) = figure.axes
    assert len(axes.lines) == len(legacy.ERAS)
    assert sorted(line.get_label() for line in axes.lines) == experiment.simulation_ids
    assert list(axes.lines[0].get_xdata()) == list(range(SMALL["steps"]))
    assert png_size(out) == (1000, 600)
    assert not list(tmp_path.glob("charts/*.partial"))

    result = run("compare", experiment.path, "--plot", tmp_path / "cli.png",
                 "--simulation-id", experiment.simulation_ids[0])
    assert result.exit_code == 0
    (said,) = [line for line in result.output.splitlines() if line.startswith("wrote ")]
    assert said == f"wrote {tmp_path / 'cli.png'}: total_agents per step, {experiment.path} (1 simulation)"
    assert png_size(tmp_path / "cli.png") == (1000, 600)


def test_plot_without_matplotlib_says_how_to_install_it(experiment, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # what an absent package looks like to import
    with ExperimentQueryTool(experiment.path) as tool:
        with pytest.raises(MissingDependency):
            tool.plot_metric("total_agents", tmp_path / "x.png")
    result = run("compare", experiment.path, "--plot", tmp_path / "x.png")
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "Error: --plot needs matplotlib, which is not installed: pip install 'farm-merge[plot]'")
    assert not (tmp_path / "x.png").exists()


# --- experiments sharing a database ------------------------------------------------------------

def test_experiment_id_restricts_every_answer(tmp_path, backend):
    target = backend.target("shared")
    build_experiment(tmp_path / "a", ["2024-12", "2025-11"], experiment_id="exp_a", target=target)
    build_experiment(tmp_path / "b", ["2025-03"], experiment_id="exp_b", seed=5, target=target)
    with ExperimentQueryTool(target, experiment_id="exp_b") as tool:
        (only,) = tool.list_records()
        assert [s["simulation_id"] for s in tool.summary_records()] == [only["simulation_id"]]
        assert len(tool.compare_metric("total_agents")) == 1
        assert set(tool.frame("simulation_steps", steps=slice(2, 4)).simulation_id) == {only["simulation_id"]}
        assert [g["simulations"] for g in tool.summary_by(["seed"])] == [1]
        info = tool.get_experiment_info()
        assert (info["experiment_id"], info["simulations"]["total"], info["sources"]["count"]) == ("exp_b", 1, 1)
        assert info["tables"]["simulation_steps"] == SMALL["steps"]
        with pytest.raises(SimulationNotFound):
            tool.summary_records(tool.simulation_ids(None)[0] + "x")
    with ExperimentQueryTool(target) as tool:
        assert len(tool.list_records()) == 3
    with pytest.raises(ExperimentNotFound, match=r"no experiment 'exp_c' in .*; it holds 'exp_a', 'exp_b'"):
        ExperimentQueryTool(target, experiment_id="exp_c")
    result = run("summary", target, "--experiment-id", "exp_a", "--json")
    assert len(json.loads(result.output)) == 2


# --- errors ----------------------------------------------------------------------------------

#: name (the command, then what tells the form apart) -> the arguments after the database.
COMMANDS = {
    "info": [], "list": [], "summary": [], "compare": ["--metric", "total_agents"],
    "export": ["--all", "--output", "OUT"], "split": ["--output", "OUT"],
    "summary --by": ["--by", "learning_rate"], "compare --by": ["--metric", "total_agents", "--by", "learning_rate"],
    "compare --plot": ["--series", "--plot", "OUT/series.png"],
    "export parquet": ["--all", "--format", "parquet", "--output", "OUT"],
}


def _text_file(path: Path) -> None:
    path.write_text("step,agents\n1,20\n")


def _garbage_after_header(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + b"\x13" * 4000)


def _legacy_run_file(path: Path) -> None:
    from farm_merge import samples
    samples.write_run_file(path, "2024-12", seed=3, **SMALL)


def _old_revision(path: Path) -> None:
    path.write_bytes(b"")  # upgrade makes a new database out of an empty file
    inplace.upgrade(str(path), "0002_simulation_keys", backup=False)


def _previous_head(path: Path) -> None:
    path.write_bytes(b"")
    inplace.upgrade(str(path), "0004_fractional_ages", backup=False)  # the head before 0005: databases made by then


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _symlink_loop(path: Path) -> None:
    back = path.with_name(path.stem + "_back.db")
    path.symlink_to(back)
    back.symlink_to(path)


BAD_DATABASES = {
    "no_such_file": (None, "{path}: no such file"),
    "symlink_loop": (_symlink_loop, "{path}: a loop of symbolic links that never reaches a file"),
    "text_file": (_text_file, "{path} is not a farm-merge experiment database (not a SQLite database)"),
    "garbage": (_garbage_after_header, "{path} is not a farm-merge experiment database (file is not a database)"),
    "empty": (_empty, "{path} is not a farm-merge experiment database (empty database)"),
    "legacy_run_file": (_legacy_run_file,
                        "{path} is not a farm-merge experiment database (a legacy AgentFarm run file of era 2024-12); "
                        "merge it into a new experiment database, which leaves it as it is: farm-merge merge {path} "
                        "--into NEW.db (or make it one in place, rewriting it: farm-merge upgrade {path})"),
    "old_revision": (_old_revision, "{path} is at schema revision 0002_simulation_keys, this release needs "
                                    "0005_ledger_source_simulations; run: farm-merge upgrade {path}"),
    "previous_head": (_previous_head, "{path} is at schema revision 0004_fractional_ages, this release needs "
                                      "0005_ledger_source_simulations; run: farm-merge upgrade {path}"),
}


@pytest.fixture(scope="module")
def bad_databases(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    made = {}
    for kind, (make, _) in BAD_DATABASES.items():
        path = folder / f"{kind}.db"
        if make:
            make(path)
        made[kind] = path
    return made


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("kind", list(BAD_DATABASES))
def test_every_command_refuses_a_bad_database_in_one_line(command, kind, bad_databases, tmp_path):
    path = bad_databases[kind]
    before = path.read_bytes() if path.exists() else None
    args = [a.replace("OUT", str(tmp_path / "out")) for a in COMMANDS[command]]
    result = run(command.split()[0], path, *args)
    assert result.exit_code == 1
    assert result.output == "Error: " + BAD_DATABASES[kind][1].format(path=path) + "\n"
    assert (path.read_bytes() if path.exists() else None) == before  # reading never writes
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def bad_server_databases(pg_server) -> dict[str, str]:
    """URL -> the start of the one line every command answers with."""
    missing = pg_server.url_of("farm_merge_test_no_such_database")
    silent = "postgresql+psycopg://postgres@127.0.0.1:1/farm"  # nothing listens on port 1
    empty, old, previous = pg_server.create(), pg_server.create(), pg_server.create()
    inplace.upgrade(old, "0002_simulation_keys", backup=False)
    inplace.upgrade(previous, "0004_fractional_ages", backup=False)
    yield {
        missing: f"cannot connect to {missing}: connection failed: ",
        silent: f"cannot connect to {silent}: connection failed: ",
        empty: f"{empty} is not a farm-merge experiment database (empty database)\n",
        old: f"{old} is at schema revision 0002_simulation_keys, this release needs 0005_ledger_source_simulations; "
             f"run: farm-merge upgrade {old}\n",
        previous: f"{previous} is at schema revision 0004_fractional_ages, this release needs "
                  f"0005_ledger_source_simulations; run: farm-merge upgrade {previous}\n",
    }
    assert versions.state_of(empty).kind == "new"  # reading never writes
    for url in (empty, old, previous):
        pg_server.drop(url)


@pytest.mark.postgres
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_refuses_a_bad_server_database_in_one_line(command, bad_server_databases, tmp_path):
    """No such database, nothing listening, a database without our tables, an older revision."""
    for url, message in bad_server_databases.items():
        args = [a.replace("OUT", str(tmp_path / "out")) for a in COMMANDS[command]]
        result = run(command.split()[0], url, *args)
        assert result.exit_code == 1, result.output
        assert result.output.startswith("Error: " + message), result.output
        assert len(result.output.splitlines()) == 1
        assert not (tmp_path / "out").exists()


def test_library_errors_are_farm_merge_errors(bad_databases):
    for kind, error in [("no_such_file", FarmMergeError), ("symlink_loop", DatabaseNotFound),
                        ("legacy_run_file", NotAnExperimentDatabase),
                        ("old_revision", SchemaOutOfDate), ("previous_head", SchemaOutOfDate)]:
        with pytest.raises(error):
            ExperimentQueryTool(bad_databases[kind])


# --- the seed's script -------------------------------------------------------------------------

@pytest.mark.parametrize("experiment", ["sqlite"], indirect=True)  # a thin script over the same commands
def test_seed_script_form_runs_the_same_commands(experiment, tmp_path):
    script = REPO / "scripts" / "query_experiment.py"
    summary = subprocess.run([sys.executable, str(script), str(experiment.path), "--command", "summary"],
                             capture_output=True, text=True)
    assert summary.returncode == 0, summary.stderr
    assert summary.stdout == run("summary", experiment.path).output
    sim = experiment.simulation_ids[0]
    exported = subprocess.run([sys.executable, str(script), str(experiment.path), "--command", "export",
                               "--simulation-id", sim, "--output", str(tmp_path / "data")],
                              capture_output=True, text=True)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "data" / "simulation_steps.csv").exists()
    missing = subprocess.run([sys.executable, str(script), str(tmp_path / "nope.db"), "--command", "info"],
                             capture_output=True, text=True)
    assert missing.returncode == 1
    assert missing.stderr == f"Error: {tmp_path / 'nope.db'}: no such file\n"


def test_seed_methods_answer_like_the_seed(experiment):
    """DataFrames where the seed's tool returned them, dicts for the final state and the info."""
    sim = experiment.simulation_ids[-1]
    source = experiment.source(sim)
    with ExperimentQueryTool(str(experiment.path)) as tool:
        pivot = tool.compare_simulations("total_agents")
        assert (pivot.index.name, pivot.columns.name) == ("step_number", "simulation_id")
        assert list(pivot.index) == list(range(SMALL["steps"]))
        assert sorted(pivot.columns) == experiment.simulation_ids
        assert list(pivot[sim]) == [v for (v,) in source_rows(
            source, "SELECT total_agents FROM simulation_steps ORDER BY step_number")]
        over_time = tool.get_agent_counts_over_time([sim])
        assert list(over_time.columns) == ["simulation_id", "step_number", "total_agents"]
        assert list(over_time["total_agents"]) == list(pivot[sim])
        final = tool.get_final_state(sim)
        assert {"simulation_id", "final_step", "total_agents", "total_resources", "average_health",
                "average_resources", "total_births", "total_deaths", "agent_distribution"} <= set(final)
        assert final["final_step"] == SMALL["steps"] - 1
        assert (final["total_births"], final["total_deaths"]) == source_rows(
            source, "SELECT births, deaths FROM simulation_steps WHERE step_number = ?", (SMALL["steps"] - 1,))[0]
        assert sum(final["agent_distribution"].values()) == source_value(
            source, "SELECT count(*) FROM agent_states WHERE step_number = ?", (SMALL["steps"] - 1,))
        types = tool.get_agent_types_distribution(sim)
        assert list(types.columns) == ["agent_type", "count"]
        assert list(types.itertuples(index=False, name=None)) == source_rows(
            source, "SELECT agent_type, count(*) FROM agents GROUP BY 1 ORDER BY 1")
        listed = tool.list_simulations()
        assert {"simulation_id", "status", "start_time", "end_time", "parameters", "results_summary"} <= set(listed)
        assert list(listed["simulation_id"]) == experiment.simulation_ids
        summary = tool.get_simulation_summary()
        assert {"simulation_id", "total_steps", "avg_agents", "max_agents", "min_agents", "avg_resources",
                "total_births", "total_deaths"} <= set(summary)
        assert list(summary["total_steps"]) == [SMALL["steps"]] * len(experiment.simulation_ids)
        assert tool.get_experiment_info()["experiment_id"] == "exp_001"


def test_questions_can_be_asked_while_a_series_streams(experiment):
    """Each question gets a connection of its own, even inside another one's iteration."""
    with ExperimentQueryTool(experiment.path) as tool:
        finals = {sim: tool.get_final_state(sim)["total_agents"]
                  for sim, step, _ in tool.metric_series("total_agents") if step == 0}
        assert finals == {r["simulation_id"]: r["value"] for r in tool.compare_metric("total_agents")}


@pytest.mark.parametrize("experiment", ["sqlite"], indirect=True)  # the file's bytes are the evidence
def test_read_only_queries_leave_the_database_unchanged(experiment):
    con = sqlite3.connect(experiment.path)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    before = experiment.path.read_bytes()
    for command in ("info", "list", "summary", "compare"):
        assert run(command, experiment.path).exit_code == 0
    assert experiment.path.read_bytes() == before
