"""What the daemon benchmarks share: ``mapd run`` in a subprocess, its log events, other mapd commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class DaemonProcess:
    """``mapd run`` in a subprocess; its JSON log lines read incrementally from a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self._out = log.open("w")
        self._offset = 0
        self._partial = ""
        self.process = subprocess.Popen([sys.executable, "-m", "mapd", "--config", str(config), "run"], cwd=REPO,
                                        stdout=self._out, stderr=subprocess.STDOUT)

    def new_events(self) -> list[dict]:
        """Log events written since the last call (complete lines only)."""
        with self.log.open() as handle:
            handle.seek(self._offset)
            text = handle.read()
            self._offset = handle.tell()
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()  # an unfinished last line waits for the next call
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:
                pass  # not a log event (e.g. a warning printed by a library)
        return events

    def check_alive(self, what: str) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"daemon exited ({self.process.returncode}) waiting for {what}:\n"
                               f"{self.log.read_text()[-3000:]}")

    def wait_for(self, match: Callable[[dict], bool], what: str, timeout: float = 300) -> dict:
        """The first new event ``match`` accepts; a failed file or a dead daemon is an error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.new_events():
                if event.get("event") == "file failed":
                    raise RuntimeError(f"daemon: file failed: {event}")
                if match(event):
                    return event
            self.check_alive(what)
            time.sleep(0.02)
        raise RuntimeError(f"timed out waiting for {what}:\n{self.log.read_text()[-3000:]}")

    def rss_mb(self) -> float:
        return rss_mb(self.process.pid)

    def stop(self) -> None:
        # SIGTERM: the daemon stops cleanly, and the embedded server with its last user.
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._out.close()


def rss_mb(pid: int) -> float:
    """VmRSS of one process (not its children), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def mapd(config: Path, *args: str, timeout: float = 600) -> str:
    """Run another mapd command; its stdout, or RuntimeError with its output."""
    result = subprocess.run([sys.executable, "-m", "mapd", "--config", str(config), *args], cwd=REPO,
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"mapd {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
    return result.stdout


def stop_leftover_server(state_dir: Path) -> None:
    """Stop the embedded PostgreSQL if a crash left it running (its pid is in postmaster.pid)."""
    pid_file = state_dir / "pgdata" / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
    except (OSError, ValueError, IndexError):
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def in_scratch_directory(prefix: str, body: Callable[[Path], int]) -> int:
    """``body(work)`` in a fresh directory under /tmp; afterwards its embedded server is stopped and it is removed."""
    import shutil
    import tempfile

    from mapd.database import release_embedded

    work = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        return body(work)
    finally:
        release_embedded(work / "state" / "pgdata")  # the last user: the server stops
        stop_leftover_server(work / "state")
        shutil.rmtree(work, ignore_errors=True)
