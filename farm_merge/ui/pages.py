"""The Datasette plugin of ``farm-merge serve``: the experiment page, a page per
simulation, and the SQL function that gives a simulation's shown status.

Registered by :mod:`farm_merge.ui.serve` on the instance it builds (not through an entry
point, so a plain ``datasette`` elsewhere is unaffected).  What a page shows comes from
the canned queries of :mod:`farm_merge.ui.queries`: the tables are rendered here (Jinja
escapes every value), the charts in the browser by Vega-Lite from the same queries' JSON.
Its settings are the ``farm-merge`` plugin configuration the instance is given:
``database`` (its name in Datasette), ``stale_after_s``, ``metrics``, ``data_tables``,
``note`` (shown under the title: where the data comes from).
"""

from __future__ import annotations

import json
import sqlite3
import urllib.parse
from collections import Counter
from datetime import datetime
from typing import Any

from datasette import hookimpl
from datasette.utils.asgi import NotFound, Request, Response

from farm_merge.logging import liveness
from farm_merge.query.views import varying_parameters
from farm_merge.ui.queries import PAGE_METRICS

PLUGIN = "farm-merge"

#: Seconds between refreshes while live refresh is on.
REFRESH_S = 5


def status_label(status: str | None, heartbeat_at: str | datetime | None, stale_after_s: float) -> str | None:
    """The status ``farm-merge list`` shows: ``running (stale)`` for a running simulation
    whose heartbeat is older than ``stale_after_s`` (SQLite holds the heartbeat as text)."""
    if isinstance(heartbeat_at, str):
        try:
            heartbeat_at = datetime.fromisoformat(heartbeat_at)
        except ValueError:
            heartbeat_at = None
    return f"{status} (stale)" if liveness.is_stale(status, heartbeat_at, stale_after_s) else status


def _now() -> str:
    return datetime.now().strftime("%H:%M:%S")


def settings(datasette) -> dict[str, Any]:
    return datasette.plugin_config(PLUGIN) or {}


@hookimpl
def prepare_connection(conn: sqlite3.Connection, database: str, datasette) -> None:
    stale_after_s = float(settings(datasette).get("stale_after_s", liveness.STALE_AFTER_S))
    conn.create_function("farm_merge_status", 2, lambda status, heartbeat_at: status_label(
        status, heartbeat_at, stale_after_s), deterministic=False)


@hookimpl
def asgi_wrapper(datasette):
    """Every request but GET and HEAD is refused (405) before Datasette sees it: nothing a
    page or a client sends can write (Datasette itself answers a POST to a read-only
    canned query with a server error)."""

    def wrap(app):
        async def read_only(scope, receive, send):
            if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD"):
                await send({"type": "http.response.start", "status": 405,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"allow", b"GET, HEAD")]})
                await send({"type": "http.response.body", "body": b"farm-merge serve is read-only\n"})
                return
            await app(scope, receive, send)

        return read_only

    return wrap


@hookimpl
def register_routes():
    return [
        (r"^/$", experiment_page),
        (r"^/-/simulations/(?P<simulation_id>.+)$", simulation_page),
    ]


# --- running the canned queries -------------------------------------------------------------
async def _rows(datasette, name: str, params: dict[str, Any] | None = None, where: str = "") -> list[dict]:
    config = settings(datasette)
    query = await datasette.get_canned_query(config["database"], name, None)
    sql = query["sql"] if not where else f"SELECT * FROM ({query['sql']}) WHERE {where}"
    result = await datasette.get_database(config["database"]).execute(sql, params or {})
    return [dict(row) for row in result.rows]


def _query_links(datasette, name: str, params: dict[str, str]) -> dict[str, str]:
    """Where a canned query's page, JSON and CSV are, with ``params``."""
    base = datasette.urls.database(settings(datasette)["database"]) + "/" + urllib.parse.quote(name)
    qs = urllib.parse.urlencode(params)
    return {"page": f"{base}?{qs}", "json": f"{base}.json?{qs}", "csv": f"{base}.csv?{qs}&_size=max"}


def _parameters(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _simulation_rows(rows: list[dict]) -> list[dict]:
    """The simulations table: the list columns, and the parameters that differ."""
    shown = varying_parameters([_parameters(r["parameters"]) for r in rows])
    return [{**r, "varying": text} for r, text in zip(rows, shown)]


def _chart(datasette, kind: str, query: str, params: dict[str, str], title: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "title": title, "links": _query_links(datasette, query, params), **extra}


# --- the pages ------------------------------------------------------------------------------
async def experiment_page(request: Request, datasette) -> Response:
    """The experiment, its simulations with their status, and the charts comparing them."""
    config = settings(datasette)
    metrics = config.get("metrics", [])
    metric = request.args.get("metric")
    if metric not in metrics:
        metric = "total_agents" if "total_agents" in metrics else (metrics[0] if metrics else "")
    parameters = await _rows(datasette, "parameters")
    varying = [p["parameter"] for p in parameters if p["distinct_values"] > 1]
    by = request.args.get("by")
    if by is None or by not in {p["parameter"] for p in parameters}:
        by = varying[0] if varying and by is None else ""
    simulations = _simulation_rows(await _rows(datasette, "simulations"))
    statuses = Counter(r["status"] or "unknown" for r in simulations)
    chosen = {"metric": metric, "by": by}
    by_label = by or "simulation"
    charts = [
        _chart(datasette, "series", "metric_series", chosen, f"{metric} per step, coloured by {by_label}",
               metric=metric, by=by_label),
        _chart(datasette, "final", "final_values", chosen, f"final {metric} per {by_label}",
               metric=metric, by=by_label),
        _chart(datasette, "births_deaths", "births_deaths", {}, "births and deaths per step, all simulations"),
    ]
    context = {
        "database": config["database"],
        "note": config.get("note"),
        "experiments": await _rows(datasette, "experiment"),
        "simulations": simulations,
        "statuses": sorted(statuses.items()),
        "stale_after_s": config.get("stale_after_s", liveness.STALE_AFTER_S),
        "metrics": metrics, "metric": metric,
        "parameters": parameters, "by": by,
        "charts": charts,
        "simulations_links": _query_links(datasette, "simulations", {}),
        "live": any((r["status"] or "").startswith("running") for r in simulations),
        "refresh_s": REFRESH_S, "now": _now(),
        "data_tables": config.get("data_tables", []),
    }
    return Response.html(await datasette.render_template("farm_merge_experiment.html", context, request=request))


async def simulation_page(request: Request, datasette) -> Response:
    """One simulation: its record, metrics and population over steps, parameters, tables."""
    config = settings(datasette)
    simulation_id = urllib.parse.unquote(request.url_vars["simulation_id"])
    params = {"simulation_id": simulation_id}
    found = await _rows(datasette, "simulations", params, where="simulation_id = :simulation_id")
    if not found:
        raise NotFound(f"no simulation {simulation_id!r} in {config['database']}")
    metrics = [m for m in PAGE_METRICS if m in config.get("metrics", [])]
    charts = [
        _chart(datasette, "simulation_metrics", "simulation_metrics", params, "metrics per step", metrics=metrics),
        _chart(datasette, "population", "simulation_population", params, "population by agent type"),
    ]
    context = {
        "database": config["database"],
        "note": config.get("note"),
        "simulation": found[0],
        "parameters": await _rows(datasette, "simulation_parameters", params),
        "parameters_links": _query_links(datasette, "simulation_parameters", params),
        "tables": await _rows(datasette, "simulation_tables", params),
        "charts": charts,
        "live": (found[0]["status"] or "").startswith("running"),
        "refresh_s": REFRESH_S, "now": _now(),
    }
    return Response.html(await datasette.render_template("farm_merge_simulation.html", context, request=request))
