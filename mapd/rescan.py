"""``mapd rescan``: discover behavior files and ingest every session not yet ingested.

Parsing (the costly part) runs in worker processes, ahead of the parent,
which inserts the sessions in date order per subject, so that session numbers
follow the calendar. Files still being written (modified less than
``settle_seconds`` ago) are waited for, by the daemon's settle rule, then ingested.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .config import MapdConfig
from .find import health
from .find.files import FileOnDisk, ScanProblem
from .find.health import PathHealth
from .find.scan import ScanScope, behavior_files, data_files, group_by_session, probe_folders
from .ingest.behavior import IngestedSession, ingested_files
from .ingest.behavior_day import CATEGORIES, Outcomes, SessionUnit, ingest_parsed, subjects_by_h2o, triage
from .ingest.probe_folder import probe_outcome
from .parsing import ParsedFile, ParsePool
from .queue import files as queue
from .queue.files import FileOutcome, FileState, log_outcome
from .queue.policy import Policy

__all__ = ["CATEGORIES", "RescanSummary", "rescan"]

KIND = "behavior"
PROBE = "probe"
# How long rescan waits for files still being written: a file that keeps
# changing for 6 settle intervals (and at least a minute) is being written
# live, by a session in progress; it is left pending for the daemon or a later rescan.
WAIT_SETTLES, MIN_WAIT_SECONDS = 6, 60.0
STILL_WRITING = "modified moments ago: still being written; run rescan again later"


@dataclass
class RescanSummary:
    files: Counter = field(default_factory=Counter)  # category -> files
    sessions: int = 0  # sessions created or extended
    trials: int = 0
    rows: int = 0
    seconds: float = 0.0
    problems: list[FileOutcome] = field(default_factory=list)  # files not ingested, with the reason
    unusable_paths: list[PathHealth] = field(default_factory=list)  # data paths missing or unreadable
    scan_problems: list[ScanProblem] = field(default_factory=list)  # entries the scan could not use
    probes: Counter = field(default_factory=Counter)  # category -> probe folders
    probe_problems: list[FileOutcome] = field(default_factory=list)  # probe folders not ingested, with the reason

    @property
    def ok(self) -> bool:
        """No file or probe failed and every data path in scope could be read."""
        return self.files["failed"] == 0 and self.probes["failed"] == 0 and not self.unusable_paths

    def add(self, outcomes: Outcomes, session: IngestedSession | None = None) -> None:
        for outcome, category in outcomes:
            self.files[category] += 1
            if outcome.state is not FileState.INGESTED:
                self.problems.append(outcome)
        if session is not None:
            self.sessions += 1
            self.trials += session.trials
            self.rows += session.rows


def rescan(
    config: MapdConfig,
    scope: ScanScope = ScanScope(),
    *,
    workers: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    wait: bool = True,
    on_wait: Callable[[int, float], None] | None = None,
) -> RescanSummary:
    """Ingest every behavior file in scope that is not yet ingested; the database must be open.

    ``wait``: first wait for files still being written to settle (``on_wait(files, seconds)``
    before each wait); without it they are left pending, as is any still changing after the
    longest wait.
    """
    started = time.perf_counter()
    summary = RescanSummary()
    summary.unusable_paths = _check_paths(config, scope)
    policy = Policy.from_config(config.daemon)
    waiter = _Settling(policy, wait, on_wait)
    scan, writing = waiter.look(lambda: behavior_files(config, scope), lambda scan: scan.files)
    summary.scan_problems = scan.problems
    if not scope.paths:
        _record_scan_problems(config, scope, scan.problems)
    groups = group_by_session(scan.files)
    ingested = ingested_files([file.path.name for file in scan.files])
    subjects = subjects_by_h2o()
    h2o_dates = {queue.file_id(KIND, f): key for key, group in groups.sessions.items() for f in group}

    immediate: Outcomes = ([(FileOutcome(file, FileState.IGNORED, reason), "ignored") for file, reason in groups.not_sessions]
                           + [(FileOutcome(file, FileState.FAILED, reason), "failed") for file, reason in groups.bad_names])
    units: list[SessionUnit] = []
    for (h2o, session_date), group in sorted(groups.sessions.items()):
        # A rig may be writing today's file right now: never take it half-written.
        if any(f.path in writing and f.path.name not in ingested for f in group):
            immediate += [(FileOutcome(f, FileState.PENDING, STILL_WRITING), "skipped") for f in group]
            continue
        outcomes, unit = triage(config, h2o, session_date, group, ingested, subjects)
        immediate += outcomes
        if unit is not None:
            units.append(unit)
    _record(immediate, h2o_dates, summary, only_changed=True)

    total = len(units)
    if on_progress:
        on_progress(0, total)
    for count, (unit, parsed) in enumerate(_parse_ahead(units, workers or config.ingest.workers, config), start=1):
        outcomes, session = ingest_parsed(config, unit, parsed)
        _record(outcomes, h2o_dates, summary, session=session)
        if on_progress:
            on_progress(count, total)
    if not scope.rigs and not scope.paths:  # probes after behavior: each needs its behavior session
        _rescan_probes(config, scope, waiter, summary)
    summary.seconds = time.perf_counter() - started
    return summary


def _rescan_probes(config: MapdConfig, scope: ScanScope, waiter: "_Settling", summary: RescanSummary) -> None:
    """Every probe folder below the ephys data paths not yet ingested (in scope's dates)."""
    for entry in config.ephys_data_paths:
        if not health.check(health.DataPath("ephys", entry.path, None)).ok:
            continue  # reported with the other paths

        def look(root=entry.path):
            scan = data_files("ephys", root, None, root)
            return scan, [(key, folder) for key, folder in probe_folders(root, scan.files)
                          if scope.since is None or key.session_date >= scope.since]

        (scan, units), writing = waiter.look(look, lambda found: [folder for _, folder in found[1]])
        summary.scan_problems += scan.problems
        h2o_dates = {queue.file_id(PROBE, folder): (key.h2o, key.session_date) for key, folder in units}
        done = queue.ingested_unchanged(PROBE, [folder for _, folder in units])
        for key, folder in units:
            if queue.file_id(PROBE, folder) in done:
                outcome, category = FileOutcome(folder, FileState.INGESTED), "already ingested"
            elif folder.path in writing:
                outcome, category = FileOutcome(folder, FileState.PENDING, STILL_WRITING), "skipped"
            else:
                outcome, category = probe_outcome(folder)
                queue.record(PROBE, [outcome], h2o_dates)
                log_outcome(outcome)
            summary.probes[category] += 1
            if outcome.state is not FileState.INGESTED:
                summary.probe_problems.append(outcome)


class _Settling:
    """Looks at the files again until none is still being written (the daemon's rule, Policy.settled_at).

    A file counts as settled once seen with the same size and mtime for
    ``settle_seconds``, or once its mtime is that old; each look is a fresh
    scan, so what is ingested afterwards carries the stat it was last seen with.
    """

    def __init__(self, policy: Policy, wait: bool, on_wait: Callable[[int, float], None] | None) -> None:
        self.policy, self.wait, self.on_wait = policy, wait, on_wait
        self.limit = max(MIN_WAIT_SECONDS, WAIT_SETTLES * policy.settle_seconds)
        self.seen: dict = {}  # path -> ((size, mtime), since when seen so)

    def look(self, scan: Callable[[], Any], files_of: Callable[[Any], list[FileOnDisk]]):
        """(the last result of ``scan()``, paths still being written in it)."""
        deadline = time.monotonic() + self.limit
        while True:
            found = scan()
            writing = self._writing(files_of(found))
            left = deadline - time.monotonic()
            if not writing or not self.wait or left <= 0:
                return found, set(writing)
            delay = min(left, max(0.0, (max(writing.values()) - queue.now_ms()).total_seconds()) + 0.05)
            if self.on_wait:
                self.on_wait(len(writing), delay)
            time.sleep(delay)

    def _writing(self, files: list[FileOnDisk]) -> dict:
        """Path -> when it will have settled, for the files not settled yet."""
        now, writing = queue.now_ms(), {}
        for file in files:
            before = self.seen.get(file.path)
            since = before[1] if before and before[0] == file.version else now
            self.seen[file.path] = (file.version, since)
            ready = self.policy.settled_at(since, file.mtime)
            if ready > now:
                writing[file.path] = ready
        return writing


def _check_paths(config: MapdConfig, scope: ScanScope) -> list[PathHealth]:
    """Health of the rig data paths in scope, recorded for `mapd status`; the unusable ones."""
    checks = [check for check in health.check_all(config)
              if check.data_path.kind == KIND and (not scope.rigs or check.data_path.rig in scope.rigs)]
    queue.record_path_health(checks)
    return [check for check in checks if not check.ok]


def _record_scan_problems(config: MapdConfig, scope: ScanScope, problems: list[ScanProblem]) -> None:
    for entry in config.rig_data_paths:
        if not scope.rigs or entry.rig in scope.rigs:
            queue.record_scan_problems(entry.path, [p for p in problems if entry.path in p.path.parents])


def _record(outcomes: Outcomes, h2o_dates, summary: RescanSummary, only_changed: bool = False,
            session: IngestedSession | None = None) -> None:
    """Count, log and record the outcomes.

    ``only_changed``: leave out ingested files the queue already holds as
    ingested (a rescan of a large tree would otherwise rewrite every row).
    """
    summary.add(outcomes, session)
    to_record = [outcome for outcome, _ in outcomes]
    if only_changed:
        unchanged = queue.ingested_unchanged(KIND, [o.file for o in to_record if o.state is FileState.INGESTED])
        to_record = [o for o in to_record
                     if not (o.state is FileState.INGESTED and queue.file_id(KIND, o.file) in unchanged)]
    queue.record(KIND, to_record, h2o_dates)
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
