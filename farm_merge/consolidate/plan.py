"""Which simulations a source holds and the id each gets in the target.

Ids come from ``id_template`` (``{stem}``, ``{parent}``, ``{relpath}``,
``{simulation_id}``, ``{era}``), else the id the file records, else its file stem.  Two
sources that would land under one id both fail, naming each other.  A source whose bytes
are another's (a copied run file) is that one's copy, skipped unless copies are kept.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Callable

from farm_merge.consolidate.report import FAILED, SKIPPED, SourceResult
from farm_merge.consolidate.sources import SourceInfo
from farm_merge.errors import InvalidArgument, SourceError

TEMPLATE_FIELDS = ("stem", "parent", "relpath", "simulation_id", "era")


def check_template(template: str | None) -> None:
    """Raise :class:`InvalidArgument` unless ``template`` (if given) uses only :data:`TEMPLATE_FIELDS`."""
    if template is None:
        return
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise InvalidArgument("id_template", template, str(e)) from e
    unknown = [f for f in fields if f not in TEMPLATE_FIELDS]
    if unknown or not fields:
        raise InvalidArgument("id_template", template, f"must use only {{{'}, {'.join(TEMPLATE_FIELDS)}}}"
                              + (f", not {{{unknown[0]}}}" if unknown else ""))


@dataclass
class Plan:
    """One inspected source and the simulations it brings, decided before anything is written."""

    info: SourceInfo
    simulations: list[tuple[str | None, str]]  # (id recorded in the file, id in the target)

    @property
    def target_ids(self) -> list[str]:
        return [ours for _, ours in self.simulations]

    def result(self, status: str, reason: str | None = None, **extra) -> SourceResult:
        extra.setdefault("rows", sum(t.rows for t in self.info.tables.values()))
        return SourceResult(str(self.info.path), status, reason, self.target_ids,
                            self.info.era_label, self.info.size, **extra)


def simulation_ids(info: SourceInfo, template: str | None) -> list[tuple[str | None, str]]:
    """Which simulations a source holds and the id each gets in the target."""
    recorded = info.recorded_simulation_ids
    if len(recorded) > 1:
        orphans = info.orphan_rows()
        if orphans:
            rows = ", ".join(f"{n} of {table}" for table, n in orphans.items())
            raise SourceError(str(info.path), f"holds {len(recorded)} simulations and rows without a simulation_id "
                                              f"that no agent ties to one of them ({rows}); cannot tell whose they "
                                              "are (farm-merge upgrade keeps them under a simulation of their own: "
                                              "upgrade a copy, then merge it)")
        if template is not None and "{simulation_id}" not in template:
            raise SourceError(str(info.path), f"holds {len(recorded)} simulations; an id_template for it "
                                              "must contain {simulation_id}")
        return [(sim, format_id(template, info, sim) if template else sim) for sim in recorded]
    own = recorded[0] if recorded else None
    return [(own, format_id(template, info, own) if template else own or info.path.stem)]


def format_id(template: str, info: SourceInfo, recorded: str | None) -> str:
    return template.format(
        stem=info.path.stem, parent=info.path.resolve().parent.name, relpath=info.file.relpath,
        simulation_id=recorded or info.path.stem, era=info.era.era.name if info.era else "unknown",
    )


def reject_duplicate_ids(plans: list[Plan]) -> tuple[list[Plan], list[SourceResult]]:
    """The plans whose simulation ids no other plan claims, and a failed result, naming the
    others, for each of those that share one."""
    owners: dict[str, list[Plan]] = {}
    for plan in plans:
        for sim in set(plan.target_ids):
            owners.setdefault(sim, []).append(plan)
    clashing = {id(p): (sim, group) for sim, group in owners.items() if len(group) > 1 for p in group}
    failed = []
    for plan in [p for p in plans if id(p) in clashing]:
        sim, group = clashing[id(plan)]
        others = ", ".join(str(p.info.path) for p in group if p is not plan)
        failed.append(plan.result(
            FAILED, f"simulation id {sim!r} also comes from {others}; "
                    "tell them apart with id_template (e.g. '{parent}_{stem}')"))
    return [p for p in plans if id(p) not in clashing], failed


def copy_reason(original: str, *, merged: bool, simulation_id: str | None = None) -> str:
    """The reason a copy of ``original`` (identical bytes) is skipped."""
    where = f", which is merged already{f' as {simulation_id!r}' if simulation_id else ''}" if merged else ""
    return f"a copy of {original}{where} (identical bytes); pass keep_copies=True to merge it as well"


def skip_copies(plans: list[Plan], *, merged: dict[str, str],
                in_ledger: Callable[[Plan], bool]) -> tuple[list[Plan], list[SourceResult]]:
    """The plans that are no copy, and a skipped result for each source whose bytes
    (sha256, computed by the inspection) are another's.

    The source kept is one merged already: one of ``merged`` (sha256 -> path of a source
    the re-run shortcut found merged), else one that ``in_ledger(plan)`` says the ledger
    holds at its path with this content, else the first in the order given.  A source the
    ledger holds so is never a copy (the target decides on it like any other), nor is one
    with a non-empty ``-wal`` beside it: its content is more than its bytes.
    """
    originals: dict[str, tuple[str, bool]] = {sha: (path, True) for sha, path in merged.items()}
    copies, skipped = set(), []
    for plan in sorted(plans, key=lambda p: not in_ledger(p)):  # stable: otherwise in the order given
        if plan.info.active:
            continue
        found = originals.get(plan.info.sha256)
        if found is None or in_ledger(plan):
            originals.setdefault(plan.info.sha256, (str(plan.info.path), in_ledger(plan)))
            continue
        copies.add(id(plan))
        skipped.append(plan.result(SKIPPED, copy_reason(found[0], merged=found[1]), rows=0))
    return [p for p in plans if id(p) not in copies], skipped
