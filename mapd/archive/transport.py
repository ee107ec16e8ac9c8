"""What every archive transport (``local``, ``globus``) does: submit a batch, poll it, say what arrived.

The stage (:mod:`mapd.archive.stage`) owns the states in the database; a
transport only moves bytes and reports. Its calls must be safe to repeat:
a daemon killed between any two of them calls them again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from ..config import MapdConfig


@dataclass(frozen=True)
class ArchiveItem:
    """One file to archive."""

    source: Path  # absolute path on this host
    destination: str  # relative to the archive root: {h2o}/{YYYY-MM-DD}/{kind}/{path relative to its data path}
    size: int  # (bytes) of the source when staged
    sha256: str  # of the source when staged (hex)


@dataclass(frozen=True)
class Batch:
    """The files of one session (or probe) that go in one transfer."""

    batch_id: str  # stable id in the database
    label: str  # for people (a Globus task label): "dl25 2019-07-10 behavior"
    items: tuple[ArchiveItem, ...]
    # The transport's idempotency key, stored before the first submit: a
    # repeated submit with it never starts a second transfer.
    submission_id: str


@dataclass(frozen=True)
class TaskStatus:
    state: Literal["active", "succeeded", "failed"]
    # Why it failed, or why an active task is stuck (paused, credentials expired, consent required).
    problem: str = ""


@dataclass(frozen=True)
class ArchivedCopy:
    """A file as it is in the archive, after the transfer."""

    destination: str  # as in ArchiveItem
    size: int
    sha256: str  # verified by the transport against ArchiveItem.sha256


class TransportError(Exception):
    """The transport cannot do it now. ``retry``: a later attempt may succeed (a 503, a network error).

    Not retried: the batch is recorded as failed or blocked with the message,
    which names the problem and never contains a token or secret.
    """

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


class Transport(Protocol):
    name: str  # local | globus
    endpoint: str  # where the archive is: 'local' or the Globus destination endpoint id
    root: str  # the archive root on that endpoint

    def new_submission_id(self) -> str:
        """A fresh idempotency key for a batch (stored before submit)."""

    def submit(self, batch: Batch) -> str:
        """Start (or, with a submission id already used, find) the batch's transfer; returns its task id."""

    def poll(self, task_id: str) -> TaskStatus:
        """Where the transfer is."""

    def verify(self, task_id: str, batch: Batch) -> list[ArchivedCopy]:
        """After success: every item as it is in the archive; raises TransportError if one is missing or differs."""

    def fetch(self, items: list[ArchiveItem], to: Path) -> list[Path]:
        """Bring archived files back under ``to`` (archive layout), each verified against its sha256;
        never overwrite a different file. (``ArchiveItem.source`` is not used.)"""


def transport_for(config: "MapdConfig", keepalive: Callable[[], None] = lambda: None) -> Transport | None:
    """The configured transport (None: archive.transport is none); ``keepalive`` is called during long copies."""
    archive = config.archive
    if archive.transport == "local":
        from .local import LocalTransport

        return LocalTransport(archive.local.path, keepalive)
    if archive.transport == "globus":
        from .globus import GlobusTransport

        return GlobusTransport(archive.globus, config.state_dir)
    return None
