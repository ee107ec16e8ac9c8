"""mapd's record of every data file it found and what became of it (``ingest.SourceFile``)."""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass
from datetime import date, datetime
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


def known_states(kind: str, files: list[FileOnDisk]) -> dict[str, FileState]:
    """The recorded state of each of these files that mapd has seen before, by file id."""
    if not files:
        return {}
    ids = [{"file_id": file_id(kind, file)} for file in files]
    rows = (ingest.SourceFile & ids).to_arrays("file_id", "state")
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
    now = datetime.now().replace(microsecond=0)
    ids = [file_id(kind, outcome.file) for outcome in outcomes]
    table = ingest.SourceFile
    with table.connection.transaction:
        existing = table & [{"file_id": fid} for fid in ids]
        previous = {row["file_id"]: row for row in existing.proj("attempts", "found_time").to_dicts()}
        rows = []
        for fid, outcome in zip(ids, outcomes):
            h2o, session_date = h2o_dates.get(fid, ("", None))
            before = previous.get(fid, {})
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
                    updated_time=now,
                )
            )
        # Replace whole rows (PostgreSQL has no REPLACE): delete, then insert, atomically.
        existing.delete_quick()
        table.insert(rows)


def state_counts() -> dict[str, int]:
    counts = {state.value: 0 for state in FileState}
    for state in (ingest.SourceFile).to_arrays("state"):
        counts[state] += 1
    return counts
