"""Analysis across simulations: DataFrames filtered in SQL, parameters as columns, sweeps
grouped by parameter (summary --by, compare --by) and the charts, on SQLite and PostgreSQL.

Every expected number is computed here from the source run files, with sqlite3 and
statistics, not through farm-merge.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import statistics
import subprocess
import sys

import pytest
from click.testing import CliRunner
from sqlalchemy import event

from conftest import SMALL, write_runs
from farm_merge import ExperimentQueryTool, consolidate
from farm_merge.cli import cli
from farm_merge.errors import FarmMergeError, MissingDependency, SimulationNotFound, UnknownName
from query_helpers import experiment, png_size, source_config, source_rows  # noqa: F401

pd = pytest.importorskip("pandas")  # the test extra installs it; CI runs these


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def learning_rates(experiment) -> dict[str, float]:
    return {sim: source_config(experiment.source(sim))["learning_rate"] for sim in experiment.simulation_ids}


def groups_by_learning_rate(experiment) -> dict[float, list[str]]:
    groups: dict[float, list[str]] = {}
    for sim, rate in learning_rates(experiment).items():
        groups.setdefault(rate, []).append(sim)
    return dict(sorted(groups.items()))


def source_figures(path) -> dict[str, float]:
    """A run file's summary figures, read with sqlite3."""
    metrics = ["total_agents", "total_resources", "average_agent_health", "average_agent_resources", "average_reward"]
    (last,) = source_rows(path, "SELECT max(step_number) FROM simulation_steps")[0]
    final = source_rows(path, f"SELECT {', '.join(metrics)} FROM simulation_steps WHERE step_number = ?", (last,))[0]
    aggregates = source_rows(path, "SELECT count(*), " + ", ".join(f"max({m})" for m in metrics)
                             + ", sum(births), sum(deaths), avg(total_agents), min(total_agents), avg(total_resources) "
                               "FROM simulation_steps")[0]
    names = (["total_steps", *[f"peak_{m}" for m in metrics], "total_births", "total_deaths", "avg_agents",
              "min_agents", "avg_resources"])
    return {**{f"final_{m}": v for m, v in zip(metrics, final)}, **dict(zip(names, aggregates))}


def expected_spread(values: list[float]) -> dict[str, float | None]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values), "max": max(values)}


def close(actual, expected) -> bool:
    if expected is None:
        return actual is None
    return actual == pytest.approx(expected, rel=1e-9, abs=1e-4)  # summary rounds avg_* to 4 decimals


# --- DataFrames ----------------------------------------------------------------------------

def test_frame_reads_only_the_rows_asked_for_in_sql(experiment):
    first, second = experiment.simulation_ids[:2]
    statements = []
    with ExperimentQueryTool(experiment.path) as tool:
        # Every statement sent: through SQLAlchemy, or (SQLite) on the sqlite3 connection itself.
        event.listen(tool.engine, "before_cursor_execute",
                     lambda conn, cursor, statement, *rest: statements.append(statement))
        if experiment.backend == "sqlite":
            tool.engine.dispose()
            event.listen(tool.engine, "connect", lambda raw, record: raw.set_trace_callback(statements.append))
        frame = tool.frame("agent_states", [second, first], columns=["step_number", "agent_id", "current_health"],
                           steps=range(3, 6))
    assert list(frame.columns) == ["simulation_id", "step_number", "agent_id", "current_health"]
    expected = []
    for sim in sorted([first, second]):
        rows = source_rows(experiment.source(sim), "SELECT step_number, agent_id, current_health FROM agent_states "
                                                   "WHERE step_number BETWEEN 3 AND 5")
        expected += sorted((sim, step, str(agent), health) for step, agent, health in rows)
    got = sorted((s, int(step), str(agent), health) for s, step, agent, health in frame.itertuples(index=False))
    assert got == expected and len(expected) > 0
    (select,) = {s for s in statements if "FROM agent_states" in s}
    assert "simulation_id IN (" in select and "step_number >=" in select and "step_number <" in select


def test_frame_of_a_whole_table_has_every_column_and_row(experiment):
    with ExperimentQueryTool(experiment.path) as tool:
        frame = tool.frame("simulation_steps")
        assert frame.columns[0] == "simulation_id"
        assert {"step_number", "total_agents", "average_reward", "births"} <= set(frame.columns)
        assert len(frame) == len(experiment.simulation_ids) * SMALL["steps"]
        sim = experiment.simulation_ids[3]
        mine = frame[frame.simulation_id == sim]
        assert list(mine.total_agents) == [v for (v,) in source_rows(
            experiment.source(sim), "SELECT total_agents FROM simulation_steps ORDER BY step_number")]
        assert list(tool.frame("simulation_steps", steps=5).step_number) == [5] * len(experiment.simulation_ids)
        assert sorted(set(tool.frame("simulation_steps", steps=[0, 7]).step_number)) == [0, 7]
        assert min(tool.frame("simulation_steps", [sim], steps=slice(9, None)).step_number) == 9
        empty = tool.frame("simulation_steps", [sim], columns=["births"], steps=SMALL["steps"] + 5)
        assert list(empty.columns) == ["simulation_id", "births"] and len(empty) == 0
        simulations = tool.frame("simulations")
        assert list(simulations.simulation_id) == experiment.simulation_ids
        # Values as the column types give them, on SQLite as on PostgreSQL: times, JSON parsed.
        assert str(simulations.start_time.dtype).startswith("datetime64")
        assert all(isinstance(p, dict) for p in simulations.parameters)
        counts = tool.frame("simulation_steps", columns=["agent_type_counts"]).agent_type_counts
        assert all(v is None or isinstance(v, dict) for v in counts) and any(isinstance(v, dict) for v in counts)


@pytest.mark.parametrize("call, error, message", [
    (lambda t: t.frame("nope"), UnknownName,
     "unknown table 'nope'; valid tables: simulations, simulation_config, agents, "),
    (lambda t: t.frame("agents", columns=["agent_id", "mood"]), UnknownName,
     "unknown agents column 'mood'; valid agents columns: simulation_id, agent_id, "),
    (lambda t: t.frame("agents", steps=3), FarmMergeError, "steps=3: agents has no step_number column"),
    (lambda t: t.frame("simulation_steps", steps="3"), FarmMergeError, "steps='3': give a step number"),
    (lambda t: t.frame("simulation_steps", steps=range(0, 9, 2)), None, None),
    (lambda t: t.frame("simulation_steps", ["sim_nope"]), SimulationNotFound, "no simulation 'sim_nope'"),
])
def test_frame_refuses_what_the_database_does_not_hold(experiment, call, error, message):
    with ExperimentQueryTool(experiment.path) as tool:
        if error is None:
            assert sorted(set(call(tool).step_number)) == [0, 2, 4, 6, 8]
            return
        with pytest.raises(error) as caught:
            call(tool)
    assert str(caught.value).startswith(message)


def test_parameters_are_one_column_each_and_merge_onto_any_frame(experiment):
    with ExperimentQueryTool(experiment.path) as tool:
        parameters = tool.parameters()
        steps = tool.frame("simulation_steps", columns=["step_number", "total_agents"])
    assert list(parameters.simulation_id) == experiment.simulation_ids
    assert "parameters" not in parameters.columns
    for values in parameters.itertuples(index=False):
        row = dict(zip(parameters.columns, values))
        config = source_config(experiment.source(row["simulation_id"]))
        assert row["params.learning_rate"] == config["learning_rate"]
        assert row["params.agent_parameters.SystemAgent.gamma"] == config["agent_parameters"]["SystemAgent"]["gamma"]
        assert row["params.agent_parameters.SystemAgent.memory"] == config["agent_parameters"]["SystemAgent"]["memory"]
    merged = steps.merge(parameters, on="simulation_id")
    assert len(merged) == len(steps) and "total_agents_x" not in merged.columns  # no clash, no suffixes
    final = merged[merged.step_number == SMALL["steps"] - 1].groupby("params.learning_rate").total_agents.mean()
    expected = {rate: statistics.fmean(source_rows(experiment.source(s), "SELECT total_agents FROM simulation_steps "
                                                   "WHERE step_number = ?", (SMALL["steps"] - 1,))[0][0] for s in sims)
                for rate, sims in groups_by_learning_rate(experiment).items()}
    assert final.to_dict() == pytest.approx(expected)


def test_dataframes_without_pandas_say_how_to_install_it(experiment, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # what an absent package looks like to import
    with ExperimentQueryTool(experiment.path) as tool:
        for call, name in [(lambda: tool.frame("agents"), "frame()"), (tool.list_simulations, "list_simulations()"),
                           (tool.parameters, "parameters()"),
                           (tool.get_simulation_summary, "get_simulation_summary()")]:
            with pytest.raises(MissingDependency) as caught:
                call()
            assert str(caught.value) == f"{name} needs pandas, which is not installed: " \
                                        "pip install 'farm-merge[analysis]'"
        assert len(tool.summary_records()) == len(experiment.simulation_ids)  # the records need no pandas
    assert run("summary", experiment.path, "--by", "learning_rate").exit_code == 0


@pytest.mark.parametrize("experiment", ["sqlite"], indirect=True)  # what a process imports
def test_the_command_line_needs_no_pandas(experiment):
    code = ("import sys\nfrom farm_merge.cli import cli\n"
            "for args in (['list', '--json'], ['summary', '--csv'], ['summary', '--by', 'learning_rate'],\n"
            "             ['compare', '--by', 'learning_rate', '--json']):\n"
            "    try:\n        cli.main(args=[args[0], sys.argv[1], *args[1:]], prog_name='farm-merge')\n"
            "    except SystemExit as e:\n        assert not e.code, args\n"
            "print(' '.join(sorted(sys.modules)), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, str(experiment.path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "params.learning_rate" in result.stdout
    assert sorted(m for m in result.stderr.split() if m.startswith(("pandas", "pyarrow", "numpy"))) == []


# --- parameters as columns in list and summary ---------------------------------------------

@pytest.mark.parametrize("command", ["list", "summary"])
def test_csv_and_json_carry_each_parameter_as_its_own_column(experiment, command):
    rates = learning_rates(experiment)
    as_csv = list(csv.DictReader(io.StringIO(run(command, experiment.path, "--csv").output)))
    as_json = json.loads(run(command, experiment.path, "--json").output)
    for rows in (as_csv, as_json):
        assert "parameters" not in rows[0]
        assert {r["simulation_id"]: float(r["params.learning_rate"]) for r in rows} == rates
        assert [float(r["params.agent_parameters.ControlAgent.epsilon"]) for r in rows] == [0.1] * len(rates)
    assert as_csv[0].keys() == as_json[0].keys()
    fixed = [k for k in as_json[0] if not k.startswith("params.")]
    assert fixed[0] == "simulation_id" and not any("." in k for k in fixed)


# --- summary --by --------------------------------------------------------------------------

def test_summary_by_gives_each_groups_count_and_spread(experiment):
    figures = {sim: source_figures(experiment.source(sim)) for sim in experiment.simulation_ids}
    groups = groups_by_learning_rate(experiment)
    assert max(len(g) for g in groups.values()) > 1 and min(len(g) for g in groups.values()) == 1
    result = run("summary", experiment.path, "--by", "learning_rate", "--json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.output)
    assert [r["params.learning_rate"] for r in records] == list(groups)
    for record, members in zip(records, groups.values()):
        assert record["simulations"] == len(members)
        for figure in figures[members[0]]:
            expected = expected_spread([figures[s][figure] for s in members])
            for statistic, value in expected.items():
                assert close(record[f"{figure}_{statistic}"], value), (figure, statistic)
    with ExperimentQueryTool(experiment.path) as tool:
        assert tool.summary_by(["params.learning_rate"]) == records  # the prefixed name works too


def test_summary_by_table_shows_mean_and_sd_per_group(experiment):
    from farm_merge.query.views import mean_sd  # only how a cell is written; the numbers are computed here

    groups = groups_by_learning_rate(experiment)
    result = run("summary", experiment.path, "--by", "learning_rate")
    assert result.exit_code == 0
    header, rule, *lines = result.output.splitlines()
    assert header.split() == ["learning_rate", "simulations", "steps", "final_agents", "peak_agents",
                              "final_resources", "peak_resources", "final_health", "peak_health", "final_reward",
                              "births", "deaths"]
    note = lines.pop()
    assert note.startswith("each figure: mean ± sample sd over the group's simulations")
    assert len(lines) == len(groups)
    for line, (rate, members) in zip(lines, groups.items()):
        births = [source_rows(experiment.source(s), "SELECT sum(births) FROM simulation_steps")[0][0] for s in members]
        cells = line.split()
        assert (float(cells[0]), int(cells[1])) == (rate, len(members))
        steps = f"{SMALL['steps']} ± 0" if len(members) > 1 else str(SMALL["steps"])
        births_cell = mean_sd(statistics.fmean(births), statistics.stdev(births) if len(births) > 1 else None)
        assert f"  {steps}  " in line and f"  {births_cell}  " in line


def test_summary_by_two_parameters_has_a_group_per_combination(experiment):
    records = json.loads(run("summary", experiment.path, "--by", "learning_rate,seed", "--json").output)
    pairs = sorted((source_config(experiment.source(s))["learning_rate"], source_config(experiment.source(s))["seed"])
                   for s in experiment.simulation_ids)
    assert [(r["params.learning_rate"], r["params.seed"]) for r in records] == pairs
    assert all(r["simulations"] == 1 and r["total_births_sd"] is None for r in records)
    rows = list(csv.DictReader(io.StringIO(run("summary", experiment.path, "--by", "seed", "--by", "learning_rate",
                                               "--csv").output)))
    assert list(rows[0])[:3] == ["params.seed", "params.learning_rate", "simulations"]


def without_learning_rate(run_file) -> None:
    """Take ``learning_rate`` out of a run file's configuration, as a run written before
    the simulator had it would lack it."""
    con = sqlite3.connect(run_file)
    try:
        (config,) = con.execute("SELECT config_data FROM simulation_config").fetchone()
        config = json.loads(config)
        del config["learning_rate"]
        con.execute("UPDATE simulation_config SET config_data = ?", (json.dumps(config),))
        con.commit()
    finally:
        con.close()


@pytest.mark.parametrize("command", [["summary"], ["compare", "--metric", "total_agents"]])
def test_a_group_without_the_parameter_keeps_the_numbers_right_aligned(tmp_path, backend, command):
    runs = write_runs(tmp_path / "runs", ["2025-11"] * 4, steps=4)
    without_learning_rate(runs[0].path)
    target = backend.target()
    assert consolidate.merge([str(r.path) for r in runs], target, progress=False).exit_code == 0
    rates = sorted({source_config(r.path)["learning_rate"] for r in runs[1:]})
    result = run(command[0], target, *command[1:], "--by", "learning_rate")
    assert result.exit_code == 0, result.output
    header, rule, *lines = result.output.splitlines()
    width = len(rule.split()[0])
    cells = [line[:width] for line in lines[:len(rates) + 1]]
    assert cells == [str(rate).rjust(width) for rate in rates] + ["(none)".rjust(width)]  # (none) last


@pytest.mark.parametrize("args", [["summary", "--by", "lr"], ["compare", "--by", "learning_rate,nope"]])
def test_an_unknown_parameter_is_one_line_naming_the_valid_ones(experiment, args):
    result = run(args[0], experiment.path, *args[1:])
    assert result.exit_code == 1
    bad = args[-1].split(",")[-1]
    assert result.output.startswith(f"Error: unknown parameter {bad!r}; valid parameters: seed, max_steps, ")
    assert "learning_rate" in result.output and "agent_parameters.SystemAgent.gamma" in result.output
    assert len(result.output.splitlines()) == 1


# --- compare --by --------------------------------------------------------------------------

@pytest.mark.parametrize("at, sql", [
    ("final", "SELECT total_agents FROM simulation_steps ORDER BY step_number DESC LIMIT 1"),
    ("max", "SELECT max(total_agents) FROM simulation_steps"),
    ("4", "SELECT total_agents FROM simulation_steps WHERE step_number = 4"),
])
def test_compare_by_gives_the_metric_per_group_with_its_spread(experiment, at, sql):
    groups = groups_by_learning_rate(experiment)
    records = json.loads(run("compare", experiment.path, "--metric", "total_agents", "--at", at,
                             "--by", "learning_rate", "--json").output)
    assert [r["params.learning_rate"] for r in records] == list(groups)
    for record, members in zip(records, groups.values()):
        values = [source_rows(experiment.source(s), sql)[0][0] for s in members]
        assert (record["simulations"], record["with_value"]) == (len(members), len(values))
        for statistic, value in expected_spread(values).items():
            assert close(record[statistic], value), statistic
    table = run("compare", experiment.path, "--metric", "total_agents", "--at", at, "--by", "learning_rate")
    header = table.output.splitlines()[0].split()
    label = at if at != "4" else "step 4"
    assert header == ["learning_rate", "simulations", "with_value", "mean", *label.split(), "total_agents", "sd",
                      "min", "max"]


def test_compare_by_does_not_apply_to_series(experiment):
    result = run("compare", experiment.path, "--series", "--by", "learning_rate")
    assert result.exit_code == 2
    assert "--by groups the metric at --at; it does not apply to --series" in result.output


# --- charts --------------------------------------------------------------------------------

def test_grouped_chart_has_a_colour_legend_entry_and_mean_per_group(experiment, tmp_path):
    pytest.importorskip("matplotlib")
    groups = groups_by_learning_rate(experiment)
    out = tmp_path / "grouped.png"
    result = run("compare", experiment.path, "--metric", "total_agents", "--by", "learning_rate", "--plot", out)
    assert result.exit_code == 0, result.output
    assert png_size(out) == (1000, 600)
    with ExperimentQueryTool(experiment.path) as tool:
        figure = tool.plot_metric("total_agents", tmp_path / "again.png", by=["learning_rate"])
    (axes,) = figure.axes
    legend = axes.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [
        f"learning_rate={rate} ({len(m)} simulation{'s' if len(m) > 1 else ''})" for rate, m in groups.items()]
    assert legend.get_title().get_text() == "line: mean, band: ± 1 sd"
    assert "band: mean ± 1 sample sd" in axes.get_title()
    assert len(axes.lines) == len(groups) and len(axes.collections) == len(groups)  # a mean and a band each
    assert len({line.get_color() for line in axes.lines}) == len(groups)
    for line, members in zip(axes.lines, groups.values()):
        per_step = [[v for (v,) in source_rows(experiment.source(s), "SELECT total_agents FROM simulation_steps "
                                                                     "ORDER BY step_number")] for s in members]
        assert list(line.get_ydata()) == pytest.approx([statistics.fmean(step) for step in zip(*per_step)])


def test_many_simulations_without_by_are_grey_lines_under_their_mean(tmp_path, backend):
    pytest.importorskip("matplotlib")
    runs = write_runs(tmp_path / "runs", ["2025-11"] * 12, steps=6)
    target = backend.target()
    assert consolidate.merge([str(r.path) for r in runs], target, progress=False).exit_code == 0
    with ExperimentQueryTool(target) as tool:
        figure = tool.plot_metric("total_agents", tmp_path / "many.png")
    (axes,) = figure.axes
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["each simulation (12)",
                                                                     "mean of the 12 simulations"]
    *each, mean = axes.lines
    assert len(each) == 12 and {line.get_color() for line in each} == {"0.55"}
    per_step = [[v for (v,) in source_rows(r.path, "SELECT total_agents FROM simulation_steps ORDER BY step_number")]
                for r in runs]
    assert list(mean.get_ydata()) == pytest.approx([statistics.fmean(step) for step in zip(*per_step)])
    assert png_size(tmp_path / "many.png") == (1000, 600)

    # More groups than colours: an ordered colour map, and a bar naming the values instead of a legend.
    with ExperimentQueryTool(target) as tool:
        figure = tool.plot_metric("total_agents", tmp_path / "by_seed.png", by=["seed"])
    axes, bar = figure.axes
    assert axes.get_legend() is None and len(axes.lines) == 12
    assert bar.get_ylabel() == "seed (12 groups; line: mean, band: ± 1 sd)"
    seeds = sorted(source_config(r.path)["seed"] for r in runs)
    assert [t.get_text() for t in bar.get_yticklabels()][0] == str(seeds[0])
    assert [t.get_text() for t in bar.get_yticklabels()][-1] == str(seeds[-1])
    assert png_size(tmp_path / "by_seed.png") == (1000, 600)
