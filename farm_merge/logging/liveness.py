"""When a simulation that logs live is taken for dead: its heartbeat has gone stale.

Every flush of a simulation logging into an experiment database stamps its
``simulations.heartbeat_at`` (naive UTC) in the flush's own transaction, and a simulation
that logs steps flushes at least every ``commit_interval`` (5 s by default).  A process
killed mid-run (SIGKILL, a crash, a lost node) leaves its simulation ``running`` with a
heartbeat that stops moving (one that closed it marked it ``completed`` or ``failed``); what it flushed is committed and whole.  After
:data:`STALE_AFTER_S` without a heartbeat the simulation is shown as stale by
``farm-merge list``, and opening the experiment (:class:`~farm_merge.ExperimentDatabase`)
marks it ``failed`` as abandoned.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

#: Seconds without a heartbeat after which a ``running`` simulation is taken for abandoned:
#: ten minutes, a hundred and twenty flush intervals, so a slow step is not mistaken for death.
STALE_AFTER_S = 600.0


def cutoff(stale_after_s: float, now: datetime | None = None) -> datetime:
    """The moment (naive UTC) before which a heartbeat is stale."""
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    return now - timedelta(seconds=stale_after_s)


def is_stale(status: str | None, heartbeat_at: datetime | None, stale_after_s: float,
             now: datetime | None = None) -> bool:
    """True for a ``running`` simulation whose last heartbeat is older than ``stale_after_s``
    (a simulation never logged live has no heartbeat and is never stale)."""
    return status == "running" and heartbeat_at is not None and heartbeat_at < cutoff(stale_after_s, now)


def abandoned_reason(heartbeat_at: datetime) -> str:
    """What ``simulations.error`` says about an abandoned simulation."""
    return (f"abandoned: no heartbeat since {heartbeat_at:%Y-%m-%d %H:%M:%S} UTC; its process ended "
            "without closing it (rows flushed until then are kept)")
