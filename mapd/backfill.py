"""``mapd rescan``: discover behavior files and ingest every session not yet ingested.

Parsing (the costly part) runs in worker processes, ahead of the parent,
which inserts the sessions in date order per subject, so that session numbers
follow the calendar.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterator

import datajoint as dj

from . import registry
from .config import MapdConfig
from .discovery import ScanScope, behavior_files, group_by_session
from .formats.behavior import merge_session
from .ingest.behavior import AlreadyIngested, FileOnDisk, SessionConflict, ingested_file_names, insert_session
from .logs import get_logger
from .registry import FileOutcome, FileState
from .schemas import lab
from .workers import ParsedFile, parse_behavior_files

log = get_logger("mapd.rescan")
KIND = "behavior"

# Summary categories, in the order they are printed.
CATEGORIES = ("ingested", "already ingested", "waiting for subject", "skipped", "failed")
_CATEGORY = {FileState.INGESTED: "ingested", FileState.WAITING: "waiting for subject",
             FileState.SKIPPED: "skipped", FileState.FAILED: "failed"}


@dataclass
class RescanSummary:
    files: Counter = field(default_factory=Counter)  # category -> files
    sessions: int = 0  # sessions created or extended
    trials: int = 0
    rows: int = 0
    seconds: float = 0.0
    problems: list[FileOutcome] = field(default_factory=list)  # waiting, skipped and failed files

    @property
    def ok(self) -> bool:
        return self.files["failed"] == 0

    def add(self, outcome: FileOutcome, category: str | None = None) -> None:
        self.files[category or _CATEGORY[outcome.state]] += 1
        if outcome.state in (FileState.WAITING, FileState.SKIPPED, FileState.FAILED):
            self.problems.append(outcome)


@dataclass(frozen=True)
class SessionUnit:
    """The files of one subject and day, to become one session."""

    h2o: str
    session_date: date
    subject_id: int
    files: tuple[FileOnDisk, ...]


def rescan(
    config: MapdConfig,
    scope: ScanScope = ScanScope(),
    *,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> RescanSummary:
    """Ingest every behavior file in scope that is not yet ingested; the database must be open."""
    started = time.perf_counter()
    summary = RescanSummary()
    files = behavior_files(config, scope)
    sessions, unparsable = group_by_session(files)
    done = ingested_file_names([file.path.name for file in files])
    subjects = _subjects_by_h2o()
    h2o_dates = {registry.file_id(KIND, f): key for key, group in sessions.items() for f in group}

    immediate: list[FileOutcome] = [FileOutcome(file, FileState.FAILED, problem) for file, problem in unparsable]
    units: list[SessionUnit] = []
    for (h2o, session_date), group in sorted(sessions.items()):
        todo = []
        for file in group:
            if file.path.name in done:
                summary.files["already ingested"] += 1
            elif h2o not in subjects:
                immediate.append(FileOutcome(file, FileState.WAITING, f"no subject with water_restriction_number "
                                                                      f"{h2o}; enter it with `mapd subject add`"))
            elif file.size < config.ingest.min_behavior_file_bytes:
                immediate.append(FileOutcome(file, FileState.SKIPPED, f"{file.size} bytes, under "
                                             f"min_behavior_file_bytes ({config.ingest.min_behavior_file_bytes}): "
                                             "an aborted session"))
            else:
                todo.append(file)
        if todo:
            units.append(SessionUnit(h2o, session_date, subjects[h2o], tuple(todo)))
    _mark_ingested_in_registry(files, done)
    registry.record(KIND, immediate, h2o_dates)
    for outcome in immediate:
        summary.add(outcome)
        _log_outcome(outcome)

    total = len(units)
    if on_progress:
        on_progress(0, total)
    for count, (unit, parsed) in enumerate(_parse_ahead(units, workers or config.ingest.workers), start=1):
        outcomes = _ingest_unit(config, unit, parsed)
        registry.record(KIND, [outcome for outcome, _ in outcomes], h2o_dates)
        for outcome, category in outcomes:
            summary.add(outcome, category)
            _log_outcome(outcome)
        ingested = [outcome.detail for outcome, category in outcomes if category == "ingested"]
        if ingested:  # every file of the unit carries the session's totals
            summary.sessions += 1
            summary.trials += ingested[0]["session_trials"]
            summary.rows += ingested[0]["session_rows"]
        if on_progress:
            on_progress(count, total)
    summary.seconds = time.perf_counter() - started
    return summary


def _ingest_unit(config: MapdConfig, unit: SessionUnit, parsed: list[ParsedFile]) -> list[tuple[FileOutcome, str]]:
    """Outcomes (with their summary category) of ingesting one unit's parsed files."""
    by_path = {file.path: file for file in unit.files}
    outcomes: list[tuple[FileOutcome, str]] = []
    good = []
    for result in parsed:
        file = by_path[result.path]
        if result.error is not None:
            outcomes.append((FileOutcome(file, FileState.FAILED, result.error), "failed"))
        elif not result.records.trials:
            skipped = result.records.skipped
            reasons = "; ".join(f"{count} {reason}" for reason, count in sorted(skipped.items())) or "no trials"
            outcome = FileOutcome(file, FileState.SKIPPED, f"no ingestible trial ({reasons})", {"skipped_trials": skipped})
            outcomes.append((outcome, "skipped"))
        else:
            good.append(result.records)
    if good:
        outcomes += _insert_files(config, unit, good, {r.path.name: by_path[r.path] for r in good})
    return outcomes


def _insert_files(config, unit: SessionUnit, good: list, files: dict[str, FileOnDisk], *, retry: bool = True):
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
            return outcomes + _insert_files(config, unit, remaining, {r.path.name: files[r.path.name] for r in remaining},
                                            retry=False)
        return outcomes + [(FileOutcome(files[r.path.name], FileState.FAILED,
                                        "another process was ingesting the same session; run rescan again"), "failed")
                           for r in remaining]
    except SessionConflict as error:
        return [(FileOutcome(files[r.path.name], FileState.FAILED, str(error)), "failed") for r in good]
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


def _parse_ahead(units: list[SessionUnit], workers: int) -> Iterator[tuple[SessionUnit, list[ParsedFile]]]:
    """Parsed units in order, parsing up to 2 x workers units ahead in worker processes."""
    if workers <= 1 or len(units) <= 1:
        for unit in units:
            yield unit, parse_behavior_files([file.path for file in unit.files])
        return
    # spawn, not fork: the parent holds a database connection a fork would share.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        yield from _in_order(pool, units, ahead=2 * workers)


def _in_order(pool: Executor, units: list[SessionUnit], ahead: int):
    pending: deque = deque()
    queue = iter(units)
    for unit in queue:
        pending.append((unit, pool.submit(parse_behavior_files, [file.path for file in unit.files])))
        if len(pending) >= ahead:
            break
    while pending:
        unit, future = pending.popleft()
        next_unit = next(queue, None)
        if next_unit is not None:
            pending.append((next_unit, pool.submit(parse_behavior_files, [f.path for f in next_unit.files])))
        yield unit, future.result()


def _subjects_by_h2o() -> dict[str, int]:
    h2os, subject_ids = lab.WaterRestriction.to_arrays("water_restriction_number", "subject_id")
    return {str(h2o): int(subject_id) for h2o, subject_id in zip(h2os, subject_ids)}


def _mark_ingested_in_registry(files: list[FileOnDisk], done: set[str]) -> None:
    """Files found ingested in the database that mapd's registry does not yet know as such."""
    ingested = [file for file in files if file.path.name in done]
    known = registry.known_states(KIND, ingested)
    stale = [f for f in ingested if known.get(registry.file_id(KIND, f)) is not FileState.INGESTED]
    registry.record(KIND, [FileOutcome(f, FileState.INGESTED) for f in stale])


def _log_outcome(outcome: FileOutcome) -> None:
    if outcome.state is FileState.INGESTED:
        return
    method = log.error if outcome.state is FileState.FAILED else log.warning
    method(f"file {outcome.state.value}", file=str(outcome.file.path), rig=outcome.file.rig, reason=outcome.reason)
