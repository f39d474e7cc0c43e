"""``farm-merge serve`` as a person uses it: the real command in a child process on a free
port, its pages and their JSON read over HTTP, a simulation logging while it runs, Ctrl-C."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from collections import defaultdict

import pytest
from click.testing import CliRunner
from markupsafe import escape

from conftest import SMALL, sha256
from farm_merge import samples
from farm_merge.cli import cli
from farm_merge.ui import queries, serve
from farm_merge.ui.pages import status_label
from serving import DEAD_ID, SCRIPT_ID, LiveExperiment, Server

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def experiment(_runs_template, tmp_path_factory):
    live = LiveExperiment(_runs_template, tmp_path_factory.mktemp("serve") / "exp.db")
    yield live
    live.close()


@pytest.fixture(scope="module")
def server(experiment):
    running = Server(experiment.path)
    yield running
    running.stop(signal.SIGKILL)


def cli_json(*args: str):
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


# --- the experiment page ----------------------------------------------------------------
def test_the_experiment_page_lists_every_simulation_with_the_status_list_gives(server, experiment):
    listed = cli_json("list", str(experiment.path))
    expected = {r["simulation_id"]: f"{r['status']} (stale)" if r["stale"] else r["status"] for r in listed}
    assert expected[DEAD_ID] == "running (stale)" and expected[SCRIPT_ID] == "running"

    rows = server.rows("simulations")
    assert {r["simulation_id"]: r["status"] for r in rows} == expected
    assert {r["simulation_id"]: (r["steps"], r["agents_ever"], r["era"]) for r in rows} == {
        r["simulation_id"]: (r["steps"], r["agents_ever"], r["era"]) for r in listed}

    status, page = server.get("/")
    assert status == 200
    for simulation_id, shown in expected.items():
        assert f'<tr data-simulation-id="{escape(simulation_id)}">' in page
        assert f'data-status="{shown}">{shown}</td>' in page
    assert "<dt>experiment_id</dt><dd>exp</dd>" in page


def test_a_simulation_id_that_is_markup_is_shown_as_text(server):
    status, page = server.get("/")
    assert status == 200
    assert "<script>alert(" not in page
    assert escape(SCRIPT_ID) in page
    status, own = server.get("/-/simulations/" + urllib.parse.quote(SCRIPT_ID, safe=""))
    assert status == 200, own
    assert "<script>alert(" not in own and f"<h1>{escape(SCRIPT_ID)}</h1>" in own


@pytest.mark.parametrize("by", ["", "learning_rate"])
def test_the_chart_data_is_what_compare_series_prints(server, experiment, by):
    printed = cli_json("compare", str(experiment.path), "--metric", "total_agents", "--series")
    expected = {s["simulation_id"]: list(zip(s["steps"], s["values"])) for s in printed["series"] if s["steps"]}

    series = defaultdict(list)
    groups = {}
    for row in server.rows("metric_series", metric="total_agents", by=by):
        series[row["simulation_id"]].append((row["step_number"], row["value"]))
        groups[row["simulation_id"]] = row["group"]
    assert dict(series) == expected

    parameters = {r["simulation_id"]: r for r in cli_json("list", str(experiment.path))}
    assert groups == {sim: str(parameters[sim]["params.learning_rate"]) if by else sim for sim in expected}


def test_the_final_values_are_what_compare_prints(server, experiment):
    printed = cli_json("compare", str(experiment.path), "--metric", "average_reward")
    final = server.rows("final_values", metric="average_reward", by="learning_rate")
    assert {r["simulation_id"]: (r["step"], r["value"]) for r in final} == {
        r["simulation_id"]: (r["step"], r["value"]) for r in printed}


def test_births_and_deaths_are_summed_over_simulations_per_step(server, experiment):
    with sqlite3.connect(experiment.path) as con:
        expected = con.execute("SELECT step_number, sum(births), sum(deaths) FROM simulation_steps "
                               "GROUP BY step_number ORDER BY step_number").fetchall()
    assert [(r["step"], r["births"], r["deaths"]) for r in server.rows("births_deaths")] == expected


def test_the_page_offers_every_metric_and_the_parameters_that_vary(server):
    status, page = server.get("/?metric=average_reward")
    assert status == 200
    assert '<option value="average_reward" selected>' in page
    assert '<option value="learning_rate" selected>' in page  # the sweep's parameter, before the seeds
    parameters = server.rows("parameters")
    assert parameters[0]["parameter"] == "learning_rate" and parameters[0]["distinct_values"] > 1


# --- the page per simulation, the tables --------------------------------------------------
def test_a_simulation_page_shows_its_parameters_and_links_to_its_rows(server, experiment):
    simulation_id = next(r["simulation_id"] for r in server.rows("simulations") if r["era"] == "2025-09")
    status, page = server.get(f"/-/simulations/{simulation_id}")
    assert status == 200
    parameters = server.rows("simulation_parameters", simulation_id=simulation_id)
    assert {"learning_rate", "seed"} <= {p["parameter"] for p in parameters}
    tables = {t["table"]: t["rows"] for t in server.rows("simulation_tables", simulation_id=simulation_id)}
    assert tables["agents"] > 0 and tables["simulation_steps"] == SMALL["steps"]
    link = f'/{server.name}/agents?simulation_id={simulation_id}'
    assert f'href="{link}"' in page
    agents = server.json(f"{server.name}/agents.json", simulation_id=simulation_id, _shape="array", _size="max")
    assert len(agents) == tables["agents"] and {a["simulation_id"] for a in agents} == {simulation_id}
    population = server.rows("simulation_population", simulation_id=simulation_id)
    with sqlite3.connect(experiment.path) as con:
        states = con.execute("SELECT count(*) FROM agent_states WHERE simulation_id = ?", (simulation_id,)).fetchone()
    assert sum(p["agents"] for p in population) == states[0]


def test_an_unknown_simulation_is_not_found(server):
    status, page = server.get("/-/simulations/no_such_simulation")
    assert status == 404 and "no simulation &#39;no_such_simulation&#39;" in page


def test_every_table_has_simulation_id_as_a_facet_and_json_and_csv(server, experiment):
    with sqlite3.connect(experiment.path) as con:
        counts = dict(con.execute("SELECT simulation_id, count(*) FROM agents GROUP BY simulation_id"))
    facets = server.json(f"{server.name}/agents.json")["facet_results"]["simulation_id"]["results"]
    assert {f["value"]: f["count"] for f in facets} == counts
    status, csv_text = server.get(f"/{server.name}/simulations.csv?_size=max")
    assert status == 200 and csv_text.splitlines()[0].startswith("simulation_id,experiment_id,status")
    assert len(csv_text.splitlines()) == 1 + len(server.rows("simulations"))


# --- safe by default ----------------------------------------------------------------------
@pytest.mark.parametrize("sql", [
    "DELETE FROM simulations",
    "UPDATE simulations SET status = 'failed'",
    "INSERT INTO experiments (experiment_id) VALUES ('x')",
    "DROP TABLE agents",
    "PRAGMA journal_mode = DELETE",
    "ATTACH DATABASE '/tmp/farm-merge-attached.db' AS other",
])
def test_nothing_can_write(server, experiment, sql):
    before = sha256(experiment.path)
    status, body = server.get(f"/{server.name}.json?" + urllib.parse.urlencode({"sql": sql}))
    assert status == 400, body
    assert sha256(experiment.path) == before


def test_posting_to_a_query_writes_nothing_and_no_other_plugin_is_loaded(server, experiment):
    before = sha256(experiment.path)
    status, body = server.get(f"/{server.name}/simulations", data=b"simulation_id=x")
    assert (status, body) == (405, "farm-merge serve is read-only\n")
    assert sha256(experiment.path) == before
    plugins = server.json("-/plugins.json")
    assert [p["name"] for p in plugins] == ["farm_merge.ui.pages"]


def test_sql_is_time_limited(experiment):
    server = Server(experiment.path, "--sql-time-limit", "0.3")
    try:
        endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
        status, body = server.get(f"/{server.name}.json?" + urllib.parse.urlencode({"sql": endless}))
        assert status == 400 and "took too long" in body.lower()
        assert server.json("-/settings.json")["sql_time_limit_ms"] == 300
    finally:
        server.stop(signal.SIGKILL)


@pytest.mark.parametrize("address, loopback", [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                               ("0.0.0.0", False), ("192.168.1.5", False), ("::", False)])
def test_only_loopback_addresses_go_without_a_warning(address, loopback):
    assert serve.is_loopback_address(address) is loopback


# --- live sweeps --------------------------------------------------------------------------
def test_a_step_logged_while_serving_shows_without_a_restart(_runs_template, tmp_path):
    live = LiveExperiment(_runs_template, tmp_path / "live.db")
    server = Server(live.path)
    try:
        def steps():
            row = next(r for r in server.rows("simulations") if r["simulation_id"] == SCRIPT_ID)
            return row["steps"], [r["step_number"] for r in server.rows("metric_series", metric="total_agents", by="")
                                  if r["simulation_id"] == SCRIPT_ID]

        (database,) = server.json("-/databases.json")
        assert (database["is_mutable"], database["hash"]) == (True, None)  # read as it changes, not immutable
        assert steps() == (1, [0])
        live.log_another_step()
        live.log_another_step()
        assert steps() == (3, [0, 1, 2])
    finally:
        server.stop(signal.SIGKILL)
        live.close()


# --- starting and stopping ----------------------------------------------------------------
def test_ctrl_c_stops_the_server_cleanly(experiment):
    server = Server(experiment.path)
    assert server.get("/")[0] == 200
    code, out, err = server.stop(signal.SIGINT)
    assert (code, out, err) == (0, "", "stopped\n")
    assert server.first_lines == [f"serving {experiment.path} read-only at {server.url} (Ctrl-C to stop)"]


#: A stand-in for a desktop browser: Python's webbrowser runs $BROWSER with the URL; this one
#: records the URL and what the page answered when the browser asked for it.
BROWSER = """
import sys, urllib.request
from pathlib import Path
with urllib.request.urlopen(sys.argv[2], timeout=30) as page:
    Path(sys.argv[1]).write_text(f"{sys.argv[2]} {page.status} {page.read().decode()}")
"""


@pytest.mark.parametrize("flag", [True, False], ids=["open", "no-open"])
def test_open_shows_the_served_page_in_the_browser(experiment, tmp_path, flag):
    script, seen = tmp_path / "browser.py", tmp_path / "seen.txt"
    script.write_text(BROWSER)
    server = Server(experiment.path, *(["--open"] if flag else []),
                    env={"BROWSER": f"{sys.executable} {script} {seen} %s"})
    try:
        assert server.get("/")[0] == 200
        for _ in range(200):  # the browser is started on a thread of its own once the URL is printed
            if seen.exists() or not flag:
                break
            time.sleep(0.1)
    finally:
        assert server.stop(signal.SIGINT)[0] == 0
    if not flag:
        assert not seen.exists()
        return
    url, status, page = seen.read_text().split(" ", 2)
    assert (url, status) == (server.url, "200")
    assert "<title>exp · farm-merge</title>" in page  # the experiment page


def test_a_port_in_use_gets_one_line(experiment):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "farm_merge", "serve", str(experiment.path), "--port", str(port)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"Error: port {port} on 127.0.0.1 is already in use; choose another with --port\n"


def _legacy(tmp_path):
    return samples.write_run_file(tmp_path / "run.db", "2025-02", seed=1, **SMALL).path


def _not_a_database(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("not a database")
    return path


def _previous_head(tmp_path):
    from farm_merge.consolidate import inplace

    path = tmp_path / "old.db"
    path.write_bytes(b"")
    inplace.upgrade(str(path), "0004_fractional_ages", backup=False)  # the head before 0005
    return path


def _symlink_loop(tmp_path):
    (tmp_path / "loop.db").symlink_to(tmp_path / "loop.db")
    return tmp_path / "loop.db"


@pytest.mark.parametrize("make", [_legacy, _not_a_database, lambda tmp_path: tmp_path / "missing.db", _symlink_loop,
                                  _previous_head],
                         ids=["legacy run file", "not a database", "no such file", "a symlink loop",
                              "the previous head revision"])
def test_a_database_it_cannot_serve_gets_the_error_the_other_commands_give(tmp_path, make):
    path = make(tmp_path)
    served = subprocess.run([sys.executable, "-m", "farm_merge", "serve", str(path), "--port", "0"],
                            capture_output=True, text=True, timeout=60)
    listed = CliRunner().invoke(cli, ["list", str(path)])
    assert served.returncode == listed.exit_code == 1
    assert served.stdout == ""
    assert served.stderr == listed.output and served.stderr.startswith("Error: ") and served.stderr.count("\n") == 1
    assert ("farm-merge merge" in served.stderr) == (make is _legacy)  # kept as it is first
    assert ("farm-merge upgrade" in served.stderr) == (make in (_legacy, _previous_head))


def test_without_the_ui_extra_it_says_how_to_install_it(experiment):
    hide = ("import sys; sys.modules['datasette'] = None; sys.argv = ['farm-merge', *sys.argv[1:]]\n"
            "from farm_merge.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", hide, "serve", str(experiment.path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == ("Error: farm-merge serve needs datasette, which is not installed: "
                             "pip install 'farm-merge[ui]'\n")


# --- the queries themselves ---------------------------------------------------------------
def test_long_series_are_thinned_in_sql_to_about_a_thousand_points(tmp_path, empty_experiment_db):
    path = tmp_path / "long.db"
    shutil.copy(empty_experiment_db, path)
    with sqlite3.connect(path) as con:
        con.execute("INSERT INTO simulations (simulation_id, status, parameters) VALUES "
                    "('long', 'completed', '{\"k\": 1}'), ('short', 'completed', 'not json')")
        con.execute("WITH RECURSIVE s(n) AS (SELECT 5 UNION ALL SELECT n + 1 FROM s WHERE n < 2504) "
                    "INSERT INTO simulation_steps (simulation_id, step_number, total_agents, births, deaths) "
                    "SELECT 'long', n, n * 2, 1, 0 FROM s")
        con.execute("INSERT INTO simulation_steps (simulation_id, step_number, total_agents) "
                    "VALUES ('short', 0, 3), ('short', 1, 4)")
    with serve.served_database(path) as served:
        sql = queries.experiment_queries(served.metrics, served.data_tables, served.list_sql)
    with sqlite3.connect(path) as con:
        con.row_factory = sqlite3.Row
        rows = [dict(r) for r in con.execute(sql["metric_series"]["sql"], {"metric": "total_agents", "by": "k"})]
        buckets = con.execute(sql["births_deaths"]["sql"]).fetchall()
    long = [r["step_number"] for r in rows if r["simulation_id"] == "long"]
    assert len(long) <= queries.POINTS + 1
    assert long[0] == 5 and long[-1] == 2504 and long[1] - long[0] == 3  # 2,500 steps: every third, and the last
    assert all(r["value"] == 2 * r["step_number"] for r in rows if r["simulation_id"] == "long")
    assert {r["group"] for r in rows} == {"1", "(none)"}  # parameters that are not JSON group as none
    assert [r["step_number"] for r in rows if r["simulation_id"] == "short"] == [0, 1]
    assert len(buckets) <= queries.POINTS and sum(b[1] or 0 for b in buckets) == 2500


@pytest.mark.parametrize("status, heartbeat, shown", [
    ("running", "2020-01-01 00:00:00.000000", "running (stale)"),
    ("running", None, "running"),  # never logged live: never stale
    ("completed", "2020-01-01 00:00:00", "completed"),
    ("failed", None, "failed"),
    (None, None, None),
])
def test_the_shown_status_is_the_liveness_rule(status, heartbeat, shown):
    assert status_label(status, heartbeat, 600) == shown


# --- a server database --------------------------------------------------------------------
@pytest.mark.postgres
def test_a_server_database_is_served_as_a_snapshot_and_says_when_it_was_taken(pg_server, _runs_template):
    from farm_merge.consolidate import engine
    from farm_merge.storage import db

    url = pg_server.create(at_head=True)
    try:
        assert engine.merge([str(_runs_template / "*.db")], url, experiment_id="exp", progress=False).exit_code == 0
        server = Server(url, name=db.server_url(url).database)
        try:
            note = server.process.stdout.readline()
            assert note.startswith(f"A read-only snapshot of {db.display(url)} taken ")
            listed = cli_json("list", url)
            assert [(r["simulation_id"], r["status"], r["steps"]) for r in server.rows("simulations")] == [
                (r["simulation_id"], r["status"], r["steps"]) for r in listed]
            status, page = server.get("/")
            assert status == 200 and "A read-only snapshot of" in page
        finally:
            code, _, err = server.stop(signal.SIGINT)
        assert (code, err) == (0, "stopped\n")
    finally:
        pg_server.drop(url)


def test_experiment_id_narrows_only_a_server_database(experiment):
    result = CliRunner().invoke(cli, ["serve", str(experiment.path), "--experiment-id", "exp"])
    assert (result.exit_code, result.output) == (
        1, "Error: --experiment-id narrows the snapshot of a server database; a SQLite file is served whole\n")
