"""What mapd knows: files per state, and the files waiting or failed with their reasons."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from . import registry
from .schemas import experiment, ingest

LISTED_PER_STATE = 50


@dataclass(frozen=True)
class FileProblem:
    path: str
    rig: str | None
    state: str
    reason: str
    updated: str


@dataclass
class StatusReport:
    files: dict[str, int]  # state -> files
    sessions: int
    waiting: list[FileProblem] = field(default_factory=list)
    failed: list[FileProblem] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def collect() -> StatusReport:
    return StatusReport(
        files=registry.state_counts(),
        sessions=len(ingest.BehaviorIngest()),
        waiting=_problems("waiting"),
        failed=_problems("failed"),
    )


def _problems(state: str) -> list[FileProblem]:
    rows = (ingest.SourceFile & {"state": state}).to_dicts(order_by="updated_time DESC", limit=LISTED_PER_STATE)
    return [
        FileProblem(
            path=f"{row['data_root']}/{row['subpath']}",
            rig=row["rig"],
            state=row["state"],
            reason=row["reason"],
            updated=str(row["updated_time"]),
        )
        for row in rows
    ]
