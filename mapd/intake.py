"""Found files -> the queue: what ``mapd run`` does with what its watchers and scans report.

It also keeps an eye on the data paths themselves: a share that is unmounted
is reported (and recorded for ``mapd status``) instead of looking empty, and
is watched again as soon as it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import MapdConfig
from .find import health
from .find.files import FileOnDisk
from .find.scan import Scan, data_files, group_by_session, probe_folders
from .find.watch import WatchedRoot, Watcher, watched_roots
from .logs import get_logger
from .queue import files as queue
from .queue.files import FileOutcome, FileState, log_outcome
from .queue.policy import Policy

log = get_logger("mapd.intake")
PROBE = "probe"


@dataclass
class Intake:
    config: MapdConfig
    policy: Policy

    def __post_init__(self) -> None:
        self.roots: list[WatchedRoot] = []
        self.watcher: Watcher | None = None
        self.unhealthy: dict[Path, str] = {}  # data path -> its health, for paths not ok
        self.checks: list[health.PathHealth] | None = None  # the last check of every data path (None: none yet)

    # ---- watching ------------------------------------------------------------

    def start(self) -> None:
        self.roots = watched_roots(self.config)
        self.check_paths(initial=True)
        self.watcher = Watcher([root for root in self.roots if root.path not in self.unhealthy])
        for problem in self.watcher.start():
            log.warning("data path not watched", problem=problem)
        for root in self.watcher.roots:
            log.info("watching", path=str(root.path), kind=root.kind, mode=root.mode,
                     poll_interval=root.poll_interval if root.mode == "poll" else None)

    def stop(self) -> None:
        if self.watcher:
            self.watcher.stop()

    def restart(self, config: MapdConfig) -> None:
        """After a configuration change, or when a data path came back."""
        self.config = config
        self.stop()
        self.start()

    def wait(self, timeout: float) -> None:
        self.watcher.wait(timeout)

    def paths_changed(self, config: MapdConfig) -> bool:
        return watched_roots(config) != self.roots

    # ---- data path health ----------------------------------------------------

    def check_paths(self, initial: bool = False) -> bool:
        """Check every data path; log and record changes. True if one that was down is back."""
        checks = self.checks = health.check_all(self.config)
        changed = queue.record_path_health(checks)
        came_back = False
        for check in changed:
            path = check.data_path.path
            if check.ok:
                came_back |= path in self.unhealthy
                self.unhealthy.pop(path, None)
                if not initial:
                    log.info("data path is back", path=str(path), rig=check.data_path.rig)
            else:
                self.unhealthy[path] = check.health
                log.error("data path unusable: not watched until it returns", path=str(path),
                          rig=check.data_path.rig, health=check.health, problem=check.problem)
        if initial:  # a path already known to be down (recorded by an earlier run) is still down
            self.unhealthy.update({check.data_path.path: check.health for check in checks if not check.ok})
        return came_back

    # ---- finding files -------------------------------------------------------

    def reconcile(self) -> int:
        """Scan every usable data path: finds what arrived while mapd was down or a watcher missed."""
        found = 0
        for root in self.roots:
            if root.path in self.unhealthy:
                continue
            scan = data_files(root.kind, root.path, root.rig, root.path)
            found += len(scan.files)
            self._register(root, scan)
            queue.record_scan_problems(root.path, scan.problems)
            for problem in scan.problems:
                log.warning("entry not usable", path=str(problem.path), reason=problem.reason)
        return found

    def register_changes(self) -> None:
        changes = self.watcher.take_changes()
        try:
            self._register_changes(changes)
        except Exception:
            self.watcher.put_back(changes)  # the database failed: these paths are looked at again next turn
            raise

    def _register_changes(self, changes: list[tuple[WatchedRoot, Path]]) -> None:
        changed: dict[WatchedRoot, set[Path]] = {}
        for root, path in changes:
            changed.setdefault(root, set()).add(path)
        for root, paths in changed.items():
            scan = Scan()
            for path in paths:
                scan.extend(data_files(root.kind, root.path, root.rig, path))
            unique = {file.path: file for file in scan.files}
            self._register(root, Scan(list(unique.values()), scan.problems))

    def _register(self, root: WatchedRoot, scan: Scan) -> None:
        if not scan.files:
            return
        if root.kind == "ephys":
            self._register_probes(root, scan.files)
            return
        groups = group_by_session(scan.files)
        h2o_dates = {queue.file_id("behavior", f): key for key, group in groups.sessions.items() for f in group}
        named = [f for group in groups.sessions.values() for f in group]
        result = queue.register_found("behavior", named, self.policy, h2o_dates)
        if result.new or result.requeued:
            log.info("files queued", new=result.new, requeued=result.requeued, rig=root.rig)
        self._record_once([(file, FileState.IGNORED, reason) for file, reason in groups.not_sessions]
                          + [(file, FileState.FAILED, reason) for file, reason in groups.bad_names])

    def _record_once(self, verdicts: list[tuple[FileOnDisk, FileState, str]]) -> None:
        """Record files that can never be sessions, once (not again at every scan)."""
        known = queue.known_states("behavior", [file for file, _, _ in verdicts])
        fresh = [FileOutcome(file, state, reason) for file, state, reason in verdicts
                 if known.get(queue.file_id("behavior", file)) is not state]
        queue.record("behavior", fresh)
        for outcome in fresh:
            log_outcome(outcome)

    def _register_probes(self, root: WatchedRoot, files: list[FileOnDisk]) -> None:
        """Each probe folder these files are in is one unit of work, queued like a behavior file."""
        units = probe_folders(root.path, files)
        h2o_dates = {queue.file_id(PROBE, folder): (key.h2o, key.session_date) for key, folder in units}
        result = queue.register_found(PROBE, [folder for _, folder in units], self.policy, h2o_dates)
        if result.new or result.requeued:
            log.info("probe folders queued", new=result.new, requeued=result.requeued, path=str(root.path))
