"""Simulations grouped by their parameters: flattening, grouping, and the spread of a figure
within each group (no pandas, and no database but in :class:`GroupQueries`: the command
line's views use the functions).

A simulation's parameters (``simulations.parameters``, for a merged run its
``simulation_config``) are nested JSON.  Flattened, each leaf gets a dotted name
(``agent_parameters.SystemAgent.gamma``); a list stays one value.  Where parameters become
columns beside fixed ones (``--csv``/``--json`` of ``list`` and ``summary``,
:meth:`ExperimentQueryTool.parameters`) each is named ``params.<dotted name>``, as MLflow's
``search_runs`` names them: no fixed column has a dot, so the names cannot clash, and a
DataFrame merge on ``simulation_id`` adds no ``_x``/``_y`` suffixes.
"""

from __future__ import annotations

import json
import math
import statistics
from decimal import Decimal
from typing import Any, Iterable, Mapping, Sequence

from farm_merge.errors import UnknownName
from farm_merge.query.output import MISSING

#: What the name of a parameter column starts with.
PREFIX = "params."

#: The statistics of a figure within a group, as ``<figure>_<statistic>``.
STATISTICS = ("mean", "sd", "min", "max")


def flatten(parameters: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted names; lists, scalars and empty dicts are values.

    Anything but a dict (None, a bare value) has no parameters: ``{}``.
    """
    flat: dict[str, Any] = {}
    if not isinstance(parameters, Mapping):
        return flat
    for key, value in parameters.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def parameter_names(parameters: Iterable[Any]) -> list[str]:
    """Every dotted name any of ``parameters`` has, in the order first met."""
    names: dict[str, None] = {}
    for p in parameters:
        names.update(dict.fromkeys(flatten(p)))
    return list(names)


def with_parameter_columns(records: Sequence[dict[str, Any]], key: str = "parameters") -> list[dict[str, Any]]:
    """``records`` with their ``key`` dict replaced by one ``params.<name>`` entry per
    parameter any record has (None where a record lacks it), after the fixed entries."""
    flat = [flatten(r.get(key)) for r in records]
    names = parameter_names(r.get(key) for r in records)
    out = []
    for record, values in zip(records, flat):
        row = {k: v for k, v in record.items() if k != key}
        row.update({PREFIX + n: values.get(n) for n in names})
        out.append(row)
    return out


def resolve(by: Sequence[str], known: Sequence[str]) -> list[str]:
    """The parameter names asked for (``learning_rate`` or ``params.learning_rate``),
    checked against ``known``; raise :class:`UnknownName` listing them otherwise."""
    names = []
    for name in by:
        plain = name[len(PREFIX):] if name.startswith(PREFIX) and name[len(PREFIX):] in known else name
        if plain not in known:
            raise UnknownName("parameter", name, list(known))
        if plain not in names:
            names.append(plain)
    if not names:
        raise UnknownName("parameter", "", list(known))
    return names


def _sort_key(value: Any) -> tuple:
    """Numbers in numeric order, then text, then other values, missing ones last."""
    if value is None:
        return (3, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    if isinstance(value, str):
        return (1, value)
    return (2, json.dumps(value, sort_keys=True, default=str))


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, (list, dict)) else value


def group(items: Iterable[tuple[str, Any]], by: Sequence[str]) -> list[tuple[tuple, list[str]]]:
    """``(simulation_id, parameters)`` pairs grouped by the values of ``by``: a list of
    ``(values, simulation ids)`` in order of the values."""
    groups: dict[tuple, tuple[tuple, list[str]]] = {}
    for simulation_id, parameters in items:
        flat = flatten(parameters)
        values = tuple(flat.get(name) for name in by)
        key = tuple(_hashable(v) for v in values)
        groups.setdefault(key, (values, []))[1].append(simulation_id)
    return sorted(groups.values(), key=lambda g: tuple(_sort_key(v) for v in g[0]))


def label(by: Sequence[str], values: Sequence[Any]) -> str:
    """``learning_rate=0.01, seed=3``: a group as people read it (a chart's legend)."""
    return ", ".join(f"{name}={value_text(value)}" for name, value in zip(by, values))


def value_text(value: Any) -> str:
    """A parameter value as a table cell or legend shows it (a missing one as ``(none)``)."""
    if value is None:
        return MISSING
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def spread(values: Iterable[Any]) -> dict[str, Any]:
    """``n`` (how many numbers), ``mean``, ``sd`` (sample standard deviation; None for
    fewer than two), ``min`` and ``max`` of the numbers among ``values`` (None, NaN and text are left out)."""
    numbers = [float(v) if isinstance(v, Decimal) else v for v in values
               if isinstance(v, (int, float, Decimal)) and not isinstance(v, bool)]
    numbers = [v for v in numbers if not (isinstance(v, float) and math.isnan(v))]
    if not numbers:
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None}
    return {"n": len(numbers), "mean": statistics.fmean(numbers),
            "sd": statistics.stdev(numbers) if len(numbers) > 1 else None,
            "min": min(numbers), "max": max(numbers)}


class GroupQueries:
    """The methods of :class:`~farm_merge.query.tool.ExperimentQueryTool` that group
    simulations by parameters (a mixin: it uses the tool's records and scope)."""

    #: The figures of a summary whose spread :meth:`summary_by` gives (set by the tool).
    SUMMARY_FIGURES: Sequence[str] = ()

    def summary_by(self, by: Sequence[str], *, simulation_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The summary per combination of values of the parameters ``by`` (dotted names
        for nested ones, see :mod:`farm_merge.query.groups`), in order of the values.

        One dict per group: ``params.<name>`` for each of ``by``, ``simulations`` (how
        many), then ``<figure>_mean``, ``_sd`` (sample standard deviation, None for one
        simulation), ``_min`` and ``_max`` for each of
        :data:`~farm_merge.query.tool.SUMMARY_FIGURES`.  A simulation without a parameter
        is in the group of None for it.
        """
        rows = self.summary_records(simulation_ids=simulation_ids)
        names = resolve(by, parameter_names(r["parameters"] for r in rows))
        by_id = {r["simulation_id"]: r for r in rows}
        result = []
        for values, members in group(((r["simulation_id"], r["parameters"]) for r in rows), names):
            record: dict[str, Any] = {PREFIX + n: v for n, v in zip(names, values)}
            record["simulations"] = len(members)
            for figure in self.SUMMARY_FIGURES:
                stats = spread(by_id[sim][figure] for sim in members)
                record.update({f"{figure}_{statistic}": stats[statistic] for statistic in STATISTICS})
            result.append(record)
        return result

    def parameter_records(self, simulation_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """:meth:`parameters` as dicts (None where a simulation lacks a parameter others have)."""
        return with_parameter_columns(
            [{"simulation_id": sim, "parameters": p} for sim, p in self._parameters(simulation_ids).items()])

    def _parameters(self, simulation_ids: Sequence[str] | None = None) -> dict[str, Any]:
        """Each simulation's parameters as stored (nested), in id order."""
        # Imported here: the command line's views use this module's functions without a database.
        from sqlalchemy import select

        from farm_merge.query.scope import SIMULATIONS as s

        with self.engine.connect() as conn:
            self.check_ids(conn, simulation_ids)
            return dict(conn.execute(select(s.c.simulation_id, s.c.parameters)
                                     .where(self.in_scope(s.c.simulation_id, simulation_ids))
                                     .order_by(s.c.simulation_id)).all())

    def _groups(self, by: Sequence[str], parameters: dict[str, Any]) -> tuple[list[str], list[tuple[tuple, list[str]]]]:
        names = resolve(by, parameter_names(parameters.values()))
        return names, group(parameters.items(), names)

    def compare_by(self, metric: str, by: Sequence[str], at: str | int = "final", *,
                   simulation_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """:meth:`compare_metric` per combination of values of the parameters ``by``.

        One dict per group, in order of the values: ``params.<name>`` for each of ``by``,
        ``metric``, ``at``, ``simulations`` (how many), ``with_value`` (how many have a value
        there), and the ``mean``, ``sd`` (sample standard deviation, None below two
        values), ``min`` and ``max`` of their values.
        """
        rows = self.compare_metric(metric, at, simulation_ids=simulation_ids)
        names, grouped = self._groups(by, self._parameters(simulation_ids))
        value = {r["simulation_id"]: r["value"] for r in rows}
        point = rows[0]["at"] if rows else str(at)
        result = []
        for values, members in grouped:
            stats = spread(value.get(sim) for sim in members)
            result.append({**{PREFIX + n: v for n, v in zip(names, values)}, "metric": metric, "at": point,
                           "simulations": len(members), "with_value": stats["n"],
                           **{statistic: stats[statistic] for statistic in STATISTICS}})
        return result
