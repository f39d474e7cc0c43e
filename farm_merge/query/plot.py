"""One chart of a metric per step, one line per simulation (matplotlib, the ``plot`` extra)."""

from __future__ import annotations

import itertools
import math
import os
from operator import itemgetter
from pathlib import Path
from typing import Any, Iterable

from farm_merge.errors import MissingDependency
from farm_merge.storage.outputs import Staging

#: Above this many simulations a legend hides the chart; the title gives the count instead.
LEGEND_LIMIT = 20


def plot_series(series: Iterable[tuple[str, int, Any]], metric: str, output: str | os.PathLike, *,
                title: str | None = None):
    """Draw ``(simulation_id, step, value)`` rows, grouped by simulation, into a PNG.

    The rows must come grouped by simulation (as :meth:`ExperimentQueryTool.metric_series`
    yields them).  The file is written whole or not at all.  Returns the Figure.
    """
    try:
        # The object API, not pyplot: no global state, no GUI backend, safe in threads.
        from matplotlib.figure import Figure
    except ImportError as e:
        raise MissingDependency("matplotlib", "plot", "--plot") from e

    figure = Figure(figsize=(10, 6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    lines = 0
    for simulation_id, rows in itertools.groupby(series, key=itemgetter(0)):
        steps, values = [], []
        for _, step, value in rows:
            steps.append(step)
            values.append(_number(value))
        axes.plot(steps, values, label=str(simulation_id), linewidth=1)
        lines += 1
    axes.set_xlabel("step")
    axes.set_ylabel(metric)
    axes.set_title(f"{title or metric} ({lines} simulation{'s' if lines != 1 else ''})", fontsize="medium")
    axes.grid(True, alpha=0.3)
    if 0 < lines <= LEGEND_LIMIT:
        axes.legend(fontsize="small", loc="best")

    path = Path(output)
    # Written in a staging folder beside it and moved into place: whole or not at all, and
    # a link at ``path`` is replaced, not written through.
    with Staging(path.parent, overwrite=True) as staging:
        figure.savefig(staging.add(path.name), format="png")
    return figure


def _number(value: Any) -> float:
    """A value as a float for plotting; NULL and text become gaps."""
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan
