"""This host's daemon as a small file in ``state_dir``: ``mapd status`` reads it when the database cannot answer.

The database's heartbeat table is the shared view of every host's daemons;
this file is the local one, so that "is mapd running here?" has an answer
while the database is down or its disk is full. The file is written in place
(same size every time), so a heartbeat needs no new disk space. It also holds
the daemon's last view of its data paths, so that ``mapd status --check`` (a
container's HEALTHCHECK) answers from this file alone: no database, no
DataJoint, no touching a share that may hang.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from .database import pid_alive
from .find.health import PathHealth

FILE_NAME = "daemon.json"
FILE_BYTES = 4096  # fixed size: rewriting it never grows the file
STALE_HEARTBEATS = 3  # a daemon silent for this many heartbeat intervals is dead (or stuck)


@dataclass(frozen=True)
class LocalDaemon:
    pid: int
    host: str
    started: str  # ISO 8601, UTC
    heartbeat: str  # ISO 8601, UTC
    heartbeat_seconds: float
    activity: str
    database: str  # "ok", or why the daemon is waiting for it
    paths_checked: int = 0  # data paths at the daemon's last check (0: not checked yet)
    unhealthy_paths: list[str] = field(default_factory=list)  # "rig RRig: /mnt/rigs/RRig: missing", each not ok

    @property
    def alive(self) -> bool:
        """The process exists and is a mapd (a pid can be reused by another program after a crash)."""
        if self.host != socket.gethostname() or not pid_alive(self.pid):
            return False
        try:
            return b"mapd" in Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return True  # no /proc: trust the pid

    @property
    def heartbeat_age(self) -> float:
        return (datetime.now(timezone.utc) - datetime.fromisoformat(self.heartbeat)).total_seconds()

    @property
    def silent_limit(self) -> float:
        """Seconds without a heartbeat after which the daemon counts as dead (claims) or stuck (health)."""
        return STALE_HEARTBEATS * self.heartbeat_seconds


def health_check(local: LocalDaemon | None, state_dir: Path) -> tuple[bool, str]:
    """``mapd status --check``: is this host's daemon alive, and were all its data paths usable? With why, in one line."""
    if local is None:
        return False, f"no daemon running here (no {state_dir / FILE_NAME})"
    if not local.alive:
        return False, f"daemon pid {local.pid} is not running (last heartbeat {local.heartbeat})"
    age = local.heartbeat_age
    if age > local.silent_limit:
        return False, (f"daemon pid {local.pid} is stuck: last heartbeat {age:.0f} s ago "
                       f"(more than {local.silent_limit:g} s)")
    if local.unhealthy_paths:
        return False, f"data paths not usable: {'; '.join(local.unhealthy_paths)}"
    paths = f"{local.paths_checked} data paths ok" if local.paths_checked else "data paths not checked yet"
    database = "" if local.database == "ok" else f"; waiting for the database: {local.database}"
    return True, f"daemon pid {local.pid} alive, heartbeat {age:.0f} s ago, {paths}{database}"


class LivenessFile:
    """Kept open by the daemon and rewritten at each heartbeat."""

    def __init__(self, state_dir: Path, heartbeat_seconds: float) -> None:
        self.path = state_dir / FILE_NAME
        self.started = _now()
        self.heartbeat_seconds = heartbeat_seconds
        self._fd: int | None = None

    def beat(self, activity: str, database: str = "ok", paths: list[PathHealth] | None = None) -> None:
        """Rewrite the file; ``paths``: the daemon's last check of its data paths (None: not checked yet)."""
        unhealthy = [f"{check.data_path.label}: {check.data_path.path}: {check.health}"
                     for check in paths or [] if not check.ok]
        record = LocalDaemon(os.getpid(), socket.gethostname(), self.started, _now(), self.heartbeat_seconds,
                             activity[:500], database[:500], len(paths or []), unhealthy)
        data = _fitted(record)
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            os.pwrite(self._fd, data.ljust(FILE_BYTES, b" "), 0)
        except OSError:
            pass  # a full disk must not stop the daemon; status then sees an old heartbeat

    def remove(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        try:
            self.path.unlink()
        except OSError:
            pass


def _fitted(record: LocalDaemon) -> bytes:
    """The record as JSON within FILE_BYTES: unusable paths beyond what fits are counted, not listed."""
    listed = list(record.unhealthy_paths)
    while True:
        shown = listed + ([f"and {len(record.unhealthy_paths) - len(listed)} more"]
                          if len(listed) < len(record.unhealthy_paths) else [])
        data = json.dumps(asdict(replace(record, unhealthy_paths=shown))).encode()
        if len(data) < FILE_BYTES or not listed:
            return data[: FILE_BYTES - 1]
        listed.pop()


def read(state_dir: Path) -> LocalDaemon | None:
    """The daemon this host's state_dir knows of, if any (alive or not: see ``alive``)."""
    try:
        return LocalDaemon(**json.loads((state_dir / FILE_NAME).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
