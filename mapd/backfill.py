"""``mapd rescan``: discover behavior files and ingest every session not yet ingested.

Parsing (the costly part) runs in worker processes, ahead of the parent,
which inserts the sessions in date order per subject, so that session numbers
follow the calendar.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Iterator

from . import registry
from .config import MapdConfig
from .discovery import ScanScope, behavior_files, group_by_session
from .ingest.behavior import ingested_file_names
from .parsing import ParsedFile, ParsePool
from .pipeline import CATEGORIES, Outcomes, SessionUnit, ingest_parsed, log_outcome, subjects_by_h2o, triage
from .registry import FileOutcome, FileState

__all__ = ["CATEGORIES", "RescanSummary", "rescan"]

KIND = "behavior"


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

    def add(self, outcomes: Outcomes) -> None:
        for outcome, category in outcomes:
            self.files[category] += 1
            if outcome.state is not FileState.INGESTED:
                self.problems.append(outcome)
        ingested = [outcome.detail for outcome, category in outcomes if category == "ingested"]
        if ingested:  # every file of a unit carries its session's totals
            self.sessions += 1
            self.trials += ingested[0]["session_trials"]
            self.rows += ingested[0]["session_rows"]


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
    subjects = subjects_by_h2o()
    h2o_dates = {registry.file_id(KIND, f): key for key, group in sessions.items() for f in group}

    immediate: Outcomes = [(FileOutcome(file, FileState.FAILED, problem), "failed") for file, problem in unparsable]
    units: list[SessionUnit] = []
    settled_before = time.time() - config.daemon.settle_seconds
    for (h2o, session_date), group in sorted(sessions.items()):
        # A rig may be writing today's file right now: never take it half-written.
        writing = [f for f in group if f.mtime > settled_before and f.path.name not in done]
        if writing:
            immediate += [(FileOutcome(f, FileState.PENDING, "modified moments ago: still being written; "
                                                             "run rescan again later"), "skipped") for f in group]
            continue
        outcomes, unit = triage(config, h2o, session_date, group, done, subjects)
        immediate += outcomes
        if unit is not None:
            units.append(unit)
    _record(immediate, h2o_dates, summary, only_changed=True)

    total = len(units)
    if on_progress:
        on_progress(0, total)
    for count, (unit, parsed) in enumerate(_parse_ahead(units, workers or config.ingest.workers, config), start=1):
        _record(ingest_parsed(config, unit, parsed), h2o_dates, summary)
        if on_progress:
            on_progress(count, total)
    summary.seconds = time.perf_counter() - started
    return summary


def _record(outcomes: Outcomes, h2o_dates, summary: RescanSummary, only_changed: bool = False) -> None:
    """Count, log and record the outcomes.

    ``only_changed``: leave out ingested files the registry already knows as
    ingested (a rescan of a large tree would otherwise rewrite every row).
    """
    summary.add(outcomes)
    to_record = [outcome for outcome, _ in outcomes]
    if only_changed:
        known = registry.known_states(KIND, [outcome.file for outcome in to_record])
        to_record = [o for o in to_record
                     if not (o.state is FileState.INGESTED
                             and known.get(registry.file_id(KIND, o.file)) is FileState.INGESTED)]
    registry.record(KIND, to_record, h2o_dates)
    for outcome in to_record:
        log_outcome(outcome)


def _parse_ahead(units: list[SessionUnit], workers: int,
                 config: MapdConfig) -> Iterator[tuple[SessionUnit, list[ParsedFile]]]:
    """Parsed units in order, parsing up to 2 x workers units ahead in limited worker processes."""
    if not units:
        return  # no process started for nothing
    with ParsePool(workers, max_inflated_bytes=config.ingest.max_inflated_bytes,
                   memory_limit_bytes=config.ingest.parse_memory_bytes) as pool:
        yield from _in_order(pool, units, ahead=2 * workers)


def _in_order(pool: ParsePool, units: list[SessionUnit], ahead: int):
    pending: deque = deque()
    remaining = iter(units)
    for unit in remaining:
        pending.append((unit, pool.submit([file.path for file in unit.files])))
        if len(pending) >= ahead:
            break
    while pending:
        unit, future = pending.popleft()
        next_unit = next(remaining, None)
        if next_unit is not None:
            pending.append((next_unit, pool.submit([f.path for f in next_unit.files])))
        yield unit, future.result()
