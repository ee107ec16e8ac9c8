"""What mapd knows: the queue per state, per rig activity, problems, data path health, and which daemons are alive."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import datajoint as dj

from ..find.health import PathHealth
from ..liveness import LocalDaemon
from ..schemas import experiment, ingest, lab
from . import claims
from . import files as queue

LISTED = 20  # files listed per state; the counts say how many there are


@dataclass(frozen=True)
class FileProblem:
    file_id: str
    path: str
    rig: str | None
    state: str
    reason: str
    updated: str
    attempts: int
    age_seconds: float  # since the file was found


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


@dataclass(frozen=True)
class PathReport:
    kind: str
    rig: str | None
    path: str
    health: str  # ok | missing | not a directory | unreadable
    problem: str
    since: str | None  # when this health was first recorded on this host (None: not recorded yet)
    scan_problem_count: int = 0  # entries the last full scan could not use
    scan_problems: list[dict] = field(default_factory=list)  # [{path, reason}], the first few


@dataclass(frozen=True)
class ExportProblem:
    """A failed export of a session (mapd run, config export:)."""

    target: str  # nwb | reports
    session: str  # h2o and date
    subject_id: int
    reason: str
    time: str | None


@dataclass
class StatusReport:
    local_daemon: dict | None  # this host's daemon from state_dir, with "alive" (works without the database)
    paths: list[PathReport]
    database: str = "ok"  # or why it cannot be reached
    files: dict[str, int] = field(default_factory=dict)  # state -> behavior files: the queue depth per state
    probes: dict[str, int] = field(default_factory=dict)  # state -> probe folders
    sessions: int = 0
    daemons: list[DaemonInfo] = field(default_factory=list)  # alive (recent heartbeat in the database)
    rigs: list[RigActivity] = field(default_factory=list)
    oldest_waiting: FileProblem | None = None
    waiting: list[FileProblem] = field(default_factory=list)
    failed: list[FileProblem] = field(default_factory=list)  # most recent first
    skipped: list[FileProblem] = field(default_factory=list)
    ignored: list[FileProblem] = field(default_factory=list)
    changed: list[FileProblem] = field(default_factory=list)  # content changed on disk after ingest
    exports: dict[str, dict[str, int]] = field(default_factory=dict)  # target -> state (done | failed) -> sessions
    export_failures: list[ExportProblem] = field(default_factory=list)  # most recent first

    def as_dict(self) -> dict:
        return asdict(self)


def local_report(local: LocalDaemon | None, checks: list[PathHealth], database: str = "ok") -> StatusReport:
    """What can be told without the database: this host's daemon and its data paths."""
    daemon = dict(asdict(local), alive=local.alive, heartbeat_age_seconds=round(local.heartbeat_age, 1)) if local else None
    return StatusReport(local_daemon=daemon, paths=[_path_report(check, None) for check in checks],
                        database=database)


def collect(heartbeat_seconds: float, local: LocalDaemon | None, checks: list[PathHealth]) -> StatusReport:
    report = local_report(local, checks)
    recorded = {row["data_root"]: row for row in (ingest.DataPath & {"host": queue.HOST}).to_dicts()}
    report.paths = [_path_report(check, recorded.get(str(check.data_path.path))) for check in checks]
    waiting = _problems("waiting", order="found_time")
    counts = queue.state_counts()
    report.files, report.probes = counts["behavior"], counts["probe"]
    report.sessions = len(ingest.BehaviorIngest())
    report.daemons = [DaemonInfo(d["host"], d["pid"], _time(d["started_time"]), _time(d["heartbeat_time"]),
                                 d["activity"]) for d in claims.live_daemons(heartbeat_seconds)]
    report.rigs = _rig_activity()
    report.oldest_waiting = waiting[0] if waiting else None
    report.waiting = waiting
    report.failed = _problems("failed", order="updated_time DESC")
    report.skipped = _problems("skipped", order="updated_time DESC")
    report.ignored = _problems("ignored", order="updated_time DESC")
    report.changed = _problems("changed", order="updated_time DESC")
    report.exports, report.export_failures = _exports()
    return report


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


def _path_report(check: PathHealth, row: dict | None) -> PathReport:
    same = row is not None and row["health"] == check.health
    problems = (row or {}).get("scan_problems") or []
    return PathReport(check.data_path.kind, check.data_path.rig, str(check.data_path.path), check.health,
                      check.problem, _time(row["since"]) if same else None,
                      int((row or {}).get("scan_problem_count") or 0), problems[:LISTED])


def _problems(state: str, order: str) -> list[FileProblem]:
    rows = (ingest.SourceFile & {"state": state}).to_dicts(order_by=order, limit=LISTED)
    now = datetime.now()
    return [
        FileProblem(row["file_id"], f"{row['data_root']}/{row['subpath']}", row["rig"], row["state"], row["reason"],
                    _time(row["updated_time"]), int(row["attempts"]),
                    round((now - row["found_time"]).total_seconds(), 1))
        for row in rows
    ]


def _exports() -> tuple[dict[str, dict[str, int]], list[ExportProblem]]:
    counts: dict[str, dict[str, int]] = {}
    for row in dj.U("target", "state").aggr(ingest.SessionExport, n="count(*)").to_dicts():
        counts.setdefault(row["target"], {})[row["state"]] = int(row["n"])
    failed = (ingest.SessionExport * experiment.Session.proj("session_date")
              * lab.WaterRestriction.proj("water_restriction_number") & {"state": "failed"})
    rows = failed.to_dicts(order_by="export_time DESC", limit=LISTED)
    return counts, [ExportProblem(r["target"], f"{r['water_restriction_number']} {r['session_date']}",
                                  int(r["subject_id"]), r["reason"], _time(r["export_time"])) for r in rows]


def _rig_activity() -> list[RigActivity]:
    """Per rig, its newest file and its last ingest: two small queries a rig, not every row of every year."""
    files = ingest.SourceFile & {"kind": "behavior"} & "rig IS NOT NULL AND rig <> ''"
    rigs = []
    for rig in sorted(row["rig"] for row in (dj.U("rig") & files).to_dicts()):
        mine = files & {"rig": rig}
        [seen] = mine.proj("subpath", "found_time").to_dicts(order_by="found_time DESC", limit=1)
        last = (mine & {"state": "ingested"}).proj("subpath", "updated_time").to_dicts(
            order_by="updated_time DESC", limit=1)
        rigs.append(RigActivity(rig, seen["subpath"], _time(seen["found_time"]),
                                _time(last[0]["updated_time"]) if last else None,
                                last[0]["subpath"] if last else None))
    return rigs


def _time(value) -> str | None:
    return None if value is None else value.isoformat(sep=" ", timespec="seconds")
