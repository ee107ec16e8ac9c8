"""``mapd run``: the long-running service: lifecycle, schedule, reload, and dispatch by kind of work.

One main thread does all the work (DataJoint connections are not thread-safe);
watchdog's threads only report changed paths. Each turn of the loop:

1. registers what the watchers reported (:mod:`mapd.intake`);
2. takes ready units of work (an atomic claim in the database each) and
   hands each to the handler of its kind (:mod:`mapd.handlers`);
3. on schedule: heartbeat, systemd watchdog ping, data path health, periodic
   full scan, waiting-for-subject recheck, config file check.

Work survives anything: the queue is in the database, a session commits
whole or not at all, and a claim of a dead process is taken over. A failure
that passes (database unreachable or full) is waited out with backoff; any
other unexpected error fails the unit it happened in, and the daemon goes on.
"""

from __future__ import annotations

import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from tenacity import Retrying, retry_if_exception, stop_never

from . import database, metrics
from .archive.handlers import ArchiveDays, CleanupDays
from .archive.status import summary as archive_summary
from .config import ConfigError, MapdConfig, load_config
from .handlers import BehaviorDays, ProbeDays, UnitKey
from .ingest.behavior_day import subjects_by_h2o
from .intake import Intake
from .liveness import LivenessFile
from .logs import get_logger
from .parsing import ParsePool
from .queue import claims
from .queue import files as queue
from .queue.policy import Policy
from .runtime import enter_reference_rows, open_database
from .systemd import Notifier
from .transient import describe, is_transient_database_error

log = get_logger("mapd.daemon")
IDLE_WAIT = 1.0  # longest sleep between turns when nothing happens
TURN_SECONDS = 2.0  # work through ready units this long, then see to watchers, heartbeat and signals
PATH_CHECK_SECONDS = 5.0  # how often the data paths' health is checked
MAX_LOOP_ERRORS = 5  # unexpected errors in a row, outside any unit, after which the daemon gives up
EXIT_LOOP_ERRORS = 1


class ShutdownNow(BaseException):
    """Raised in the main thread to abandon the ingest in progress (its transaction rolls back)."""


@dataclass
class _Schedule:
    """When each periodic duty is next due (time.monotonic)."""

    heartbeat: float = 0.0
    reconcile: float = 0.0
    waiting: float = 0.0
    config_check: float = 0.0
    paths: float = 0.0


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
        self.policy = Policy.from_config(self.config.daemon)
        self.intake = Intake(self.config, self.policy)
        self.liveness = LivenessFile(self.config.state_dir, self.config.daemon.heartbeat_seconds)
        self.activity = "starting"
        self.loop_errors = 0
        self.transient_failures = 0
        self.metrics: metrics.MetricsServer | None = None
        self._config_stat = _stat_key(self.config.source)

    # ---- lifecycle ---------------------------------------------------------

    def run(self) -> int:
        self._install_signal_handlers()
        self.liveness.beat("starting")
        exit_code = 0
        try:
            with ParsePool(1, max_inflated_bytes=self.config.ingest.max_inflated_bytes,
                           memory_limit_bytes=self.config.ingest.parse_memory_bytes) as parser:
                # Behavior first: a probe waits for its day's behavior session.
                archive = ArchiveDays(self.config, self.policy, self.keepalive)
                self.handlers = {"behavior": BehaviorDays(self.config, self.policy, parser),
                                 "probe": ProbeDays(self.config, self.policy),
                                 "archive": archive, "cleanup": CleanupDays(self.config, self.policy, archive)}
                self._export_handler()
                self._start()
                while not self.flags.stop:
                    self._turn_with_error_handling()
        except ShutdownNow:
            log.warning("shutdown: ingest in progress abandoned and rolled back")
        except _GiveUp as give_up:
            log.error("mapd stopping after repeated errors", error=str(give_up), exit_status=EXIT_LOOP_ERRORS)
            exit_code = EXIT_LOOP_ERRORS
        finally:
            self._shutdown(exit_code)
        return exit_code

    def _start(self) -> None:
        self.db = open_database(self.config)
        self.connection = self.db.connection
        claims.register_daemon(self.me)
        self._serve_metrics()
        self.intake.start()
        self.notifier.ready(status="scanning data paths")
        log.info("mapd started", pid=self.me.pid, daemon_id=self.me.daemon_id,
                 rigs=[e.rig for e in self.config.rig_data_paths])

    def _shutdown(self, exit_code: int) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)  # the shutdown timer is for the ingest, not for this
        self.notifier.stopping(status="stopping")
        self.intake.stop()
        try:
            claims.unregister_daemon(self.me)
        except Exception as error:  # the database may be the reason we stop
            log.warning("could not unregister from the database", error=describe(error))
        self.liveness.remove()
        if self.metrics is not None:
            self.metrics.close()
        log.info("mapd stopped", pid=self.me.pid, exit_status=exit_code)
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

    def _turn_with_error_handling(self) -> None:
        try:
            worked = self._turn()
            self.loop_errors = 0
            if worked:  # the database did real work again: the next trouble starts a fresh backoff
                self.transient_failures = 0
        except Exception as error:
            if is_transient_database_error(error):
                self._wait_out(error)
                return
            self.loop_errors += 1
            log.error("unexpected error in the daemon loop", error=describe(error), traceback=traceback.format_exc(),
                      errors_in_a_row=self.loop_errors)
            if self.loop_errors >= MAX_LOOP_ERRORS:
                raise _GiveUp(f"{self.loop_errors} unexpected errors in a row; last: {describe(error)}") from error
            self._sleep_attentively(self.policy.backoff_seconds(self.loop_errors))

    def _turn(self) -> bool:
        """One turn of the loop; True if a unit of work was done."""
        now = time.monotonic()
        self.notifier.maybe_ping_watchdog()
        if self.flags.reload or now >= self.schedule.config_check:
            self.schedule.config_check = now + 1.0
            self._maybe_reload()
        if now >= self.schedule.paths:
            self.schedule.paths = now + PATH_CHECK_SECONDS
            if self.intake.check_paths():
                self.intake.restart(self.config)  # a share is back: watch it and scan it now
                self.schedule.reconcile = 0.0
        # Rescheduled only once done: a scan cut short by the database is run again next turn.
        if now >= self.schedule.reconcile:
            self._reconcile()
            self.schedule.reconcile = now + self.config.daemon.reconcile_interval
        if now >= self.schedule.waiting:
            self._recheck_waiting()
            self.schedule.waiting = now + self.config.daemon.waiting_recheck_seconds
        self.intake.register_changes()
        self.keepalive()
        if self.flags.stop:
            return False
        if self._work():
            return True
        self.activity = "idle"
        # Wakes at once when a watcher reports something; sooner while files are settling.
        self.intake.wait(IDLE_WAIT / 4 if queue.has_pending() else IDLE_WAIT)
        return False

    def keepalive(self) -> None:
        """During long work in one unit (copying a 50 GB recording): heartbeat when due, so claims stay ours."""
        self.notifier.maybe_ping_watchdog()
        now = time.monotonic()
        if now >= self.schedule.heartbeat:
            self.schedule.heartbeat = now + self.config.daemon.heartbeat_seconds
            self._heartbeat()

    def _heartbeat(self, database_state: str = "ok") -> None:
        self.liveness.beat(self.activity, database_state, self.intake.checks)
        self.notifier.status(self.activity)
        if database_state == "ok":
            claims.heartbeat(self.me, self.activity)
        if self.metrics is not None:
            self._update_metrics(database_state == "ok")

    def _serve_metrics(self) -> None:
        address = self.config.metrics.address
        if address is None or self.metrics is not None:
            return
        try:
            self.metrics = metrics.serve(*address)
        except OSError as error:  # ingest matters more than its metrics: go on without them
            log.error("metrics endpoint not started", listen=self.config.metrics.listen,
                      error=error.strerror or str(error))
            return
        log.info("serving metrics", url=f"http://{self.config.metrics.listen}/metrics")

    def _update_metrics(self, database_ok: bool) -> None:
        """The gauges, from this (the main) thread: the HTTP thread never queries the database."""
        metrics.beat(database_ok)
        metrics.set_paths(self.intake.checks or [])
        if database_ok:
            metrics.set_queue(queue.state_counts(), queue.oldest_waiting_seconds())
            if self.config.archive.transport != "none":
                archive = archive_summary()
                metrics.set_archive_bytes(archive.archived_bytes, sum(archive.freed_bytes.values()))

    def _reconcile(self) -> None:
        self.activity = "scanning data paths"
        started = time.perf_counter()
        found = self.intake.reconcile()
        log.info("scan complete", files=found, duration=round(time.perf_counter() - started, 3))

    def _recheck_waiting(self) -> None:
        released = queue.release_waiting(list(subjects_by_h2o()))
        if released:
            log.info("files no longer waiting for their subject", files=released)

    # ---- dispatch ------------------------------------------------------------

    def _work(self) -> bool:
        """Hand ready units to their handlers for up to TURN_SECONDS; True if any was taken.

        One look at the queue serves many units: a backlog of thousands of
        files (the first scan of a big tree) is worked through without
        re-reading the whole queue for each unit.
        """
        deadline = time.monotonic() + TURN_SECONDS
        worked = False
        for handler in self.handlers.values():
            for unit in handler.ready():
                if self.flags.stop or time.monotonic() > deadline:
                    return worked
                worked |= self._take(handler, unit)
        return worked

    def _take(self, handler, unit: UnitKey) -> bool:
        """Claim the unit and hand it to its handler; an unexpected error fails this unit, not the daemon."""
        try:
            if unit.session_date is None:  # nothing to claim: no session can come of it
                handler.handle(unit)
                return True
            heartbeat = self.config.daemon.heartbeat_seconds
            if not claims.claim(self.me, unit.kind, unit.h2o, unit.session_date, heartbeat):
                return False
            try:
                self.activity = f"{unit.kind}: {unit.h2o} {unit.session_date}"
                handler.handle(unit)
            finally:
                claims.release(self.me, unit.kind, unit.h2o, unit.session_date)
        except Exception as error:
            if is_transient_database_error(error):
                raise
            log.error("unexpected error; the unit's files are marked failed", kind=unit.kind, h2o=unit.h2o,
                      session_date=str(unit.session_date), error=describe(error), traceback=traceback.format_exc())
            handler.fail(unit, f"internal error: {type(error).__name__}: {describe(error)} (see the log)")
        return True

    # ---- waiting out the database ------------------------------------------

    def _wait_out(self, error: BaseException) -> None:
        """A failure that passes: back off, restart the embedded server if it died, reconnect."""
        self.transient_failures += 1
        cause = describe(error)
        delay = self.policy.backoff_seconds(self.transient_failures)
        self.activity = f"waiting for the database: {cause}"
        log.error("database cannot do the work now; retrying", error=cause, delay=round(delay, 1),
                  attempt=self.transient_failures)
        self._heartbeat(database_state=cause)
        self._sleep_attentively(delay)
        self._reconnect(cause)

    def _reconnect(self, cause: str) -> None:
        """Until the database answers: restart a dead embedded server, open a fresh connection."""
        for attempt in Retrying(
            wait=lambda state: self.policy.backoff_seconds(state.attempt_number),
            retry=retry_if_exception(is_transient_database_error),
            stop=stop_never,
            sleep=self._sleep_attentively,
            reraise=True,
        ):
            with attempt:
                if self.flags.stop:
                    return
                self._heartbeat(database_state=cause)
                self._supervise_embedded_server()
                self.connection.connect()  # a fresh one: the old may be dead without knowing it
                # A transaction cut by the lost connection is gone with it; DataJoint
                # still believes it open, and would refuse the next one as nested.
                if self.connection.in_transaction:
                    self.connection.cancel_transaction()
        log.info("database reachable again")

    def _supervise_embedded_server(self) -> None:
        if self.config.database.backend != "embedded" or database.embedded_server_alive(self.config.pgdata):
            return
        log.warning("the embedded database server is not running; restarting it",
                    state_dir=str(self.config.state_dir))
        database.restart_embedded(self.config)
        log.info("embedded database server restarted")

    def _sleep_attentively(self, seconds: float) -> None:
        """Sleep, but keep the systemd watchdog fed and notice a stop request."""
        deadline = time.monotonic() + seconds
        while not self.flags.stop and time.monotonic() < deadline:
            self.notifier.maybe_ping_watchdog()
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

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
        if (new.database, new.state_dir, new.metrics) != (self.config.database, self.config.state_dir,
                                                            self.config.metrics):
            log.warning("database, state_dir and metrics changes take effect after a restart")
            new = new.model_copy(update={"database": self.config.database, "state_dir": self.config.state_dir,
                                         "metrics": self.config.metrics})
        self.notifier.reloading()
        self.config = new
        self.policy = Policy.from_config(new.daemon)
        for handler in self.handlers.values():
            handler.config, handler.policy = new, self.policy
        self._export_handler()
        self.intake.policy = self.policy
        enter_reference_rows(new)
        if self.intake.paths_changed(new):
            self.intake.restart(new)
            self.schedule.reconcile = 0.0  # scan the new paths now
        else:
            self.intake.config = new
        log.info("configuration reloaded", source=str(new.source), rigs=[e.rig for e in new.rig_data_paths])
        self.notifier.reloaded()


    def _export_handler(self) -> None:
        """Exports after commit run last (after the ingests), and only while export: has a target."""
        if self.config.export.targets and "export" not in self.handlers:
            from .export_handler import SessionExports  # loads pynwb and matplotlib: only when exporting

            self.handlers["export"] = SessionExports(self.config, self.policy)
        elif not self.config.export.targets:
            self.handlers.pop("export", None)


class _GiveUp(Exception):
    """The loop keeps failing outside any unit of work: better to exit (systemd restarts us) than spin."""


def _stat_key(path: Path | None) -> tuple[int, float, int] | None:
    try:
        stat = path.stat()
    except (OSError, AttributeError):
        return None
    return stat.st_size, stat.st_mtime, stat.st_ino
