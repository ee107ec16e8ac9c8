"""What mapd knows: the queue per state, per rig activity, problems, and which daemons are alive."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import claims, registry
from .schemas import ingest

LISTED = 20


@dataclass(frozen=True)
class FileProblem:
    file_id: str
    path: str
    rig: str | None
    state: str
    reason: str
    updated: str
    attempts: int


@dataclass(frozen=True)
class RigActivity:
    rig: str
    last_file_seen: str | None  # path of the most recently found file
    last_seen_time: str | None
    last_ingest_time: str | None
    last_ingested_file: str | None


@dataclass(frozen=True)
class DaemonInfo:
    host: str
    pid: int
    started: str
    heartbeat: str
    activity: str


@dataclass
class StatusReport:
    files: dict[str, int]  # state -> files: the queue depth per state
    sessions: int
    daemons: list[DaemonInfo] = field(default_factory=list)  # alive (recent heartbeat)
    rigs: list[RigActivity] = field(default_factory=list)
    oldest_waiting: FileProblem | None = None
    waiting: list[FileProblem] = field(default_factory=list)
    failed: list[FileProblem] = field(default_factory=list)  # most recent first
    changed: list[FileProblem] = field(default_factory=list)  # changed on disk after ingest

    def as_dict(self) -> dict:
        return asdict(self)


def collect(heartbeat_seconds: float) -> StatusReport:
    waiting = _problems("waiting", order="found_time")
    return StatusReport(
        files=registry.state_counts(),
        sessions=len(ingest.BehaviorIngest()),
        daemons=[DaemonInfo(d["host"], d["pid"], _time(d["started_time"]), _time(d["heartbeat_time"]), d["activity"])
                 for d in claims.live_daemons(heartbeat_seconds)],
        rigs=_rig_activity(),
        oldest_waiting=waiting[0] if waiting else None,
        waiting=waiting,
        failed=_problems("failed", order="updated_time DESC"),
        changed=_problems("changed", order="updated_time DESC"),
    )


def find_files(item: str, state: str | None = None) -> list[str]:
    """File ids matching ITEM: an id, an absolute path or a path relative to its data root."""
    query = ingest.SourceFile & ({"state": state} if state else {})
    if (query & {"file_id": item}):
        return [item]
    path = Path(item)
    ids = []
    for row in query.proj("data_root", "subpath").to_dicts():
        full = Path(row["data_root"]) / row["subpath"]
        if full == path.absolute() or row["subpath"] == item:
            ids.append(row["file_id"])
    return ids


def _problems(state: str, order: str) -> list[FileProblem]:
    rows = (ingest.SourceFile & {"state": state}).to_dicts(order_by=order, limit=LISTED)
    return [
        FileProblem(row["file_id"], f"{row['data_root']}/{row['subpath']}", row["rig"], row["state"], row["reason"],
                    _time(row["updated_time"]), int(row["attempts"]))
        for row in rows
    ]


def _rig_activity() -> list[RigActivity]:
    rows = (ingest.SourceFile & {"kind": "behavior"}).proj("rig", "subpath", "found_time", "state",
                                                          "updated_time").to_dicts()
    rigs: dict[str, RigActivity] = {}
    for rig in sorted({row["rig"] for row in rows if row["rig"]}):
        mine = [row for row in rows if row["rig"] == rig]
        seen = max(mine, key=lambda row: row["found_time"])
        ingested = [row for row in mine if row["state"] == "ingested"]
        last = max(ingested, key=lambda row: row["updated_time"]) if ingested else None
        rigs[rig] = RigActivity(rig, seen["subpath"], _time(seen["found_time"]),
                                _time(last["updated_time"]) if last else None, last["subpath"] if last else None)
    return list(rigs.values())


def _time(value) -> str | None:
    return None if value is None else value.isoformat(sep=" ", timespec="seconds")
