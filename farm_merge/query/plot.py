"""One chart of a metric per step across simulations (matplotlib, the ``plot`` extra).

Three forms, each readable whatever the number of simulations:

* grouped by parameters: one colour per group, its mean per step as a line over a band of
  ±1 sample standard deviation; the legend names each group and how many simulations it
  has, and says what line and band are (so does the title); above :data:`COLOURS` groups,
  an ordered colour map whose bar names the values instead of a legend;
* up to :data:`COLOURS` simulations: one line each, named in the legend;
* more simulations than colours (where lines would repeat colours and no legend could tell
  them apart): every simulation a thin grey line, the mean of all of them on top.
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
from operator import itemgetter
from pathlib import Path
from typing import Any, Iterable, Sequence

from farm_merge.errors import optional_import
from farm_merge.storage.outputs import Staging

#: Distinct colours in matplotlib's default cycle (tab10): beyond them lines repeat colours.
COLOURS = 10

#: A simulation's line when many are drawn: thin and grey, under the mean.
_FAINT = {"color": "0.55", "linewidth": 0.6, "alpha": 0.55}


def plot_series(series: Iterable[tuple[str, int, Any]], metric: str, output: str | os.PathLike, *,
                title: str | None = None, groups: Sequence[tuple[str, str, Sequence[str]]] | None = None,
                grouped_by: str | None = None):
    """Draw ``(simulation_id, step, value)`` rows, grouped by simulation, into a PNG of
    1000 x 600 pixels, and return the Figure.

    The rows must come grouped by simulation (as :meth:`ExperimentQueryTool.metric_series`
    yields them).  ``groups``: ``(label, values, simulation ids)``, one colour each, in
    order of the values (``label`` for the legend, ``values`` for a colour bar's ticks;
    ``grouped_by`` names the parameters).  The axes' title says what is
    drawn and how; the file is written whole or not at all.
    """
    # The object API, not pyplot: no global state, no GUI backend, safe in threads.
    Figure = optional_import("matplotlib.figure", "plot", "--plot", package="matplotlib").Figure

    runs: dict[str, tuple[list[int], list[float]]] = {}
    for simulation_id, rows in itertools.groupby(series, key=itemgetter(0)):
        steps, values = runs.setdefault(str(simulation_id), ([], []))
        for _, step, value in rows:
            steps.append(step)
            values.append(_number(value))

    figure = Figure(figsize=(10, 6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    count = f"{len(runs)} simulation{'s' if len(runs) != 1 else ''}"
    heading = title or f"{metric} per step"
    handles = None
    if groups:
        handles = _draw_groups(figure, axes, runs, groups, grouped_by or "group")
        heading = f"{heading} by {grouped_by or 'group'}\n({count} in {len(groups)} groups; " \
                  "line: the group's mean, band: mean ± 1 sample sd)"
    elif len(runs) > COLOURS:
        _draw_overview(axes, runs)
        heading = f"{heading}\n({count}: each a grey line, their mean in blue)"
    else:
        for simulation_id, (steps, values) in runs.items():
            axes.plot(steps, values, label=simulation_id, linewidth=1.2)
        heading = f"{heading} ({count})"
    axes.set_xlabel("step")
    axes.set_ylabel(metric)
    axes.set_title(heading, fontsize="medium")
    axes.grid(True, alpha=0.3)
    if handles:  # each group's line drawn over its band, as in the chart
        axes.legend(*zip(*handles), fontsize="small", loc="best", title="line: mean, band: ± 1 sd",
                    title_fontsize="small")
    elif runs and not groups:
        axes.legend(fontsize="small", loc="best")

    path = Path(output)
    # Written in a staging folder beside it and moved into place: whole or not at all, and
    # a link at ``path`` is replaced, not written through.
    with Staging(path.parent, overwrite=True) as staging:
        figure.savefig(staging.add(path.name), format="png")
    return figure


def _draw_groups(figure, axes, runs: dict[str, tuple[list[int], list[float]]],
                 groups: Sequence[tuple[str, str, Sequence[str]]], grouped_by: str) -> list[tuple[tuple, str]]:
    """Draw each group's band and mean; return the legend's ``((band, line), label)`` pairs
    (none above :data:`COLOURS` groups: a colour bar names them)."""
    many = len(groups) > COLOURS
    if many:  # more groups than distinct colours: an ordered colour map (the groups come in order of value)
        from matplotlib import colormaps

        cmap = colormaps["viridis"]
        colours = [cmap(i / max(1, len(groups) - 1)) for i in range(len(groups))]
    else:
        colours = [f"C{i}" for i in range(len(groups))]
    handles = []
    for (label, _, members), colour in zip(groups, colours):
        # The simulations' own lines are left out: under the bands they only blur the edges.
        drawn = [runs[m] for m in members if m in runs]
        steps, mean, sd = _mean_per_step(drawn)
        band = axes.fill_between(steps, [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)],
                                 color=colour, alpha=0.18, linewidth=0)
        (line,) = axes.plot(steps, mean, color=colour, linewidth=1.3 if many else 2.2)
        handles.append(((band, line), f"{label} ({len(drawn)} simulation{'s' if len(drawn) != 1 else ''})"))
    if not many:
        return handles
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import BoundaryNorm, ListedColormap

    shown = sorted({round(i * (len(groups) - 1) / (COLOURS - 1)) for i in range(COLOURS)})
    bar = figure.colorbar(ScalarMappable(BoundaryNorm(range(len(groups) + 1), len(groups)), ListedColormap(colours)),
                          ax=axes, ticks=[i + 0.5 for i in shown])
    bar.set_ticklabels([groups[i][1] for i in shown])
    bar.set_label(f"{grouped_by} ({len(groups)} groups; line: mean, band: ± 1 sd)")
    return []


def _draw_overview(axes, runs: dict[str, tuple[list[int], list[float]]]) -> None:
    for i, (steps, values) in enumerate(runs.values()):
        axes.plot(steps, values, **_FAINT, label=f"each simulation ({len(runs)})" if i == 0 else "_nolegend_")
    steps, mean, _ = _mean_per_step(list(runs.values()))
    axes.plot(steps, mean, color="C0", linewidth=2.4, label=f"mean of the {len(runs)} simulations")


def _mean_per_step(runs: Sequence[tuple[list[int], list[float]]]) -> tuple[list[int], list[float], list[float]]:
    """Steps, and at each the mean and sample sd (0 for one value) of the runs that have a value there."""
    at: dict[int, list[float]] = {}
    for steps, values in runs:
        for step, value in zip(steps, values):
            if not math.isnan(value):
                at.setdefault(step, []).append(value)
    steps = sorted(at)
    mean = [statistics.fmean(at[s]) for s in steps]
    sd = [statistics.stdev(at[s]) if len(at[s]) > 1 else 0.0 for s in steps]
    return steps, mean, sd


def _number(value: Any) -> float:
    """A value as a float for plotting; NULL and text become gaps."""
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan
