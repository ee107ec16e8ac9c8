"""This host's daemon as a small file in ``state_dir``: ``mapd status`` reads it when the database cannot answer.

The database's heartbeat table is the shared view of every host's daemons;
this file is the local one, so that "is mapd running here?" has an answer
while the database is down or its disk is full. The file is written in place
(same size every time), so a heartbeat needs no new disk space.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from .database import pid_alive

FILE_NAME = "daemon.json"
FILE_BYTES = 4096  # fixed size: rewriting it never grows the file


@dataclass(frozen=True)
class LocalDaemon:
    pid: int
    host: str
    started: str  # ISO 8601, UTC
    heartbeat: str  # ISO 8601, UTC
    heartbeat_seconds: float
    activity: str
    database: str  # "ok", or why the daemon is waiting for it

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


class LivenessFile:
    """Kept open by the daemon and rewritten at each heartbeat."""

    def __init__(self, state_dir: Path, heartbeat_seconds: float) -> None:
        self.path = state_dir / FILE_NAME
        self.started = _now()
        self.heartbeat_seconds = heartbeat_seconds
        self._fd: int | None = None

    def beat(self, activity: str, database: str = "ok") -> None:
        record = LocalDaemon(os.getpid(), socket.gethostname(), self.started, _now(), self.heartbeat_seconds,
                             activity[:500], database[:500])
        data = json.dumps(asdict(record)).encode()[: FILE_BYTES - 1]
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


def read(state_dir: Path) -> LocalDaemon | None:
    """The daemon this host's state_dir knows of, if any (alive or not: see ``alive``)."""
    try:
        return LocalDaemon(**json.loads((state_dir / FILE_NAME).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
