"""``mapd run``: the long-running service.

One main thread does all the work (DataJoint connections are not thread-safe);
watchdog's threads only report changed paths. Each turn of the loop:

1. registers what the watchers reported (new files become ``pending``);
2. takes one ready day of one subject (an atomic claim in the database),
   checks its files are unchanged since they settled, parses them and ingests
   the session in one transaction;
3. on schedule: heartbeat, systemd watchdog ping, periodic full scan,
   waiting-for-subject recheck, config file check.

Work survives anything: the queue is in the database, a session commits
whole or not at all, and a claim of a dead process is taken over.
"""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path, PurePosixPath

from tenacity import Retrying, retry_if_exception, stop_never, wait_exponential_jitter

from . import claims, registry
from .config import ConfigError, MapdConfig, load_config
from .discovery import data_files, group_by_session
from .formats.ephys_paths import ephys_session
from .ingest.behavior import FileOnDisk, ingested_file_names
from .logs import get_logger
from .pipeline import Outcomes, ingest_parsed, log_outcome, subjects_by_h2o, triage
from .registry import FileOutcome, FileState
from .database import first_line, is_database_outage
from .runtime import enter_reference_rows, open_database
from .systemd import Notifier
from .watch import WatchedRoot, Watcher, watched_roots
from .workers import parse_behavior_files

log = get_logger("mapd.daemon")
IDLE_WAIT = 1.0  # longest sleep between turns when nothing happens
TURN_SECONDS = 2.0  # work through ready days this long, then see to watchers, heartbeat and signals
EPHYS_WAITING = "ephys ingest is not available in this version of mapd; the file is recorded"


class ShutdownNow(BaseException):
    """Raised in the main thread to abandon the ingest in progress (its transaction rolls back)."""


@dataclass
class _Schedule:
    """When each periodic duty is next due (time.monotonic)."""

    heartbeat: float = 0.0
    reconcile: float = 0.0
    waiting: float = 0.0
    config_check: float = 0.0


@dataclass
class _Flags:
    stop: bool = False
    reload: bool = False
    signals: int = 0


@dataclass
class Daemon:
    config: MapdConfig
    notifier: Notifier = field(default_factory=Notifier.from_environment)

    def __post_init__(self) -> None:
        self.me = claims.DaemonIdentity.new()
        self.flags = _Flags()
        self.schedule = _Schedule()
        self.watcher: Watcher | None = None
        self.activity = "starting"
        self._config_stat = _stat_key(self.config.source)

    # ---- lifecycle ---------------------------------------------------------

    def run(self) -> int:
        self._install_signal_handlers()
        db = open_database(self.config)
        self.connection = db.connection
        claims.register_daemon(self.me)
        self._start_watching()
        self.notifier.ready(status="scanning data paths")
        log.info("mapd started", pid=self.me.pid, daemon_id=self.me.daemon_id,
                 rigs=[e.rig for e in self.config.rig_data_paths])
        try:
            while not self.flags.stop:
                self._turn_with_outage_handling()
        except ShutdownNow:
            log.warning("shutdown: ingest in progress abandoned and rolled back")
        finally:
            self._shutdown()
        return 0

    def _shutdown(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)  # the shutdown timer is for the ingest, not for this
        self.notifier.stopping(status="stopping")
        if self.watcher:
            self.watcher.stop()
        try:
            claims.unregister_daemon(self.me)
        except Exception as error:  # the database may be the reason we stop
            log.warning("could not unregister from the database", error=str(error))
        log.info("mapd stopped", pid=self.me.pid)
        self.notifier.close()

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_reload_signal)
        signal.signal(signal.SIGALRM, self._on_shutdown_timeout)

    def _on_stop_signal(self, signum, _frame) -> None:
        self.flags.signals += 1
        if self.flags.signals > 1:
            raise ShutdownNow()  # asked twice: stop now, roll back
        self.flags.stop = True
        # The ingest in progress may finish; if it takes too long, it is rolled back.
        signal.setitimer(signal.ITIMER_REAL, self.config.daemon.shutdown_timeout)
        log.info("stopping", signal=signal.Signals(signum).name)

    def _on_shutdown_timeout(self, _signum, _frame) -> None:
        raise ShutdownNow()

    def _on_reload_signal(self, _signum, _frame) -> None:
        self.flags.reload = True

    # ---- the loop ----------------------------------------------------------

    def _turn_with_outage_handling(self) -> None:
        try:
            self._turn()
        except Exception as error:
            if not is_database_outage(error):
                raise
            self._wait_for_database(error)

    def _wait_for_database(self, error: BaseException) -> None:
        """Back off (exponential, with jitter, bounded) until the database answers again."""
        log.error("database unreachable; retrying", error=first_line(error))
        self.notifier.status("database unreachable; retrying")
        retry = self.config.daemon.retry
        for attempt in Retrying(
            wait=wait_exponential_jitter(initial=retry.initial_seconds, max=retry.max_seconds),
            retry=retry_if_exception(is_database_outage),
            stop=stop_never,
            sleep=self._sleep_attentively,
            reraise=True,
        ):
            with attempt:
                if self.flags.stop:
                    return
                self.connection.connect()
                self.connection.ping()
        log.info("database reachable again")

    def _sleep_attentively(self, seconds: float) -> None:
        """Sleep, but keep the systemd watchdog fed and notice a stop request."""
        deadline = time.monotonic() + seconds
        while not self.flags.stop and time.monotonic() < deadline:
            self.notifier.maybe_ping_watchdog()
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def _turn(self) -> None:
        now = time.monotonic()
        self.notifier.maybe_ping_watchdog()
        if self.flags.reload or now >= self.schedule.config_check:
            self.schedule.config_check = now + 1.0
            self._maybe_reload()
        if now >= self.schedule.reconcile:
            self.schedule.reconcile = now + self.config.daemon.reconcile_interval
            self._reconcile()
        if now >= self.schedule.waiting:
            self.schedule.waiting = now + self.config.daemon.waiting_recheck_seconds
            self._recheck_waiting()
        self._register_changes()
        if now >= self.schedule.heartbeat:
            self.schedule.heartbeat = now + self.config.daemon.heartbeat_seconds
            claims.heartbeat(self.me, self.activity)
            self.notifier.status(self.activity)
        if self.flags.stop:
            return
        worked = self._ingest_ready_days()
        if not worked:
            self.activity = "idle"
            self._wait_for_changes()

    def _wait_for_changes(self) -> None:
        # Wakes at once when a watcher reports something; sooner while files are settling.
        self.watcher.wait(IDLE_WAIT / 4 if registry.has_pending("behavior") else IDLE_WAIT)

    # ---- finding files -----------------------------------------------------

    def _start_watching(self) -> None:
        self.roots = watched_roots(self.config)
        self.watcher = Watcher(self.roots)
        for problem in self.watcher.start():
            log.warning("data path not watched", problem=problem)
        for root in self.roots:
            log.info("watching", path=str(root.path), kind=root.kind, mode=root.mode,
                     poll_interval=root.poll_interval if root.mode == "poll" else None)

    def _reconcile(self) -> None:
        """Scan every data path: finds what arrived while mapd was down or a watcher missed."""
        self.activity = "scanning data paths"
        started = time.perf_counter()
        found = 0
        for root in self.roots:
            files = data_files(root.kind, root.path, root.rig, root.path)
            found += len(files)
            self._register(root, files)
        log.info("scan complete", files=found, duration=round(time.perf_counter() - started, 3))

    def _register_changes(self) -> None:
        changed: dict[WatchedRoot, set[Path]] = {}
        for root, path in self.watcher.take_changes():
            changed.setdefault(root, set()).add(path)
        for root, paths in changed.items():
            files = {file.path: file for path in paths for file in data_files(root.kind, root.path, root.rig, path)}
            self._register(root, list(files.values()))

    def _register(self, root: WatchedRoot, files: list[FileOnDisk]) -> None:
        if not files:
            return
        if root.kind == "ephys":
            self._register_ephys(files)
            return
        sessions, unparsable = group_by_session(files)
        h2o_dates = {registry.file_id("behavior", f): key for key, group in sessions.items() for f in group}
        named = [f for group in sessions.values() for f in group]
        result = registry.register_found("behavior", named, self.config.daemon.settle_seconds, h2o_dates)
        for file in result.changed_after_ingest:
            log.warning("file changed after ingest; not ingested again", file=str(file.path), rig=file.rig,
                        size=file.size)
        if result.new or result.requeued:
            log.info("files queued", new=result.new, requeued=result.requeued, rig=root.rig)
        self._record_failures(unparsable)

    def _record_failures(self, unparsable: list[tuple[FileOnDisk, str]]) -> None:
        known = registry.known_states("behavior", [file for file, _ in unparsable])
        fresh = [FileOutcome(file, FileState.FAILED, problem) for file, problem in unparsable
                 if known.get(registry.file_id("behavior", file)) is not FileState.FAILED]
        registry.record("behavior", fresh)
        for outcome in fresh:
            log_outcome(outcome)

    def _register_ephys(self, files: list[FileOnDisk]) -> None:
        known = registry.known_states("ephys", files)
        fresh = [f for f in files if registry.file_id("ephys", f) not in known]
        dates = {registry.file_id("ephys", f): ephys_session(PurePosixPath(f.subpath)) for f in fresh}
        registry.record("ephys", [FileOutcome(f, FileState.WAITING, EPHYS_WAITING) for f in fresh], dates)
        if fresh:
            log.info("ephys files recorded", files=len(fresh))

    def _recheck_waiting(self) -> None:
        released = registry.release_waiting(list(subjects_by_h2o()))
        if released:
            log.info("files no longer waiting for their subject", files=released)

    # ---- ingesting ---------------------------------------------------------

    def _ingest_ready_days(self) -> bool:
        """Ingest ready days for up to TURN_SECONDS; True if any was taken.

        One look at the queue serves many days: a backlog of thousands of files
        (the first scan of a big tree) is worked through without re-reading
        the whole queue for each day.
        """
        deadline = time.monotonic() + TURN_SECONDS
        worked = False
        groups = registry.ready_groups("behavior")
        subjects = subjects_by_h2o() if groups else {}
        for h2o, session_date in groups:
            if self.flags.stop or time.monotonic() > deadline:
                break
            if claims.claim(self.me, "behavior", h2o, session_date, self.config.daemon.heartbeat_seconds):
                try:
                    self.activity = f"ingesting {h2o} {session_date}"
                    self._ingest_day(h2o, session_date, subjects)
                finally:
                    claims.release(self.me, "behavior", h2o, session_date)
                worked = True
        return worked

    def _ingest_day(self, h2o: str, session_date: date, subjects: dict[str, int]) -> None:
        settle = self.config.daemon.settle_seconds
        files = []
        for row in registry.pending_files("behavior", h2o, session_date):
            file = self._settled(row, settle)
            if file is None:
                return  # something is still being written or unreachable: the day waits
            files.append(file)
        if not files:
            return
        h2o_dates = {registry.file_id("behavior", f): (h2o, session_date) for f in files}
        done = ingested_file_names([f.path.name for f in files])
        outcomes, unit = triage(self.config, h2o, session_date, files, done, subjects)
        if unit is not None:
            parsed = parse_behavior_files([f.path for f in unit.files])
            if self._unreadable_for_now(unit, parsed):
                return  # the day is ingested whole, once every file reads cleanly
            outcomes += ingest_parsed(self.config, unit, parsed)
        self._finish(outcomes, h2o_dates)

    def _settled(self, row: dict, settle: float) -> FileOnDisk | None:
        """The file if it is unchanged since it settled; else postpone it and return None."""
        root = Path(row["data_root"])
        path = root / row["subpath"]
        recorded = FileOnDisk(path, root, row["rig"], row["file_size"], row["file_mtime"])
        try:
            stat = path.stat()
        except FileNotFoundError:
            if root.is_dir():
                registry.record("behavior", [FileOutcome(recorded, FileState.FAILED, "file no longer exists")])
                log.warning("file vanished before ingest", file=str(path), rig=row["rig"])
            else:
                self._postpone_or_fail(recorded, f"data path {root} is not reachable")
            return None
        except OSError as error:
            self._postpone_or_fail(recorded, f"cannot stat: {error.strerror or error}")
            return None
        current = FileOnDisk(path, root, row["rig"], stat.st_size, stat.st_mtime)
        if (stat.st_size, stat.st_mtime) != (row["file_size"], row["file_mtime"]):
            registry.postpone("behavior", current, settle, "still being written", seen=True)
            return None
        return current

    def _unreadable_for_now(self, unit, parsed) -> bool:
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
                changed = (stat.st_size, stat.st_mtime) != (file.size, file.mtime)
            except OSError:
                stat, changed = None, False
            if changed:
                current = FileOnDisk(file.path, file.data_root, file.rig, stat.st_size, stat.st_mtime)
                registry.postpone("behavior", current, self.config.daemon.settle_seconds, "still being written",
                                  seen=True)
            elif result.transient:
                self._postpone_or_fail(file, result.error)
            postponed |= changed or result.transient
        return postponed

    def _postpone_or_fail(self, file: FileOnDisk, reason: str) -> None:
        """A transient failure: try again after an exponential backoff, until the attempts run out."""
        retry = self.config.daemon.retry
        attempts = registry.attempts("behavior", file) + 1
        if attempts >= retry.max_attempts:
            registry.record("behavior", [FileOutcome(file, FileState.FAILED, f"{reason} (after {attempts} attempts)")])
            log.error("file failed", file=str(file.path), rig=file.rig, error=reason, attempts=attempts)
            return
        delay = min(retry.max_seconds, retry.initial_seconds * 2 ** (attempts - 1)) * random.uniform(0.5, 1.0)
        registry.postpone("behavior", file, delay, reason, attempt=True)
        log.warning("will retry", file=str(file.path), rig=file.rig, error=reason, attempt=attempts,
                    delay=round(delay, 1))

    def _finish(self, outcomes: Outcomes, h2o_dates) -> None:
        registry.record("behavior", [outcome for outcome, _ in outcomes], h2o_dates)
        for outcome, _ in outcomes:
            log_outcome(outcome)

    # ---- configuration -----------------------------------------------------

    def _maybe_reload(self) -> None:
        asked, self.flags.reload = self.flags.reload, False
        current = _stat_key(self.config.source)
        if not asked and current == self._config_stat:
            return
        self._config_stat = current
        try:
            new = load_config(self.config.source)
        except ConfigError as error:
            log.error("configuration change refused; the running configuration stays in force", error=str(error))
            return
        if new.database != self.config.database or new.state_dir != self.config.state_dir:
            log.warning("database and state_dir changes take effect after a restart")
            new = new.model_copy(update={"database": self.config.database, "state_dir": self.config.state_dir})
        self.notifier.reloading()
        old_roots = watched_roots(self.config)
        self.config = new
        enter_reference_rows(new)
        if watched_roots(new) != old_roots:
            self.watcher.stop()
            self._start_watching()
            self.schedule.reconcile = 0.0  # scan the new paths now
        log.info("configuration reloaded", source=str(new.source), rigs=[e.rig for e in new.rig_data_paths])
        self.notifier.reloaded()


def _stat_key(path: Path | None) -> tuple[int, float, int] | None:
    try:
        stat = path.stat()
    except (OSError, AttributeError):
        return None
    return stat.st_size, stat.st_mtime, stat.st_ino
