"""Watching the data paths: inotify on local disks, polling on network shares.

Watchers only report paths that may have changed (into a thread-safe queue);
the daemon's main thread decides what they are and does all database work.
"""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from ..config import MapdConfig

# Writes made by another machine to these file systems raise no inotify event here.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "ceph", "glusterfs", "lustre", "gpfs",
    "fuse.sshfs", "fuse.glusterfs", "fuse.s3fs", "fuse.rclone", "davfs", "fuse.davfs2",
})


@dataclass(frozen=True)
class WatchedRoot:
    kind: str  # behavior | ephys
    path: Path
    rig: str | None
    mode: str  # events | poll (resolved from auto)
    poll_interval: float


def watched_roots(config: MapdConfig) -> list[WatchedRoot]:
    roots = [WatchedRoot("behavior", e.path, e.rig, resolve_mode(e.watch, e.path), e.poll_interval)
             for e in config.rig_data_paths]
    return roots + [WatchedRoot("ephys", e.path, None, resolve_mode(e.watch, e.path), e.poll_interval)
                    for e in config.ephys_data_paths]


def resolve_mode(watch: str, path: Path) -> str:
    if watch != "auto":
        return watch
    return "poll" if filesystem_type(path) in NETWORK_FILESYSTEMS else "events"


def filesystem_type(path: Path) -> str:
    """The type of the file system ``path`` is on (longest matching mount point in /proc/self/mountinfo)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return ""
    target = os.path.realpath(path)
    best, fstype = "", ""
    for line in lines:
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        mount_point = fields[4].replace("\\040", " ")
        after = line.split(" - ", 1)[1].split()
        if (target == mount_point or target.startswith(mount_point.rstrip("/") + "/")) and len(mount_point) >= len(best):
            best, fstype = mount_point, after[0] if after else ""
    return fstype


class _Forward(FileSystemEventHandler):
    def __init__(self, root: WatchedRoot, watcher: "Watcher") -> None:
        self.root = root
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("deleted", "opened", "closed_no_write"):
            return
        path = event.dest_path if event.event_type == "moved" else event.src_path
        # A directory is reported too: it may already hold files written before it was watched.
        self.watcher._report(self.root, Path(os.fsdecode(path)))


class Watcher:
    """Collects changed paths below the watched roots, for the main thread to take."""

    def __init__(self, roots: list[WatchedRoot]) -> None:
        self.roots = roots
        self._changes: queue.SimpleQueue[tuple[WatchedRoot, Path]] = queue.SimpleQueue()
        self._changed = threading.Event()
        self._observers: list[BaseObserver] = []

    def _report(self, root: WatchedRoot, path: Path) -> None:
        self._changes.put((root, path))
        self._changed.set()

    def wait(self, timeout: float) -> bool:
        """Block until something changed (True) or the timeout passed (False)."""
        return self._changed.wait(timeout)

    def put_back(self, changes: list[tuple[WatchedRoot, Path]]) -> None:
        for root, path in changes:
            self._report(root, path)

    def take_changes(self) -> list[tuple[WatchedRoot, Path]]:
        self._changed.clear()
        changes = []
        while True:
            try:
                changes.append(self._changes.get_nowait())
            except queue.Empty:
                return changes

    def start(self) -> list[str]:
        """Start watching; returns a problem per root that cannot be watched (it is retried by reconcile scans)."""
        problems = []
        observers: dict[tuple[str, float], BaseObserver] = {}
        for root in self.roots:
            if not root.path.is_dir():
                problems.append(f"{root.path}: not a directory (yet): not watched, scanned periodically")
                continue
            key = (root.mode, root.poll_interval if root.mode == "poll" else 0.0)
            if key not in observers:
                observers[key] = PollingObserver(timeout=root.poll_interval) if root.mode == "poll" else Observer()
            try:
                observers[key].schedule(_Forward(root, self), str(root.path), recursive=True)
            except OSError as error:
                problems.append(f"{root.path}: cannot watch: {error.strerror or error}")
        self._observers = list(observers.values())
        for observer in self._observers:
            observer.daemon = True
            observer.start()
        return problems

    def stop(self) -> None:
        for observer in self._observers:
            observer.stop()
        for observer in self._observers:
            observer.join(timeout=10)
        self._observers = []
