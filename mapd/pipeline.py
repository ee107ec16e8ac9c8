"""The files of one subject and day -> their outcomes: the ingest step that
``mapd rescan`` and ``mapd run`` share.

:func:`triage` decides what needs no parsing (already ingested, waiting for
its subject, too small); :func:`ingest_parsed` turns parsed files into one
session transaction and an outcome per file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import datajoint as dj

from .config import MapdConfig
from .database import first_line, is_database_outage
from .formats.behavior import merge_session
from .ingest.behavior import AlreadyIngested, FileOnDisk, SessionConflict, ingested_file_names, insert_session
from .logs import get_logger
from .registry import FileOutcome, FileState
from .schemas import lab
from .workers import ParsedFile

log = get_logger("mapd.ingest")

# Summary categories, in the order they are printed.
CATEGORIES = ("ingested", "already ingested", "waiting for subject", "skipped", "failed")
CATEGORY = {FileState.INGESTED: "ingested", FileState.WAITING: "waiting for subject",
            FileState.SKIPPED: "skipped", FileState.FAILED: "failed"}

Outcomes = list[tuple[FileOutcome, str]]  # each file's outcome and its summary category


@dataclass(frozen=True)
class SessionUnit:
    """The files of one subject and day, to become one session."""

    h2o: str
    session_date: date
    subject_id: int
    files: tuple[FileOnDisk, ...]


def subjects_by_h2o() -> dict[str, int]:
    h2os, subject_ids = lab.WaterRestriction.to_arrays("water_restriction_number", "subject_id")
    return {str(h2o): int(subject_id) for h2o, subject_id in zip(h2os, subject_ids)}


def waiting_reason(h2o: str) -> str:
    return f"no subject with water_restriction_number {h2o}; enter it with `mapd subject add`"


def triage(config: MapdConfig, h2o: str, session_date: date, files: list[FileOnDisk], done: set[str],
           subjects: dict[str, int]) -> tuple[Outcomes, SessionUnit | None]:
    """Outcomes of the files that need no parsing, and the unit of those that do."""
    outcomes: Outcomes = []
    todo = []
    minimum = config.ingest.min_behavior_file_bytes
    for file in files:
        if file.path.name in done:
            outcomes.append((FileOutcome(file, FileState.INGESTED), "already ingested"))
        elif h2o not in subjects:
            outcomes.append((FileOutcome(file, FileState.WAITING, waiting_reason(h2o)), "waiting for subject"))
        elif file.size < minimum:
            reason = f"{file.size} bytes, under min_behavior_file_bytes ({minimum}): an aborted session"
            outcomes.append((FileOutcome(file, FileState.SKIPPED, reason), "skipped"))
        else:
            todo.append(file)
    unit = SessionUnit(h2o, session_date, subjects[h2o], tuple(todo)) if todo else None
    return outcomes, unit


def ingest_parsed(config: MapdConfig, unit: SessionUnit, parsed: list[ParsedFile]) -> Outcomes:
    """Outcomes of ingesting one unit's parsed files (one transaction for the session)."""
    by_path = {file.path: file for file in unit.files}
    outcomes: Outcomes = []
    good = []
    for result in parsed:
        file = by_path[result.path]
        if result.error is not None:
            outcomes.append((FileOutcome(file, FileState.FAILED, result.error), "failed"))
        elif not result.records.trials:
            skipped = result.records.skipped
            reasons = "; ".join(f"{count} {reason}" for reason, count in sorted(skipped.items())) or "no trials"
            outcome = FileOutcome(file, FileState.SKIPPED, f"no ingestible trial ({reasons})",
                                  {"skipped_trials": skipped})
            outcomes.append((outcome, "skipped"))
        else:
            good.append(result.records)
    if good:
        outcomes += _insert_files(config, unit, good, {r.path.name: by_path[r.path] for r in good})
    return outcomes


def _insert_files(config: MapdConfig, unit: SessionUnit, good: list, files: dict[str, FileOnDisk], *,
                  retry: bool = True) -> Outcomes:
    records = merge_session(good)
    rig = files[records.files[0].path.name].rig
    try:
        result = insert_session(records, subject_id=unit.subject_id, rig=rig, username=config.session_user,
                                files=files)
    except (AlreadyIngested, dj.errors.DuplicateError):
        # Another mapd process committed some of these files (or this day) first.
        already = ingested_file_names(list(files))
        outcomes = [(FileOutcome(files[name], FileState.INGESTED, "ingested by another process"), "already ingested")
                    for name in sorted(already)]
        remaining = [r for r in good if r.path.name not in already]
        if remaining and retry:
            return outcomes + _insert_files(config, unit, remaining,
                                            {r.path.name: files[r.path.name] for r in remaining}, retry=False)
        return outcomes + [(FileOutcome(files[r.path.name], FileState.FAILED,
                                        "another process was ingesting the same session; run rescan again"), "failed")
                           for r in remaining]
    except SessionConflict as error:
        return [(FileOutcome(files[r.path.name], FileState.FAILED, str(error)), "failed") for r in good]
    except Exception as error:
        if is_database_outage(error):
            raise  # not the files' fault: the caller waits for the database
        # The database refused the session (e.g. a value out of range): the
        # transaction was rolled back; record why and go on with other files.
        log.exception("session not ingested", h2o=unit.h2o, session_date=str(unit.session_date))
        reason = f"ingest failed: {type(error).__name__}: {first_line(error)}"
        return [(FileOutcome(files[r.path.name], FileState.FAILED, reason), "failed") for r in good]
    session = result.key.as_dict()
    log.info("session ingested", h2o=unit.h2o, session_date=str(unit.session_date), rig=rig, files=sorted(files),
             trials=result.trials, rows=result.rows, duration=round(result.seconds, 3), appended=result.appended,
             **session)
    return [
        (FileOutcome(files[r.path.name], FileState.INGESTED, "",
                     {"session": session, "trials": len(r.trials), "skipped_trials": r.skipped,
                      "session_trials": result.trials, "session_rows": result.rows}), "ingested")
        for r in good
    ]


def log_outcome(outcome: FileOutcome) -> None:
    if outcome.state is FileState.INGESTED:
        return
    if outcome.state is FileState.FAILED:
        log.error("file failed", file=str(outcome.file.path), rig=outcome.file.rig, error=outcome.reason)
    else:
        log.warning(f"file {outcome.state.value}", file=str(outcome.file.path), rig=outcome.file.rig,
                    reason=outcome.reason)
