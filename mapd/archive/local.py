"""The ``local`` archive transport: a mounted archive (a NAS), copied to and verified in this process.

Each file is copied to a temporary name beside its destination while its
bytes are hashed as read, flushed to disk, read back from the disk and
hashed again, and only when both checksums equal the one recorded when the
file was staged is it renamed to its name. So a file under its final name in
the archive has been verified; a crash leaves at most a temporary file,
which the next attempt replaces. A different file already at a destination
is never overwritten.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from ..durable import fsync_directory
from ..find.files import sha256_of
from .transport import ArchivedCopy, ArchiveItem, Batch, TaskStatus, TransportError

CHUNK_BYTES = 4 << 20
PARTIAL_SUFFIX = ".mapd-partial"


class LocalTransport:
    name = "local"
    endpoint = "local"

    def __init__(self, root: Path, keepalive: Callable[[], None] = lambda: None) -> None:
        self.root_path = root
        self.root = str(root)
        self.keepalive = keepalive  # called during long copies (the daemon's heartbeat)

    def new_submission_id(self) -> str:
        return uuid.uuid4().hex

    def submit(self, batch: Batch) -> str:
        """Copy and verify every file now (the transfer is done when this returns)."""
        if not self.root_path.is_dir():
            raise TransportError(f"archive {self.root_path} is not reachable (not a directory)", retry=True)
        for item in batch.items:
            copy_verified(item.source, self.root_path / item.destination, item.sha256, self.keepalive)
        return f"local-{batch.submission_id}"

    def poll(self, task_id: str) -> TaskStatus:
        return TaskStatus("succeeded")

    def verify(self, task_id: str, batch: Batch) -> list[ArchivedCopy]:
        """Every file is at its destination with its size (the rename came after its checksum was verified)."""
        copies = []
        for item in batch.items:
            target = self.root_path / item.destination
            try:
                size = target.stat().st_size
            except OSError as error:
                raise TransportError(f"{target}: not in the archive: {error.strerror or error}", retry=False) from None
            if size != item.size:
                raise TransportError(f"{target}: {size} bytes in the archive, {item.size} expected", retry=False)
            copies.append(ArchivedCopy(item.destination, size, item.sha256))
        return copies

    def fetch(self, items: list[ArchiveItem], to: Path) -> list[Path]:
        """Copy archived files back under ``to`` (archive layout), each verified against its sha256.

        A file that cannot be brought back does not stop the others; the
        problems are raised together at the end.
        """
        paths, problems = [], []
        for item in items:
            target = to / item.destination
            try:
                copy_verified(self.root_path / item.destination, target, item.sha256, self.keepalive)
            except TransportError as error:
                problems.append(str(error))
                continue
            paths.append(target)
        if problems:
            raise TransportError(f"{len(problems)} of {len(items)} files not retrieved: " + "; ".join(problems),
                                 retry=False)
        return paths


def copy_verified(source: Path, target: Path, sha256: str, keepalive: Callable[[], None] = lambda: None) -> None:
    """Copy ``source`` to ``target`` atomically, verified against ``sha256``; an identical target is kept.

    Raises TransportError: a different file is at the target (never
    overwritten), the source is not what was recorded, or the copy read back
    from the disk differs.
    """
    if target.exists():
        if sha256_of(target, keepalive)[0] == sha256:
            return  # already there (a retry after a crash): no second copy
        raise TransportError(f"{target}: a different file is already there; not overwritten", retry=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}{PARTIAL_SUFFIX}")
    try:
        read = _copy_hashing(source, partial, keepalive)
        if read != sha256:
            raise TransportError(f"{source}: not the content recorded (sha256 {read[:12]}..., {sha256[:12]}... "
                                 "recorded); not copied", retry=False)
        written = _hash_from_disk(partial, keepalive)
        if written != sha256:
            raise TransportError(f"{target}: the copy read back differs from the source (sha256 {written[:12]}...)",
                                 retry=True)
        os.rename(partial, target)  # atomic: the name appears only with verified content
        fsync_directory(target.parent)
    except OSError as error:
        raise TransportError(f"{target}: cannot copy {source}: {error.strerror or error}", retry=True) from None
    finally:
        partial.unlink(missing_ok=True)


def _copy_hashing(source: Path, partial: Path, keepalive: Callable[[], None]) -> str:
    digest = hashlib.sha256()
    with open(source, "rb") as reader, open(partial, "wb") as writer:
        while chunk := reader.read(CHUNK_BYTES):
            digest.update(chunk)
            writer.write(chunk)
            keepalive()
        writer.flush()
        os.fsync(writer.fileno())
    return digest.hexdigest()


def _hash_from_disk(path: Path, keepalive: Callable[[], None]) -> str:
    """The file's sha256 read from the device, not from the copy still in the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        # Written and fsynced: the cached pages are clean and may be dropped, so
        # the read that follows comes from the disk (or the NAS) itself.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        digest = hashlib.sha256()
        while chunk := os.read(fd, CHUNK_BYTES):
            digest.update(chunk)
            keepalive()
        return digest.hexdigest()
    finally:
        os.close(fd)

