"""Making a written file survive a power cut: its data, then the directory entry that names it.

A file written, renamed into place and recorded as done (archived, exported) must not turn out
empty or short after the host loses power: the page cache is flushed first (``fsync``), and the
rename is made durable by flushing the directory that holds the name.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_directory", "fsync_file"]


def fsync_file(path: Path) -> None:
    """Flush a closed file's data and metadata to its device."""
    _fsync(path, os.O_RDONLY)


def fsync_directory(path: Path) -> None:
    """Flush a directory, so that names created or renamed in it last."""
    _fsync(path, os.O_RDONLY | os.O_DIRECTORY)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
