"""Cleanup: a source file leaves the rig only when its archived copy is verified and every rule holds.

A file is deleted when all of these hold, checked in this order, the last
two just before the deletion:

1. cleanup is on (``cleanup.enabled``);
2. its batch is archived and the file verified there (size and sha256);
3. the grace period (``cleanup.grace_seconds``) has passed since verification;
4. its real path (symbolic links resolved, ``..`` gone) lies inside a ``cleanup.roots`` entry;
5. it is unchanged since archived: size, mtime, and its sha256 read again;
6. the archive still holds it (the transport verifies the batch again).

Anything else keeps the file, with the reason recorded and shown. Only files
are deleted; for raw ephys, the probe folder and the session's date folder
go too once empty, never anything above them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from .. import failpoints
from ..config import MapdConfig
from ..find.files import sha256_of
from ..logs import get_logger
from ..queue.files import now_ms
from ..schemas import ingest
from .transport import Transport, TransportError

log = get_logger("mapd.archive")


@dataclass(frozen=True)
class CleanupDecision:
    """What cleanup does with one archived file: delete it (``goes``), or keep it and why."""

    batch_id: str
    file_id: str
    path: Path
    rig: str | None
    size: int
    goes: bool
    reason: str  # why it stays; for a file that goes, what was checked


def review(config: MapdConfig, day: tuple[str, date] | None = None) -> list[CleanupDecision]:
    """Staged source files not yet cleaned (all, or one day's), with what cleanup would do.

    Rules 1-5 without reading any file: the checksum is read again only by :func:`clean`.
    """
    now = now_ms()
    batches = ingest.ArchiveBatch.proj("h2o", "session_date", batch_state="state")
    if day is not None:
        batches &= {"h2o": day[0], "session_date": day[1]}
    rows = (ingest.ArchiveFile * batches & "state != 'cleaned'").to_dicts(order_by=("data_root", "subpath"))
    return [_decide(config, row, now) for row in rows]


def _decide(config: MapdConfig, row: dict, now: datetime) -> CleanupDecision:
    path = Path(row["data_root"]) / row["subpath"]

    def keep(reason: str) -> CleanupDecision:
        return CleanupDecision(row["batch_id"], row["file_id"], path, row["rig"], row["file_size"], False, reason)

    if row["state"] != "archived" or row["verified_time"] is None:
        return keep(f"not archived yet (batch {row['batch_state']})")
    grace_ends = row["verified_time"] + timedelta(seconds=config.cleanup.grace_seconds)
    if now < grace_ends:
        return keep(f"grace period: may go after {grace_ends:%Y-%m-%d %H:%M}")
    if not config.cleanup.enabled:
        return keep("cleanup is off (cleanup.enabled: false)")
    try:
        real = path.resolve(strict=True)
        stat = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return CleanupDecision(row["batch_id"], row["file_id"], path, row["rig"], 0, True, "already gone")
    except OSError as error:
        return keep(f"cannot look at it: {error.strerror or error}")
    roots = [root.resolve() for root in config.cleanup.roots]
    if not any(real.is_relative_to(root) for root in roots):
        where = f" (real path {real})" if real != path else ""
        return keep(f"outside every cleanup.roots entry{where}")
    if (stat.st_size, stat.st_mtime) != (row["file_size"], row["file_mtime"]):
        return keep("changed since it was archived (size or mtime)")
    return CleanupDecision(row["batch_id"], row["file_id"], path, row["rig"], row["file_size"], True,
                           "archived and verified, grace period over, unchanged")


def clean(config: MapdConfig, transport: Transport, decisions: list[CleanupDecision]) -> list[CleanupDecision]:
    """Delete the files that go, after the last checks; record each outcome. Returns what happened to each."""
    outcomes = []
    checked_batches: dict[str, str] = {}  # batch -> '' if the archive still holds it, else why not
    for decision in decisions:
        if decision.goes and decision.batch_id not in checked_batches:
            checked_batches[decision.batch_id] = _archive_holds(transport, decision.batch_id)
        outcome = _clean_one(decision, checked_batches.get(decision.batch_id, "")) if decision.goes else decision
        if not outcome.goes and outcome.reason != _current_note(outcome):
            _note(outcome, outcome.reason)
        outcomes.append(outcome)
    return outcomes


def _clean_one(decision: CleanupDecision, archive_problem: str) -> CleanupDecision:
    if decision.reason == "already gone":  # deleted by an earlier run that stopped before recording it
        _record_cleaned(decision, "already gone when cleanup came back to it")
        return decision
    if archive_problem:
        return _kept(decision, f"the archive's copy cannot be confirmed: {archive_problem}")
    row = (ingest.ArchiveFile & {"batch_id": decision.batch_id, "file_id": decision.file_id}).to_dicts()[0]
    try:
        sha256, stat = sha256_of(decision.path)
    except OSError as error:
        return _kept(decision, f"cannot read it again: {error.strerror or error}")
    if sha256 != row["sha256"] or (stat.st_size, stat.st_mtime) != (row["file_size"], row["file_mtime"]):
        return _kept(decision, "changed since it was archived (sha256 read again)")
    failpoints.reached("cleanup:checked")
    decision.path.unlink()
    failpoints.reached("cleanup:deleted-unrecorded")
    _record_cleaned(decision, "")
    _remove_empty_folders(decision.path.parent, Path(row["data_root"]), row["kind"])
    log.info("source file deleted after verified archival", path=str(decision.path), bytes=decision.size)
    return decision


def _archive_holds(transport: Transport, batch_id: str) -> str:
    from .stage import batch_of  # the stage owns how a batch is rebuilt from its rows

    row = (ingest.ArchiveBatch & {"batch_id": batch_id}).to_dicts()[0]
    try:
        transport.verify(row["task_id"], batch_of(row))
    except TransportError as error:
        return str(error)
    return ""


def _kept(decision: CleanupDecision, reason: str) -> CleanupDecision:
    if reason != _current_note(decision):
        log.warning("source file kept", path=str(decision.path), reason=reason)
    return CleanupDecision(decision.batch_id, decision.file_id, decision.path, decision.rig, decision.size, False,
                           reason)


def _current_note(decision: CleanupDecision) -> str:
    rows = (ingest.ArchiveFile & {"batch_id": decision.batch_id, "file_id": decision.file_id}).to_dicts()
    return rows[0]["cleanup_note"] if rows else ""


def _note(decision: CleanupDecision, note: str) -> None:
    ingest.ArchiveFile.update1(dict(batch_id=decision.batch_id, file_id=decision.file_id, cleanup_note=note[:2000]))


def _record_cleaned(decision: CleanupDecision, note: str) -> None:
    ingest.ArchiveFile.update1(dict(batch_id=decision.batch_id, file_id=decision.file_id, state="cleaned",
                                    cleaned_time=now_ms(), cleanup_note=note))


def _remove_empty_folders(folder: Path, data_root: Path, kind: str) -> None:
    """Raw ephys: the probe folder and the date folder go once empty; nothing at or above {h2o}/."""
    if kind != "ephys_raw":
        return  # a behavior folder ({h2o}/{protocol}/Session Data) holds other sessions' files
    try:
        depth = len(folder.relative_to(data_root).parts)
    except ValueError:
        return
    while depth >= 2:
        try:
            folder.rmdir()  # only if empty
        except OSError:
            return
        folder, depth = folder.parent, depth - 1


def days_due(config: MapdConfig) -> list[tuple[str, date]]:
    """Days with archived files whose grace period is over (kept ones included: their reason may have gone)."""
    if not config.cleanup.enabled:
        return []
    cutoff = now_ms() - timedelta(seconds=config.cleanup.grace_seconds)
    due = ingest.ArchiveBatch & (ingest.ArchiveFile & {"state": "archived"} & f"verified_time <= '{cutoff}'").proj()
    return sorted({(str(h2o), day) for h2o, day in zip(*due.to_arrays("h2o", "session_date"))})


def freed_bytes_per_rig() -> dict[str, int]:
    """Bytes of source files mapd deleted, per rig ('ephys' for the ephys data paths)."""
    freed: dict[str, int] = {}
    cleaned = ingest.ArchiveFile & {"state": "cleaned"}
    for rig, size in zip(*cleaned.to_arrays("rig", "file_size")):
        freed[rig or "ephys"] = freed.get(rig or "ephys", 0) + int(size)
    return freed
