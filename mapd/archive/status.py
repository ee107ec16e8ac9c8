"""What ``mapd status`` says of the archive: batches and files per state, bytes archived and freed, problems."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..schemas import ingest
from .cleanup import freed_bytes_per_rig

SHOWN_PROBLEMS = 20


@dataclass(frozen=True)
class ArchiveSummary:
    batches: dict[str, int] = field(default_factory=dict)  # state -> batches
    files: dict[str, int] = field(default_factory=dict)  # state -> files
    archived_bytes: int = 0  # of files archived and verified (cleaned ones included)
    freed_bytes: dict[str, int] = field(default_factory=dict)  # rig ('ephys' for ephys paths) -> bytes deleted
    problems: list[str] = field(default_factory=list)  # failed and blocked batches, with the reason

    def as_dict(self) -> dict:
        return asdict(self)


def summary() -> ArchiveSummary:
    batches = _counts(ingest.ArchiveBatch)
    if not batches:
        return ArchiveSummary()
    done = ingest.ArchiveFile & [{"state": "archived"}, {"state": "cleaned"}]
    archived_bytes = int(sum(done.to_arrays("file_size"))) if done else 0
    troubled = ingest.ArchiveBatch & [{"state": "failed"}, {"state": "blocked"}]
    problems = [f"{row['state']}: {row['h2o']} {row['session_date']} {row['part']}: {row['reason']}"
                for row in troubled.to_dicts(order_by="session_date", limit=SHOWN_PROBLEMS)]
    return ArchiveSummary(batches, _counts(ingest.ArchiveFile), archived_bytes, freed_bytes_per_rig(), problems)


def _counts(table) -> dict[str, int]:
    counts: dict[str, int] = {}
    for state in table.to_arrays("state"):
        counts[str(state)] = counts.get(str(state), 0) + 1
    return counts
