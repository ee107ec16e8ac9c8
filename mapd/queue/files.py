"""mapd's record of every data file it found and what became of it (``ingest.SourceFile``), and of its data paths."""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import Enum
from pathlib import Path

import datajoint as dj

from .. import metrics
from ..find.files import FileOnDisk, ScanProblem
from ..find.health import PathHealth
from ..logs import get_logger
from ..schemas import ingest
from .policy import Policy

HOST = socket.gethostname()
KINDS = ("behavior", "probe")  # behavior files, probe folders
log = get_logger("mapd.queue")
REASON_LENGTH = 2000
RECORD_ATTEMPTS = 5


class FileState(str, Enum):
    PENDING = "pending"
    INGESTED = "ingested"
    WAITING = "waiting"  # for its subject to be entered
    SKIPPED = "skipped"  # nothing to ingest (aborted session, other protocol)
    FAILED = "failed"  # bad file or conflict; the reason says which
    CHANGED = "changed"  # ingested, then its content changed on disk: reported, not ingested again
    IGNORED = "ignored"  # not a session file (its name says so): listed, never a failure


@dataclass(frozen=True)
class FileOutcome:
    file: FileOnDisk
    state: FileState
    reason: str = ""
    detail: dict | None = None  # e.g. {"skipped_trials": {reason: count}, "session": {...}}
    sha256: str | None = None  # of the content, when it was read


def file_id(kind: str, file: FileOnDisk) -> str:
    """Stable id of a file: its kind, its data path and its path below it.

    The data path is part of it: the same relative path under two rigs is two
    files (a copy, or another file of the same name).
    """
    return hashlib.sha1(f"{kind}:{file.data_root}:{file.subpath}".encode()).hexdigest()[:16]


def _rows(ids) -> "ingest.SourceFile":
    """SourceFile rows with these ids.

    One ``IN`` condition: a list of key dicts would become an OR of thousands
    of conditions on a large scan. File ids are hex digests, safe to inline.
    """
    ids = sorted(set(ids))
    assert all(fid.isalnum() for fid in ids)
    return ingest.SourceFile & (f"file_id IN ({', '.join(repr(fid) for fid in ids)})" if ids else "FALSE")


def known_states(kind: str, files: list[FileOnDisk]) -> dict[str, FileState]:
    """The recorded state of each of these files that mapd has seen before, by file id."""
    if not files:
        return {}
    rows = _rows(file_id(kind, file) for file in files).to_arrays("file_id", "state")
    return {fid: FileState(state) for fid, state in zip(*rows)}


def ingested_unchanged(kind: str, files: list[FileOnDisk]) -> set[str]:
    """Ids of those of these files the queue holds as ingested, with the same stat: nothing to do or write."""
    if not files:
        return set()
    rows = _rows(file_id(kind, file) for file in files).proj("state", "file_size", "file_mtime").to_dicts()
    known = {row["file_id"]: row for row in rows}
    return {fid for file in files if (row := known.get(fid := file_id(kind, file))) is not None
            and row["state"] == FileState.INGESTED.value
            and (row["file_size"], row["file_mtime"]) == file.version}


def record(kind: str, outcomes: list[FileOutcome], h2o_dates: dict[str, tuple[str, date | None]] | None = None) -> None:
    """Write each file's outcome (insert or update its SourceFile row)."""
    if not outcomes:
        return
    for attempt in range(RECORD_ATTEMPTS):
        try:
            return _replace_rows(kind, outcomes, h2o_dates or {})
        except dj.errors.DuplicateError:
            # Another process inserted one of these files' rows between our
            # delete and insert; on the next attempt the delete removes it.
            if attempt == RECORD_ATTEMPTS - 1:
                raise


def _replace_rows(kind: str, outcomes: list[FileOutcome], h2o_dates: dict[str, tuple[str, date | None]]) -> None:
    now = now_ms()
    ids = [file_id(kind, outcome.file) for outcome in outcomes]
    table = ingest.SourceFile
    with table.connection.transaction:
        existing = _rows(ids)
        previous = {row["file_id"]: row for row in existing.proj(
            "attempts", "found_time", "seen_time", "h2o", "session_date", "sha256").to_dicts()}
        rows = []
        for fid, outcome in zip(ids, outcomes):
            before = previous.get(fid, {})
            h2o, session_date = h2o_dates.get(fid, (before.get("h2o", ""), before.get("session_date")))
            rows.append(
                dict(
                    file_id=fid,
                    kind=kind,
                    data_root=str(outcome.file.data_root),
                    rig=outcome.file.rig,
                    subpath=outcome.file.subpath,
                    h2o=h2o,
                    session_date=session_date,
                    file_size=outcome.file.size,
                    file_mtime=outcome.file.mtime,
                    sha256=outcome.sha256 or before.get("sha256"),
                    state=outcome.state.value,
                    reason=outcome.reason[:REASON_LENGTH],
                    detail=outcome.detail,
                    attempts=int(before.get("attempts", 0)) + 1,
                    host=HOST,
                    found_time=before.get("found_time", now),
                    seen_time=before.get("seen_time", now),
                    next_attempt=now,
                    updated_time=now,
                )
            )
        # Replace whole rows (PostgreSQL has no REPLACE): delete, then insert, atomically.
        existing.delete_quick()
        table.insert(rows)


def log_outcome(outcome: FileOutcome) -> None:
    if outcome.state is FileState.INGESTED:
        return
    if outcome.state is FileState.FAILED:
        log.error("file failed", file=str(outcome.file.path), rig=outcome.file.rig, error=outcome.reason)
    else:
        log.warning(f"file {outcome.state.value}", file=str(outcome.file.path), rig=outcome.file.rig,
                    reason=outcome.reason)


def state_counts() -> dict[str, dict[str, int]]:
    """Units per kind and state (every state, zero included): the queue's depth."""
    counts = {kind: {state.value: 0 for state in FileState} for kind in KINDS}
    for row in dj.U("kind", "state").aggr(ingest.SourceFile, n="count(*)").to_dicts():
        counts[row["kind"]][row["state"]] = int(row["n"])
    return counts


def oldest_waiting_seconds() -> dict[str, float]:
    """Kind -> age of its oldest waiting unit (kinds with none waiting are left out)."""
    rows = dj.U("kind").aggr(ingest.SourceFile & {"state": FileState.WAITING.value}, oldest="min(found_time)")
    now = now_ms()
    return {row["kind"]: (now - row["oldest"]).total_seconds() for row in rows.to_dicts()}


# ---- the daemon's queue -------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """What registering found files changed."""

    new: int = 0
    requeued: int = 0  # failed, skipped or ingested files whose stat changed: looked at again


@dataclass(frozen=True)
class QueuedFile:
    """A pending file as the queue recorded it."""

    file_id: str
    file: FileOnDisk  # the stat recorded when it was last seen
    attempts: int


# A file in one of these states whose stat changes is looked at again: a
# failed or skipped file may have been fixed; an ingested one is compared by
# content (a touch changes nothing; new bytes make it `changed`).
REEXAMINED = frozenset({FileState.FAILED, FileState.SKIPPED, FileState.INGESTED, FileState.CHANGED})


def register_found(kind: str, files: list[FileOnDisk], policy: Policy,
                   h2o_dates: dict[str, tuple[str, date | None]]) -> Registration:
    """Queue new files and notice changed ones; files already known and unchanged are left alone.

    A new or changed file is taken once settled (:meth:`Policy.settled_at`).
    """
    if not files:
        return Registration()
    now = now_ms()
    table = ingest.SourceFile
    ids = {file_id(kind, file): file for file in files}
    known = {row["file_id"]: row for row in _rows(ids).proj("state", "file_size", "file_mtime").to_dicts()}
    new_rows, requeued = [], 0
    for fid, file in ids.items():
        row = known.get(fid)
        ready = policy.settled_at(now, file.mtime)
        h2o, session_date = h2o_dates.get(fid, ("", None))
        if row is None:
            new_rows.append(dict(file_id=fid, kind=kind, data_root=str(file.data_root), rig=file.rig,
                                 subpath=file.subpath, h2o=h2o, session_date=session_date, file_size=file.size,
                                 file_mtime=file.mtime, state=FileState.PENDING.value, host=HOST, found_time=now,
                                 seen_time=now, next_attempt=ready, updated_time=now))
            continue
        if (row["file_size"], row["file_mtime"]) == file.version:
            continue
        update = dict(file_id=fid, file_size=file.size, file_mtime=file.mtime, seen_time=now, updated_time=now)
        state = FileState(row["state"])
        if state in REEXAMINED:
            update.update(state=FileState.PENDING.value, attempts=0, next_attempt=ready)
            requeued += 1
        elif state is FileState.PENDING:
            update.update(next_attempt=ready)  # still being written
        table.update1(update)
    if new_rows:
        table.insert(new_rows, skip_duplicates=True)  # another process may register the same file
    return Registration(new=len(new_rows), requeued=requeued)


def ready_groups(kind: str) -> list[tuple[str, date | None]]:
    """(h2o, date) of pending files ready to be taken, oldest first.

    A day whose files are not all settled waits, so that a split session's
    files are ingested together. A date of None holds pending files whose
    name gives no day (queued again by hand): they are looked at, not claimed.
    """
    now = now_ms()
    rows = (ingest.SourceFile & {"kind": kind, "state": FileState.PENDING.value}).proj(
        "h2o", "session_date", "next_attempt").to_dicts(order_by="next_attempt")
    earliest: dict[tuple[str, date | None], datetime] = {}
    blocked = set()
    for row in rows:
        key = (row["h2o"], row["session_date"])
        if row["next_attempt"] > now:
            blocked.add(key)
        earliest.setdefault(key, row["next_attempt"])
    return [key for key in earliest if key not in blocked]


def pending_files(kind: str, h2o: str, session_date: date | None) -> list[QueuedFile]:
    rows = (ingest.SourceFile & {"kind": kind, "state": FileState.PENDING.value, "h2o": h2o}
            & ({"session_date": session_date} if session_date else "session_date IS NULL")).proj(
        "data_root", "rig", "subpath", "file_size", "file_mtime", "attempts").to_dicts()
    return [QueuedFile(row["file_id"], _file(row), int(row["attempts"])) for row in rows]


def _file(row: dict) -> FileOnDisk:
    root = Path(row["data_root"])
    return FileOnDisk(root / row["subpath"], root, row["rig"], row["file_size"], row["file_mtime"])


def postpone(kind: str, file: FileOnDisk, delay_seconds: float, reason: str = "", *, seen: bool = False,
             attempt: bool = False) -> None:
    """Leave a pending file for later: still being written (``seen``) or after a transient failure."""
    now = now_ms()
    fid = file_id(kind, file)
    row = (ingest.SourceFile & {"file_id": fid}).proj("attempts").to_dicts()
    update = dict(file_id=fid, file_size=file.size, file_mtime=file.mtime, reason=reason[:REASON_LENGTH],
                  next_attempt=now + timedelta(seconds=delay_seconds), updated_time=now, host=HOST)
    if seen:
        update["seen_time"] = now
    if attempt and row:
        update["attempts"] = int(row[0]["attempts"]) + 1
    ingest.SourceFile.update1(update)
    if attempt:
        metrics.retried(kind)


def pending_count(h2os: list[str]) -> int:
    """Pending files of these subjects (of any kind)."""
    if not h2os:
        return 0
    return len(ingest.SourceFile & {"state": FileState.PENDING.value} & [{"h2o": h2o} for h2o in h2os])


def has_pending() -> bool:
    return bool(ingest.SourceFile & {"state": FileState.PENDING.value})


def attempts(kind: str, file: FileOnDisk) -> int:
    rows = (ingest.SourceFile & {"file_id": file_id(kind, file)}).to_arrays("attempts")
    return int(rows[0]) if len(rows) else 0


def release_waiting(h2os: list[str]) -> int:
    """Files waiting for these subjects become pending now; returns how many."""
    rows = (ingest.SourceFile & {"state": FileState.WAITING.value} & [{"h2o": h2o} for h2o in h2os]).keys()
    return _requeue(rows)


def release_waiting_probes(h2o: str, session_date: date) -> int:
    """Probe folders of this day that waited for its behavior session become pending now."""
    rows = (ingest.SourceFile & {"kind": "probe", "state": FileState.WAITING.value, "h2o": h2o,
                                 "session_date": session_date}).keys()
    return _requeue(rows)


def requeue_failed(ids: list[str] | None = None) -> int:
    """``mapd retry``: failed files (all, or these ids) become pending now; returns how many."""
    query = ingest.SourceFile & {"state": FileState.FAILED.value}
    if ids is not None:
        query &= [{"file_id": fid} for fid in ids]
    return _requeue(query.keys())


def _requeue(keys: list[dict]) -> int:
    # No transaction of its own: add_subjects calls it inside the one entering the subjects.
    now = now_ms()
    for key in keys:
        ingest.SourceFile.update1(dict(key, state=FileState.PENDING.value, reason="", attempts=0,
                                       next_attempt=now, updated_time=now))
    return len(keys)


# ---- data paths -----------------------------------------------------------

SCAN_PROBLEMS_KEPT = 100  # listed per data path; the count says how many there were


def path_id(data_root: Path) -> str:
    return hashlib.sha1(str(data_root).encode()).hexdigest()[:16]


def record_path_health(checks: list[PathHealth]) -> list[PathHealth]:
    """Record this host's view of its data paths; returns the checks whose health changed."""
    now = now_ms()
    key = {"host": HOST}
    known = {row["path_id"]: row for row in (ingest.DataPath & key).proj("health").to_dicts()}
    changed = []
    for check in checks:
        pid = path_id(check.data_path.path)
        row = dict(key, path_id=pid, health=check.health, problem=check.problem[:REASON_LENGTH], checked_time=now)
        if pid not in known:
            ingest.DataPath.insert1(dict(row, data_root=str(check.data_path.path), kind=check.data_path.kind,
                                         rig=check.data_path.rig, since=now), skip_duplicates=True)
            changed.append(check)
        elif known[pid]["health"] != check.health:
            ingest.DataPath.update1(dict(row, since=now))
            changed.append(check)
        else:
            ingest.DataPath.update1(row)
    return changed


def record_scan_problems(data_root: Path, problems: list[ScanProblem]) -> None:
    """What the last full scan of a data path could not use (replaces the previous list)."""
    rows = [{"path": str(problem.path), "reason": problem.reason} for problem in problems[:SCAN_PROBLEMS_KEPT]]
    key = {"host": HOST, "path_id": path_id(data_root)}
    if ingest.DataPath & key:
        ingest.DataPath.update1(dict(key, scanned_time=now_ms(), scan_problems=rows,
                                     scan_problem_count=len(problems)))


def now_ms() -> datetime:
    # The columns keep milliseconds; comparing with a finer time would round differently.
    now = datetime.now()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
