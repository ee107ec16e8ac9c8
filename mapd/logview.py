"""Show mapd's JSON-lines log file as readable lines, optionally following it like ``tail -F``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, TextIO

# Bytes read at a time, both backwards (to find the last lines) and forwards.
BLOCK = 64 * 1024
# A "line" this long without a newline is not a write in progress: show it anyway.
MAX_PENDING = 1024 * 1024
LEVEL_WIDTH = len("critical")
# What an event is about, in the order a reader scans for it; the rest follow sorted.
FIRST_KEYS = ("file", "rig", "h2o", "session_date", "subject_id", "session", "trials", "rows", "duration", "reason", "error")
_HEAD_KEYS = frozenset({"timestamp", "level", "event"})


class LogViewError(Exception):
    """The log file cannot be shown."""


# --- rendering ---------------------------------------------------------------


def render(line: str) -> str:
    """One JSON log line -> one readable line; anything else comes back as it was."""
    text = line.rstrip("\r\n")
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        return text
    if not isinstance(record, dict):
        return text
    try:
        return _render_record(record)
    except Exception:  # a viewer must show every line, whatever it holds
        return text


def _render_record(record: dict[str, Any]) -> str:
    head: list[str] = []
    if "timestamp" in record:
        head.append(_short_time(record["timestamp"]))
    if "level" in record:
        level = record["level"]
        head.append((level if isinstance(level, str) else _value(level)).ljust(LEVEL_WIDTH))
    if "event" in record:
        event = record["event"]
        # The event is the message: not quoted, but kept on one line.
        head.append(event.replace("\n", "\\n") if isinstance(event, str) else _value(event))
    pairs = " ".join(f"{key}={_value(record[key])}" for key in _ordered_keys(record))
    text = " ".join(head).rstrip()
    return f"{text}  {pairs}" if text and pairs else text or pairs


def _ordered_keys(record: dict[str, Any]) -> list[str]:
    first = [key for key in FIRST_KEYS if key in record]
    rest = sorted(key for key in record if key not in _HEAD_KEYS and key not in FIRST_KEYS)
    return first + rest


def _short_time(value: Any) -> str:
    """ISO timestamps (or epoch seconds) to ISO 8601 in UTC, 'YYYY-MM-DDTHH:MM:SS.mmmZ'; others as they are.

    A timestamp without an offset (written by an older mapd, in local time) is taken as local time.
    """
    try:
        if isinstance(value, str):
            moment = datetime.fromisoformat(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            moment = datetime.fromtimestamp(value, timezone.utc)
        else:
            return _value(value)
        moment = moment.astimezone(timezone.utc)
        return moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds").replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError):
        pass
    return value if isinstance(value, str) else _value(value)


def _value(value: Any) -> str:
    if isinstance(value, list):
        # Commas separate the items, so an item holding one is quoted.
        return ",".join(_scalar(item, also=",") for item in value) if value else "[]"
    return _scalar(value)


def _scalar(value: Any, also: str = "") -> str:
    if isinstance(value, str):
        return _quote(value, also)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _quote(text: str, also: str = "") -> str:
    """Quote (as repr does) what would otherwise not read as one value."""
    plain = text and not any(c.isspace() or not c.isprintable() or c in also for c in text)
    return text if plain else repr(text)


# --- reading -----------------------------------------------------------------


def show(
    path: Path,
    out: TextIO,
    *,
    follow: bool = False,
    lines: int | None = 50,
    poll_seconds: float = 0.5,
    stop: Callable[[], bool] | None = None,
) -> None:
    """Write the last ``lines`` lines of ``path`` (None: all) to ``out``, rendered.

    With ``follow``, keep writing lines as they are appended, across rotation,
    truncation and the file missing for a while, until ``stop()`` is true (polled
    once per cycle) or KeyboardInterrupt.
    """
    path = Path(path)
    source = _open(path, out)
    if not follow:
        if source is None:
            raise LogViewError(f"no log file at {path}: set logging.file in the configuration")
        with source:
            source.seek_last(lines)
            source.drain()
            source.finish()  # nothing will complete the last line now
        return
    if source is not None:
        source.seek_last(lines)
        source.drain()  # the last lines now, not after the first poll_seconds
    try:
        while True:
            # Asked before reading, so that what was written before stop() became true is shown.
            stopping = stop is not None and stop()
            source = _poll(path, out, source)
            if stopping:
                return
            time.sleep(poll_seconds)
    finally:
        if source is not None:
            source.close()


def _poll(path: Path, out: TextIO, source: _Source | None) -> _Source | None:
    """One follow cycle: read what is new, and move on to a new file at ``path`` if there is one."""
    if source is not None:
        source.drain()
    identity = _identity(path)
    if identity is None or (source is not None and identity == source.identity):
        # Unchanged, or moved away and its successor not there yet: the writer may still append to it.
        return source
    if source is not None:
        # Rotated: finish the old file (what was written since the drain above), then the new one from its start.
        source.drain()
        source.finish()
        source.close()
    source = _open(path, out)
    if source is not None:
        source.drain()
    return source


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise LogViewError(f"cannot read log file {path}: {error.strerror}") from error
    return stat.st_dev, stat.st_ino


def _open(path: Path, out: TextIO) -> _Source | None:
    """The file at ``path`` opened for reading, or None while it does not exist."""
    try:
        # Unbuffered: tell() is then exactly what was read, and reads at the end see new data.
        file = open(path, "rb", buffering=0)  # closed by the returned _Source
    except FileNotFoundError:
        return None
    except OSError as error:
        raise LogViewError(f"cannot read log file {path}: {error.strerror}") from error
    return _Source(file, out)


class _Source:
    """One open log file: writes its complete lines, keeps a partial last line for later."""

    def __init__(self, file: BinaryIO, out: TextIO) -> None:
        self.file = file
        self.out = out
        self.pending = b""
        stat = os.fstat(file.fileno())
        self.identity = (stat.st_dev, stat.st_ino)

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    def seek_last(self, lines: int | None) -> None:
        """Position at the start of the last ``lines`` lines (a partial last line counts)."""
        size = os.fstat(self.file.fileno()).st_size
        self.file.seek(0 if lines is None else _start_of_last_lines(self.file, size, lines))
        self.pending = b""

    def drain(self) -> None:
        """Write every line completed since the last call."""
        if os.fstat(self.file.fileno()).st_size < self.file.tell():
            # Truncated in place (copytruncate): what we had read is gone, start over.
            self.file.seek(0)
            self.pending = b""
        while chunk := self.file.read(BLOCK):
            *complete, self.pending = (self.pending + chunk).split(b"\n")
            for line in complete:
                self._write(line)
            if len(self.pending) > MAX_PENDING:
                self.finish()
        self.out.flush()

    def finish(self) -> None:
        """Write the partial last line, if any: it will not be completed."""
        if self.pending:
            self._write(self.pending)
            self.pending = b""
            self.out.flush()

    def _write(self, line: bytes) -> None:
        self.out.write(render(line.decode("utf-8", errors="replace")) + "\n")


def _start_of_last_lines(file: BinaryIO, size: int, lines: int) -> int:
    """Offset where the last ``lines`` lines start, reading backwards a block at a time."""
    if lines <= 0:
        return size
    end = size
    if size:
        file.seek(size - 1)
        if file.read(1) == b"\n":
            end -= 1  # the newline ending the last line separates nothing
    found = 0
    while end > 0:
        start = max(0, end - BLOCK)
        file.seek(start)
        block = file.read(end - start)
        index = len(block)
        while (index := block.rfind(b"\n", 0, index)) >= 0:
            found += 1
            if found == lines:
                return start + index + 1
        end = start
    return 0
