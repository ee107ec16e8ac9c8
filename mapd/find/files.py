"""What a found data file is, and what a scan could not use (plain records, no database)."""

from __future__ import annotations

import hashlib
import os
import stat as stat_module
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileOnDisk:
    """A data file as found on disk (the stat taken when it was examined)."""

    path: Path
    data_root: Path
    rig: str | None
    size: int
    mtime: float

    @property
    def subpath(self) -> str:
        return self.path.relative_to(self.data_root).as_posix()

    def with_stat(self, stat: os.stat_result) -> "FileOnDisk":
        return FileOnDisk(self.path, self.data_root, self.rig, stat.st_size, stat.st_mtime)

    @property
    def version(self) -> tuple[int, float]:
        """(size, mtime): the one test of "has this file changed" short of reading it."""
        return self.size, self.mtime

    def same_stat(self, stat: os.stat_result) -> bool:
        """Unchanged since examined."""
        return (stat.st_size, stat.st_mtime) == self.version


@dataclass(frozen=True)
class ScanProblem:
    """An entry below a data path that a scan met but could not use (reported, never fatal)."""

    path: Path
    reason: str  # e.g. "directory not readable: Permission denied", "dangling symbolic link"


def special_file_kind(mode: int) -> str | None:
    """What a non-regular file is, in words ("a FIFO"); None for a regular file."""
    if stat_module.S_ISREG(mode):
        return None
    for test, name in ((stat_module.S_ISFIFO, "a FIFO"), (stat_module.S_ISSOCK, "a socket"),
                       (stat_module.S_ISCHR, "a character device"), (stat_module.S_ISBLK, "a block device"),
                       (stat_module.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


CHUNK_BYTES = 1 << 20


def sha256_of(path: Path, progress: Callable[[], None] | None = None) -> tuple[str, os.stat_result]:
    """The sha256 of a regular file's content and the stat of what was read.

    Opened without blocking, so a FIFO named like a data file cannot hang the
    caller; anything but a regular file raises OSError naming what it is.
    ``progress`` is called after each chunk (a long read keeps the daemon's heartbeat going).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        stat = os.fstat(fd)
        special = special_file_kind(stat.st_mode)
        if special is not None:
            raise OSError(f"{path}: not a regular file ({special})")
        digest = hashlib.sha256()
        while chunk := os.read(fd, CHUNK_BYTES):
            digest.update(chunk)
            if progress is not None:
                progress()
        return digest.hexdigest(), stat
    finally:
        os.close(fd)
