"""The SQL behind the pages of ``farm-merge serve``, as Datasette canned queries.

Each chart and table of a page is one named query of the served database, so what the
page shows is also at ``/<database>/<query>.json`` and ``.csv`` with the same parameters
(``?metric=total_agents&by=learning_rate``) for a notebook to read.  The queries are
SQLite (Datasette serves SQLite files) and read only.

* Series are thinned in SQL: a simulation of ``n`` steps keeps every ``n // points + 1``-th
  step and its last, so a chart gets at most about :data:`POINTS` points per simulation,
  fewer when there are so many simulations that the chart would pass :data:`TOTAL_POINTS`.
  A simulation short enough keeps every step: its series is ``compare --series``'s.
* Grouping by a parameter reads the top-level scalar values of ``simulations.parameters``
  (JSON) with ``json_each``, once per simulation; ``by`` empty groups by simulation.
* A metric is chosen by name: the query holds a ``CASE`` over the metrics the database
  has, so the name is a bound parameter, never SQL.
* ``farm_merge_status(status, heartbeat_at)`` is the status ``farm-merge list`` shows
  (``running (stale)``); the plugin registers it on Datasette's connections.
"""

from __future__ import annotations

from typing import Any, Sequence

from farm_merge.storage.sqltext import quote

#: Points per simulation a series keeps at most (about: a simulation's last step is kept too).
POINTS = 1000

#: Points one chart of every simulation keeps at most, whatever the number of simulations.
TOTAL_POINTS = 100_000

#: The metrics a simulation's page draws, those of them the database has (its JSON has every metric).
PAGE_METRICS = ("total_agents", "total_resources", "average_agent_health", "average_agent_resources",
                "average_reward", "births", "deaths")


def literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _parameters_json(column: str) -> str:
    # json_each fails on text that is not JSON; a run file's config may be anything.
    return f"CASE WHEN json_valid({column}) THEN {column} ELSE '{{}}' END"


def _group_columns(simulations: str = "s") -> str:
    """``"group"`` (the shown value of parameter ``:by``, or the simulation id) and
    ``group_value`` (its JSON value, for ordering numbers as numbers)."""
    entry = (f"FROM json_each({_parameters_json(simulations + '.parameters')}) AS j "
             "WHERE j.key = :by AND j.type NOT IN ('object', 'array')")
    shown = ("CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' WHEN 'null' THEN 'null' "
             "ELSE CAST(j.value AS TEXT) END")
    return (f"CASE WHEN :by = '' THEN {simulations}.simulation_id "
            f"ELSE coalesce((SELECT {shown} {entry}), '(none)') END AS \"group\", "
            f"CASE WHEN :by = '' THEN {simulations}.simulation_id ELSE (SELECT j.value {entry}) END AS group_value")


def _metric_value(metrics: Sequence[str], table: str) -> str:
    """The value of metric ``:metric`` in a row of ``table`` (NULL for a name that is not one)."""
    cases = " ".join(f"WHEN {literal(m)} THEN {table}.{quote(m)}" for m in metrics)
    return f"CASE :metric {cases} END" if cases else "NULL"


def _stride(span: str, points: str) -> str:
    return f"({span}.last - {span}.first) / {points} + 1"


def experiment_queries(metrics: Sequence[str], data_tables: Sequence[str], list_sql: str) -> dict[str, dict[str, Any]]:
    """The canned queries of one experiment database, by name (Datasette's ``queries``
    metadata): ``metrics`` are ``simulation_steps``' numeric columns, ``data_tables`` the
    tables holding rows per simulation, ``list_sql`` the statement behind ``farm-merge list``."""
    per_simulation = f"max(1, min({POINTS}, {TOTAL_POINTS} / max(1, (SELECT count(*) FROM simulations))))"
    value = _metric_value(metrics, "t")
    queries: dict[str, dict[str, Any]] = {
        "experiment": {
            "title": "The experiment",
            "sql": "SELECT * FROM experiments ORDER BY experiment_id",
        },
        "simulations": {
            "title": "Simulations",
            "description": "One row per simulation, as farm-merge list shows it: a running simulation whose "
                           "logger has not flushed for a while is 'running (stale)'.",
            "sql": ("SELECT simulation_id, experiment_id, farm_merge_status(status, heartbeat_at) AS status, era, "
                    "coalesce(steps, 0) AS steps, last_step, coalesce(agents_ever, 0) AS agents_ever, start_time, end_time, "
                    f"heartbeat_at, source, parameters FROM ({list_sql}) ORDER BY simulation_id"),
        },
        "parameters": {
            "title": "Parameters",
            "description": "The top-level scalar parameters of the simulations, those that vary first "
                           "(fewest distinct values first: a sweep's parameters before its seeds).",
            "sql": ("SELECT j.key AS parameter, count(DISTINCT j.value) AS distinct_values, count(*) AS simulations "
                    f"FROM simulations AS s, json_each({_parameters_json('s.parameters')}) AS j "
                    "WHERE j.type NOT IN ('object', 'array') AND j.key IS NOT NULL GROUP BY j.key "
                    "ORDER BY count(DISTINCT j.value) > 1 DESC, count(DISTINCT j.value), j.key"),
        },
        "metric_series": {
            "title": "A metric over steps, every simulation",
            "description": f"Metric :metric per step, grouped by parameter :by (empty: by simulation); at most "
                           f"about {POINTS} points per simulation (every k-th step and the last).",
            "sql": (
                "WITH spans AS MATERIALIZED ("
                "SELECT simulation_id, min(step_number) AS first, max(step_number) AS last "
                "FROM simulation_steps GROUP BY simulation_id), "
                f"groups AS MATERIALIZED (SELECT s.simulation_id, {_group_columns()} FROM simulations AS s) "
                "SELECT * FROM ("
                f"SELECT t.simulation_id, t.step_number, {value} AS value, g.\"group\", g.group_value "
                "FROM spans AS p JOIN simulation_steps AS t ON t.simulation_id = p.simulation_id "
                "JOIN groups AS g ON g.simulation_id = t.simulation_id "
                f"WHERE (t.step_number - p.first) % ({_stride('p', per_simulation)}) = 0 OR t.step_number = p.last"
                ") WHERE value IS NOT NULL ORDER BY simulation_id, step_number"),
        },
        "final_values": {
            "title": "The final value per parameter value",
            "description": "Metric :metric at each simulation's last step, with the value of parameter :by.",
            "sql": (
                f"SELECT s.simulation_id, {_group_columns()}, t.step_number AS step, {value} AS value "
                "FROM simulations AS s LEFT JOIN simulation_steps AS t ON t.simulation_id = s.simulation_id "
                "AND t.step_number = (SELECT max(step_number) FROM simulation_steps "
                "WHERE simulation_id = s.simulation_id) ORDER BY group_value, s.simulation_id"),
        },
        "births_deaths": {
            "title": "Births and deaths over steps, all simulations",
            "description": f"Summed over every simulation; at most about {POINTS} points (each the sum over "
                           "steps_per_point steps).",
            "sql": (
                "WITH span AS (SELECT min(step_number) AS first, max(step_number) AS last FROM simulation_steps), "
                f"bucket AS (SELECT first, {_stride('span', str(POINTS))} AS size FROM span) "
                "SELECT bucket.first + ((t.step_number - bucket.first) / bucket.size) * bucket.size AS step, "
                "sum(t.births) AS births, sum(t.deaths) AS deaths, bucket.size AS steps_per_point "
                "FROM simulation_steps AS t, bucket GROUP BY 1 ORDER BY 1"),
        },
        "simulation_metrics": {
            "title": "A simulation's metrics over steps",
            "description": f"Every metric of simulation :simulation_id per step; at most about {POINTS} points.",
            "sql": (
                "WITH span AS (SELECT min(step_number) AS first, max(step_number) AS last FROM simulation_steps "
                "WHERE simulation_id = :simulation_id) "
                f"SELECT t.step_number, {', '.join('t.' + quote(m) for m in metrics) or 'NULL AS value'} "
                "FROM simulation_steps AS t, span WHERE t.simulation_id = :simulation_id "
                f"AND ((t.step_number - span.first) % ({_stride('span', str(POINTS))}) = 0 "
                "OR t.step_number = span.last) ORDER BY t.step_number"),
        },
        "simulation_population": {
            "title": "A simulation's population by agent type",
            "description": f"Agents alive (agent_states rows) per step and agent type; at most about {POINTS} steps.",
            "sql": (
                "WITH span AS (SELECT min(step_number) AS first, max(step_number) AS last FROM agent_states "
                "WHERE simulation_id = :simulation_id) "
                "SELECT st.step_number AS step, coalesce(a.agent_type, '(unknown)') AS agent_type, count(*) AS agents "
                "FROM span, agent_states AS st LEFT JOIN agents AS a "
                "ON a.simulation_id = st.simulation_id AND a.agent_id = st.agent_id "
                "WHERE st.simulation_id = :simulation_id "
                f"AND ((st.step_number - span.first) % ({_stride('span', str(POINTS))}) = 0 "
                "OR st.step_number = span.last) GROUP BY st.step_number, a.agent_type ORDER BY 1, 2"),
        },
        "simulation_parameters": {
            "title": "A simulation's parameters",
            "description": "Every parameter of simulation :simulation_id (nested ones by their path; lists whole).",
            "sql": (
                # json_tree quotes some keys in its paths (those with "_" in older SQLite): shown bare.
                "SELECT replace(substr(j.fullkey, 3), '\"', '') AS parameter, j.type, "
                "CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' WHEN 'null' THEN 'null' "
                "ELSE j.value END AS value "
                f"FROM simulations AS s, json_tree({_parameters_json('s.parameters')}) AS j "
                "WHERE s.simulation_id = :simulation_id AND j.type != 'object' AND instr(j.fullkey, '[') = 0 "
                "ORDER BY j.id"),
        },
        "simulation_tables": {
            "title": "A simulation's rows per table",
            "sql": " UNION ALL ".join(
                f"SELECT {literal(t)} AS \"table\", count(*) AS rows FROM {quote(t)} "
                "WHERE simulation_id = :simulation_id" for t in data_tables) or "SELECT NULL AS \"table\", 0 AS rows",
        },
    }
    for query in queries.values():
        query["hide_sql"] = False
    return queries
