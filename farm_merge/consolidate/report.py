"""What a merge reports: one :class:`SourceResult` per source, gathered in a :class:`MergeReport`."""

from __future__ import annotations

from dataclasses import dataclass, field

MERGED, SKIPPED, FAILED, PLANNED = "merged", "skipped", "failed", "planned"


@dataclass
class SourceResult:
    """What happened to one source (or to an argument that matched nothing)."""

    path: str
    status: str
    reason: str | None = None
    simulation_ids: list[str] = field(default_factory=list)
    era: str | None = None
    size: int = 0
    rows: int = 0
    added_columns: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class MergeReport:
    target: str
    experiment_id: str
    results: list[SourceResult] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0

    def _with(self, status: str) -> list[SourceResult]:
        return [r for r in self.results if r.status == status]

    @property
    def merged(self) -> list[SourceResult]:
        return self._with(PLANNED if self.dry_run else MERGED)

    @property
    def skipped(self) -> list[SourceResult]:
        return self._with(SKIPPED)

    @property
    def failed(self) -> list[SourceResult]:
        return self._with(FAILED)

    @property
    def exit_code(self) -> int:
        """0 when every source merged or was skipped, 1 when any failed."""
        return 1 if self.failed else 0

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "experiment_id": self.experiment_id,
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 3),
            "merged": len(self.merged),
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "rows": sum(r.rows for r in self.merged),
            "sources": [r.to_dict() for r in self.results],
        }


