"""What ``mapd run`` does with a claimed unit of work, one handler per kind (a behavior day, a probe day).

A handler takes the unit's queued files, checks they are still as they
settled, does the work and records an outcome per file. Failures that pass
(the database gone or full) propagate to the daemon, which waits and retries;
a file's own problems become its recorded outcome.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date

from . import metrics
from .config import MapdConfig
from .find.files import FileOnDisk
from .find.scan import group_by_session, probe_folders
from .ingest.behavior import ingested_files
from .ingest.behavior_day import SessionUnit, ingest_parsed, subjects_by_h2o, triage
from .ingest.probe_folder import probe_outcome
from .logs import get_logger
from .parsing import ParsedFile, ParsePool
from .queue import files as queue
from .queue.files import FileOutcome, FileState, QueuedFile, log_outcome
from .queue.policy import Policy

log = get_logger("mapd.daemon")
KIND = "behavior"


@dataclass(frozen=True)
class UnitKey:
    """A unit of work: its kind and the subject and day it belongs to."""

    kind: str
    h2o: str
    session_date: date | None


class _QueuedFiles:
    """What the ingest handlers do with their queued files: check they settled, postpone, give up, record."""

    kind: str
    policy: Policy

    def _unchanged(self, item: QueuedFile, current: FileOnDisk | None, what: str) -> FileOnDisk | None:
        """``current`` (the file or folder as it is now, None if gone) if it is as it settled; else it waits."""
        recorded = item.file
        if current is None:
            if recorded.data_root.is_dir():
                self._finish([FileOutcome(recorded, FileState.FAILED, f"{what} no longer exists")])
            else:  # the share is down or the disk not mounted (status shows it): wait for it, never give up
                self._retry_later(item, f"data path {recorded.data_root} is not reachable")
            return None
        if current.version != recorded.version:
            self._still_being_written(current)
            return None
        return current

    def _still_being_written(self, file: FileOnDisk) -> None:
        queue.postpone(self.kind, file, self.policy.settle_seconds, "still being written", seen=True)

    def _postpone_or_fail(self, item: QueuedFile, reason: str) -> None:
        """A transient failure of the file: try again after a backoff, until the attempts run out."""
        attempts = item.attempts + 1
        if self.policy.gives_up(attempts):
            self._finish([FileOutcome(item.file, FileState.FAILED, f"{reason} (after {attempts} attempts)")])
            return
        self._retry_later(item, reason)

    def _retry_later(self, item: QueuedFile, reason: str) -> None:
        attempts = item.attempts + 1
        delay = self.policy.backoff_seconds(attempts)
        queue.postpone(self.kind, item.file, delay, reason, attempt=True)
        log.warning("will retry", kind=self.kind, file=str(item.file.path), rig=item.file.rig, error=reason,
                    attempt=attempts, delay=round(delay, 1))

    def _finish(self, outcomes: list[FileOutcome], h2o_dates=None) -> None:
        queue.record(self.kind, outcomes, h2o_dates)
        for outcome in outcomes:
            log_outcome(outcome)


@dataclass
class BehaviorDays(_QueuedFiles):
    """Handler of behavior days: a subject's files of one day, ingested as one session."""

    config: MapdConfig
    policy: Policy
    parser: ParsePool
    kind: str = KIND

    def ready(self) -> list[UnitKey]:
        return [UnitKey(KIND, h2o, day) for h2o, day in queue.ready_groups(KIND)]

    def handle(self, unit: UnitKey) -> None:
        queued = queue.pending_files(KIND, unit.h2o, unit.session_date)
        if unit.session_date is None:
            self._no_day(queued)
            return
        files = []
        for item in queued:
            file = self._settled(item)
            if file is None:
                return  # something is still being written or unreachable: the day waits
            files.append(file)
        if files:
            self._ingest(unit, files)

    def fail(self, unit: UnitKey, reason: str) -> None:
        """An unexpected error while handling the unit: its files fail with the reason (not retried)."""
        items = queue.pending_files(KIND, unit.h2o, unit.session_date)
        self._finish([FileOutcome(item.file, FileState.FAILED, reason) for item in items])

    def _ingest(self, unit: UnitKey, files: list[FileOnDisk]) -> None:
        # Rigs in their configured order: of two copies of one file, the first rig's is ingested.
        order = {entry.path: n for n, entry in enumerate(self.config.rig_data_paths)}
        files = sorted(files, key=lambda f: (order.get(f.data_root, len(order)), str(f.path)))
        subjects = subjects_by_h2o()
        ingested = ingested_files([f.path.name for f in files])
        outcomes, session_unit = triage(self.config, unit.h2o, unit.session_date, files, ingested, subjects)
        results = [outcome for outcome, _ in outcomes]
        if session_unit is not None:
            started = time.perf_counter()
            parsed = self.parser.parse([f.path for f in session_unit.files])
            if self._unreadable_for_now(session_unit, parsed):
                return  # the day is ingested whole, once every file reads cleanly
            day_outcomes, session = ingest_parsed(self.config, session_unit, parsed)
            results += [outcome for outcome, _ in day_outcomes]
            if session is not None:  # probes of this day waiting for their behavior session go now
                metrics.ingested(KIND, time.perf_counter() - started)
                queue.release_waiting_probes(unit.h2o, unit.session_date)
        self._finish(results, {queue.file_id(KIND, f): (unit.h2o, unit.session_date) for f in files})

    def _no_day(self, queued: list[QueuedFile]) -> None:
        """Pending files whose name gives no usable day (queued again by hand): the same verdict again."""
        groups = group_by_session(item.file for item in queued)
        outcomes = ([FileOutcome(file, FileState.IGNORED, reason) for file, reason in groups.not_sessions]
                    + [FileOutcome(file, FileState.FAILED, reason) for file, reason in groups.bad_names])
        self._finish(outcomes)
        sessions = groups.sessions  # named well after all (recorded by an older mapd): queue them by day
        queue.record(KIND, [FileOutcome(f, FileState.PENDING) for group in sessions.values() for f in group],
                     {queue.file_id(KIND, f): key for key, group in sessions.items() for f in group})

    def _settled(self, item: QueuedFile) -> FileOnDisk | None:
        """The file if it is unchanged since it settled; else postpone it and return None."""
        try:
            current = item.file.with_stat(item.file.path.stat())
        except FileNotFoundError:
            current = None
        except OSError as error:
            self._postpone_or_fail(item, f"cannot stat: {error.strerror or error}")
            return None
        return self._unchanged(item, current, "file")

    def _unreadable_for_now(self, unit: SessionUnit, parsed: list[ParsedFile]) -> bool:
        """Postpone the files whose parse failed for a reason that may pass; True if there were any.

        A file that changed while it was parsed is still being written (its
        parse error says nothing); a transient error (gone, locked) is retried
        with backoff.
        """
        postponed = False
        for file, result in zip(unit.files, parsed):
            if result.error is None:
                continue
            try:
                stat = file.path.stat()
            except OSError:
                stat = None
            changed = stat is not None and not file.same_stat(stat)
            if changed:
                self._still_being_written(file.with_stat(stat))
            elif result.transient:
                item = QueuedFile(queue.file_id(KIND, file), file, queue.attempts(KIND, file))
                self._postpone_or_fail(item, result.error)
            postponed |= changed or result.transient
        return postponed


@dataclass
class ProbeDays(_QueuedFiles):
    """Handler of probe folders: each probe of a subject's day, ingested in a transaction of its own."""

    config: MapdConfig
    policy: Policy
    kind: str = "probe"

    def ready(self) -> list[UnitKey]:
        return [UnitKey(self.kind, h2o, day) for h2o, day in queue.ready_groups(self.kind) if day is not None]

    def handle(self, unit: UnitKey) -> None:
        for item in queue.pending_files(self.kind, unit.h2o, unit.session_date):
            folder = self._settled(item)
            if folder is not None:
                started = time.perf_counter()
                outcome, category = probe_outcome(folder)
                if category == "ingested":
                    metrics.ingested(self.kind, time.perf_counter() - started)
                self._finish([outcome])

    def fail(self, unit: UnitKey, reason: str) -> None:
        items = queue.pending_files(self.kind, unit.h2o, unit.session_date)
        self._finish([FileOutcome(item.file, FileState.FAILED, reason) for item in items])

    def _settled(self, item: QueuedFile) -> FileOnDisk | None:
        """The folder if its files are as they settled; else it waits (still being written, or gone)."""
        found = dict(probe_folders(item.file.data_root, [item.file]))
        return self._unchanged(item, next(iter(found.values()), None), "probe folder")
