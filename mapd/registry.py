"""mapd's record of every data file it found and what became of it (``ingest.SourceFile``)."""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import Enum

import datajoint as dj

from .ingest.behavior import FileOnDisk
from .schemas import ingest

HOST = socket.gethostname()
REASON_LENGTH = 2000
RECORD_ATTEMPTS = 5


class FileState(str, Enum):
    PENDING = "pending"
    INGESTED = "ingested"
    WAITING = "waiting"  # for its subject to be entered
    SKIPPED = "skipped"  # nothing to ingest (aborted session, other protocol)
    FAILED = "failed"  # bad file or conflict; the reason says which
    CHANGED = "changed"  # ingested, then the file changed on disk: reported, not ingested again


@dataclass(frozen=True)
class FileOutcome:
    file: FileOnDisk
    state: FileState
    reason: str = ""
    detail: dict | None = None  # e.g. {"skipped_trials": {reason: count}, "session": {...}}


def file_id(kind: str, file: FileOnDisk) -> str:
    """Stable id of a file: its kind and path relative to its data root.

    Relative, so that hosts mounting one share at different places agree.
    """
    return hashlib.sha1(f"{kind}:{file.subpath}".encode()).hexdigest()[:16]


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
            "attempts", "found_time", "seen_time", "h2o", "session_date").to_dicts()}
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


def state_counts() -> dict[str, int]:
    """Files per state (every state, zero included): the queue's depth."""
    counts = {state.value: 0 for state in FileState}
    for row in dj.U("state").aggr(ingest.SourceFile, n="count(*)").to_dicts():
        counts[row["state"]] = int(row["n"])
    return counts


# ---- the daemon's queue -------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """What registering found files changed."""

    new: int = 0
    requeued: int = 0  # failed or skipped files that changed on disk: tried again
    changed_after_ingest: tuple[FileOnDisk, ...] = ()


def register_found(kind: str, files: list[FileOnDisk], settle_seconds: float,
                   h2o_dates: dict[str, tuple[str, date | None]]) -> Registration:
    """Queue new files and notice changed ones; files already known and unchanged are left alone.

    A new or changed file is taken only after ``settle_seconds`` without a
    further change. An ingested file that changed is reported, not ingested again.
    """
    if not files:
        return Registration()
    now = now_ms()
    table = ingest.SourceFile
    ids = {file_id(kind, file): file for file in files}
    known = {row["file_id"]: row for row in _rows(ids).proj(
        "state", "file_size", "file_mtime", "reason").to_dicts()}
    ready = now + timedelta(seconds=settle_seconds)
    new_rows, requeued, changed = [], 0, []
    for fid, file in ids.items():
        row = known.get(fid)
        h2o, session_date = h2o_dates.get(fid, ("", None))
        if row is None:
            new_rows.append(dict(file_id=fid, kind=kind, data_root=str(file.data_root), rig=file.rig,
                                 subpath=file.subpath, h2o=h2o, session_date=session_date, file_size=file.size,
                                 file_mtime=file.mtime, state=FileState.PENDING.value, host=HOST, found_time=now,
                                 seen_time=now, next_attempt=ready, updated_time=now))
            continue
        if (row["file_size"], row["file_mtime"]) == (file.size, file.mtime):
            continue
        update = dict(file_id=fid, file_size=file.size, file_mtime=file.mtime, seen_time=now, updated_time=now)
        state = FileState(row["state"])
        if state in (FileState.INGESTED, FileState.CHANGED):
            update.update(state=FileState.CHANGED.value, reason=(
                f"changed after ingest: now {file.size} bytes, modified "
                f"{datetime.fromtimestamp(file.mtime).isoformat(timespec='seconds')}; not ingested again"))
            changed.append(file)
        elif state in (FileState.FAILED, FileState.SKIPPED):
            update.update(state=FileState.PENDING.value, reason="", attempts=0, next_attempt=ready)
            requeued += 1
        elif state is FileState.PENDING:
            update.update(next_attempt=ready)  # still being written
        table.update1(update)
    if new_rows:
        table.insert(new_rows, skip_duplicates=True)  # another process may register the same file
    return Registration(new=len(new_rows), requeued=requeued, changed_after_ingest=tuple(changed))


def ready_groups(kind: str) -> list[tuple[str, date]]:
    """(h2o, date) of pending files ready to be taken, oldest first.

    A day whose files are not all settled waits, so that a split session's
    files are ingested together.
    """
    now = now_ms()
    rows = (ingest.SourceFile & {"kind": kind, "state": FileState.PENDING.value}).proj(
        "h2o", "session_date", "next_attempt").to_dicts(order_by="next_attempt")
    earliest: dict[tuple[str, date], datetime] = {}
    blocked = set()
    for row in rows:
        key = (row["h2o"], row["session_date"])
        if row["next_attempt"] > now:
            blocked.add(key)
        earliest.setdefault(key, row["next_attempt"])
    return [key for key in earliest if key not in blocked]


def pending_files(kind: str, h2o: str, session_date: date | None) -> list[dict]:
    return (ingest.SourceFile & {"kind": kind, "state": FileState.PENDING.value, "h2o": h2o,
                                 "session_date": session_date}).to_dicts()


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


def has_pending(kind: str) -> bool:
    return bool(ingest.SourceFile & {"kind": kind, "state": FileState.PENDING.value})


def attempts(kind: str, file: FileOnDisk) -> int:
    rows = (ingest.SourceFile & {"file_id": file_id(kind, file)}).to_arrays("attempts")
    return int(rows[0]) if len(rows) else 0


def release_waiting(h2os: list[str]) -> int:
    """Files waiting for these subjects become pending now; returns how many."""
    rows = (ingest.SourceFile & {"state": FileState.WAITING.value} & [{"h2o": h2o} for h2o in h2os]).keys()
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


def now_ms() -> datetime:
    # The columns keep milliseconds; comparing with a finer time would round differently.
    now = datetime.now()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
