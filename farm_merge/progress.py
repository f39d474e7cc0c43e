"""Progress bars: tqdm on stderr, so that results on stdout stay clean."""

from __future__ import annotations

import sys


def progress_bar(enabled: bool | None, desc: str, total: int, unit: str):
    """A bar on stderr: ``enabled`` True shows it, False hides it, None shows it only on a
    terminal.  ``unit="B"`` counts bytes (shown as KiB, MiB, ...)."""
    from tqdm import tqdm  # only when a bar is wanted

    scale = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
    disable = {True: False, None: None, False: True}[enabled]
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable, leave=False,
                dynamic_ncols=True, **scale)
