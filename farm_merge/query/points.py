"""Where ``compare`` reads a metric: its final value, an aggregate over the steps, or a step.

Its own module so that the command line can name the points without loading the query tool.
"""

from __future__ import annotations

from farm_merge.errors import InvalidArgument

#: Where ``compare`` reads a metric, besides a step number.
POINTS = ("final", "max", "min", "mean")


def parse_point(at: str | int) -> str | int:
    """``final``, ``max``, ``min``, ``mean`` or a step number (``"250"`` -> 250)."""
    if isinstance(at, int) and not isinstance(at, bool):
        step = at
    else:
        text = str(at).strip().lower()
        if text in POINTS:
            return text
        try:
            step = int(text)
        except ValueError:
            raise InvalidArgument("at", at, f"use one of {', '.join(POINTS)} or a step number") from None
    if step < 0:
        raise InvalidArgument("at", at, "a step number is 0 or more")
    return step


def describe_steps(first: int | None, last: int | None, count: int) -> str:
    """The steps a simulation has: ``steps 0-39``, ``steps 0-39, 38 steps`` (with gaps), ``no steps``."""
    if not count:
        return "no steps"
    gaps = "" if count == last - first + 1 else f", {count} steps"
    return f"steps {first}-{last}{gaps}"
