"""How query results look: an aligned table for people, CSV or JSON for programs.

Each ``*_view`` turns what the library returned into ``(headers, rows)`` for a table;
the JSON form is the library's own dicts, whole; the CSV form has every key.  In both,
``list`` and ``summary`` give each parameter a column of its own, ``params.<dotted name>``
(:func:`farm_merge.query.groups.with_parameter_columns`), in place of the nested
``parameters``.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from typing import Any, Iterable, Sequence, TextIO

from farm_merge.query.groups import PREFIX, value_text, with_parameter_columns
from farm_merge.query.output import _cell, format_csv, format_table, human_bytes, to_json

FORMATS = ("table", "csv", "json")

#: Longest parameters cell in a table; the full parameters are in --json and --csv.
PARAMETERS_WIDTH = 60


def render_records(records: list[dict[str, Any]], fmt: str, table: tuple[list[str], list[list[Any]]], *,
                   parameter_columns: bool = False) -> str:
    """``records`` as JSON or CSV (every key; with ``parameter_columns`` a ``params.<name>``
    key per parameter instead of ``parameters``), or ``table`` as an aligned table."""
    if parameter_columns and fmt != "table":
        records = with_parameter_columns(records)
    if fmt == "json":
        return to_json(records)
    if fmt == "csv":
        headers = list(records[0]) if records else table[0]
        return format_csv(headers, [[r.get(h) for h in headers] for r in records]).rstrip("\n")
    headers, rows = table
    return format_table(headers, rows) if rows else format_table(headers, []) + "\n(no simulations)"


# --- info -------------------------------------------------------------------------------
def info_text(info: dict[str, Any]) -> str:
    size = human_bytes(info["size_bytes"]) if info["size_bytes"] is not None else "n/a"
    lines = [
        f"database         {info['database']}",
        f"size             {size}",
        f"schema revision  {info['schema_revision']}"
        + ("" if info["schema_revision"] == info["head_revision"] else f" (head is {info['head_revision']})"),
    ]
    for experiment in info["experiments"]:
        lines += ["", f"experiment       {experiment['experiment_id']}"]
        for key in ("name", "description", "hypothesis", "status", "creation_date", "last_updated"):
            if experiment.get(key) not in (None, ""):
                lines.append(f"  {key:<15}{_cell(experiment[key])}")
        lines.append(f"  {'simulations':<15}{experiment['simulations']}")
    simulations = info["simulations"]
    statuses = ", ".join(f"{n} {status}" for status, n in simulations["by_status"].items())
    lines += ["", f"simulations      {simulations['total']}" + (f" ({statuses})" if statuses else "")]
    lines += ["", format_table(["table", "rows"], list(info["tables"].items()))]
    sources = info["sources"]
    lines += ["", f"merged sources   {sources['count']} files, {human_bytes(sources['bytes'])}"]
    if sources["by_era"]:
        lines.append(format_table(
            ["era", "sources", "size", "first merged", "last merged"],
            [[e["era"] or "unknown", e["sources"], human_bytes(e["bytes"]), e["first_merged_at"], e["last_merged_at"]]
             for e in sources["by_era"]]))
    if sources["added_columns"]:
        lines.append("schema drift     " + ", ".join(sources["added_columns"]))
    return "\n".join(lines)


def info_csv(info: dict[str, Any]) -> str:
    """``section,key,value`` rows: the info's scalars, statuses, tables and eras."""
    rows: list[list[Any]] = [["database", k, info[k]] for k in ("database", "size_bytes", "schema_revision",
                                                                "head_revision", "experiment_id", "name")]
    rows += [["status", status, n] for status, n in info["simulations"]["by_status"].items()]
    rows += [["table", name, n] for name, n in info["tables"].items()]
    rows += [["era", e["era"], e["sources"]] for e in info["sources"]["by_era"]]
    rows += [["added_column", c, ""] for c in info["sources"]["added_columns"]]
    return format_csv(["section", "key", "value"], rows).rstrip("\n")


def render_info(info: dict[str, Any], fmt: str) -> str:
    return {"json": to_json, "csv": info_csv, "table": info_text}[fmt](info)


# --- list -------------------------------------------------------------------------------
LIST_COLUMNS = ["simulation_id", "status", "era", "steps", "agents_ever", "start_time", "end_time", "source"]


def list_view(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    return LIST_COLUMNS, [[f"{r[c]} (stale)" if c == "status" and r.get("stale") else r[c] for c in LIST_COLUMNS]
                          for r in rows]


def stale_note(rows: list[dict[str, Any]], stale_after_s: float) -> str | None:
    """The line under the table that explains "(stale)", when a row has it."""
    stale = [r for r in rows if r.get("stale")]
    if not stale:
        return None
    one = len(stale) == 1
    return (f"(stale): {len(stale)} simulation{'' if one else 's'} still 'running' with no heartbeat for over "
            f"{stale_after_s:g} s; {'its process has' if one else 'their processes have'} most likely died "
            f"(what {'it' if one else 'they'} flushed is kept)")


# --- summary ----------------------------------------------------------------------------
#: The figures of a summary table: (header, key of the summary record).
SUMMARY_FIGURES = [
    ("steps", "total_steps"),
    ("final_agents", "final_total_agents"), ("peak_agents", "peak_total_agents"),
    ("final_resources", "final_total_resources"), ("peak_resources", "peak_total_resources"),
    ("final_health", "final_average_agent_health"), ("peak_health", "peak_average_agent_health"),
    ("final_reward", "final_average_reward"), ("births", "total_births"), ("deaths", "total_deaths"),
]
SUMMARY_COLUMNS = [("simulation_id", "simulation_id"), ("status", "status"), *SUMMARY_FIGURES]


def summary_view(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Final and peak values; the parameters column shows what differs between simulations."""
    shown = varying_parameters([r.get("parameters") for r in rows])
    headers = [h for h, _ in SUMMARY_COLUMNS] + ["parameters"]
    table = [[r[key] for _, key in SUMMARY_COLUMNS] + [shown[i]] for i, r in enumerate(rows)]
    return headers, table


def group_columns(records: list[dict[str, Any]]) -> list[str]:
    """The ``params.<name>`` keys a grouped record starts with."""
    return [k for k in records[0] if k.startswith(PREFIX)] if records else []


def summary_by_view(records: list[dict[str, Any]], by: Sequence[str]) -> tuple[list[str], list[list[Any]]]:
    """One row per group: its parameter values (headed by their names), how many
    simulations, and each figure of the summary table as ``mean ± sd``."""
    keys = group_columns(records)
    headers = [k[len(PREFIX):] for k in keys] or list(by)
    headers += ["simulations"] + [h for h, _ in SUMMARY_FIGURES]
    table = [[value_text(r[k]) for k in keys] + [r["simulations"]]
             + [mean_sd(r[f"{key}_mean"], r[f"{key}_sd"]) for _, key in SUMMARY_FIGURES] for r in records]
    return headers, table


SUMMARY_BY_NOTE = ("each figure: mean ± sample sd over the group's simulations; --csv and --json give mean, sd, "
                   "min and max of every figure")


def mean_sd(mean: Any, sd: Any) -> str:
    """``57.33 ± 4.1``: four significant digits for the mean, two for the sd (none for one value)."""
    if mean is None:
        return ""
    return _short(mean, 4) + ("" if sd is None else f" ± {_short(sd, 2)}")


def _short(value: float, digits: int) -> str:
    """``value`` to ``digits`` significant digits, never in exponent form."""
    if not isinstance(value, (int, float)) or float(value).is_integer():
        return _cell(int(value) if isinstance(value, float) else value)
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:.{decimals}f}"


def varying_parameters(parameters: Sequence[Any]) -> list[str]:
    """``key=value`` for the top-level scalar parameters whose values differ between
    simulations (all of them when there is one simulation), cut to a table cell."""
    flat = [{k: v for k, v in p.items() if not isinstance(v, (dict, list))} if isinstance(p, dict) else {}
            for p in parameters]
    keys = sorted({k for p in flat for k in p})
    if len(flat) > 1:
        keys = [k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in flat}) > 1]
    cells = []
    for p in flat:
        text = " ".join(f"{k}={_cell(p[k])}" for k in keys if k in p)
        cells.append(text if len(text) <= PARAMETERS_WIDTH else text[: PARAMETERS_WIDTH - 1] + "…")
    return cells


# --- compare ----------------------------------------------------------------------------
def compare_view(rows: list[dict[str, Any]], metric: str, at: str) -> tuple[list[str], list[list[Any]]]:
    value_header = f"{at} {metric}"
    if at in ("max", "min", "mean"):
        return ["simulation_id", value_header], [[r["simulation_id"], r["value"]] for r in rows]
    headers = ["simulation_id", "step", value_header]
    table = [[r["simulation_id"], r["step"], r["value"]] for r in rows]
    if any(r.get("note") for r in rows):  # simulations that lack the step say which steps they have
        headers.append("note")
        table = [line + [r["note"] or ""] for line, r in zip(table, rows)]
    return headers, table


def compare_by_view(records: list[dict[str, Any]], by: Sequence[str], metric: str, at: str
                    ) -> tuple[list[str], list[list[Any]]]:
    """One row per group: its parameter values, how many simulations (and with a value
    at ``at``), the mean, sample sd, min and max of ``metric`` there."""
    keys = group_columns(records)
    headers = ([k[len(PREFIX):] for k in keys] or list(by)) + ["simulations", "with_value",
                                                               f"mean {at} {metric}", "sd", "min", "max"]
    return headers, [[value_text(r[k]) for k in keys]
                     + [r["simulations"], r["with_value"], r["mean"], r["sd"], r["min"], r["max"]] for r in records]


def compare_footer(rows: list[dict[str, Any]]) -> str:
    """One line across simulations: how many have a value, mean, min, max."""
    values = [float(r["value"]) for r in rows if isinstance(r["value"], (int, float))]
    if not values:
        return f"no simulation has a value here ({len(rows)} simulations)"
    line = (f"{len(values)} of {len(rows)} simulations: mean {_cell(statistics.fmean(values))}, "
            f"min {_cell(min(values))}, max {_cell(max(values))}")
    return line + (f", sd {_cell(statistics.stdev(values))}" if len(values) > 1 else "")


def write_series(columns: list[str], rows: Iterable[list[Any]], fmt: str, metric: str, out: TextIO) -> None:
    """The metric per step, one column per simulation; CSV streams row by row."""
    headers = ["step_number", *columns]
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(headers)
        for row in rows:
            writer.writerow([_cell(v) for v in row])
    elif fmt == "json":
        series: dict[str, dict[str, list]] = {c: {"steps": [], "values": []} for c in columns}
        for step, *values in rows:
            for column, value in zip(columns, values):
                if value is not None:
                    series[column]["steps"].append(step)
                    series[column]["values"].append(value)
        out.write(to_json({"metric": metric, "series": [{"simulation_id": c, **s} for c, s in series.items()]}))
        out.write("\n")
    else:
        out.write(format_table(headers, list(rows)) + "\n")
