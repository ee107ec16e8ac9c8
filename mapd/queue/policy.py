"""When queued work may be taken: the settle rule and the retry backoff, once for every kind of work."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..config import DaemonConfig


@dataclass(frozen=True)
class Policy:
    settle_seconds: float
    initial_seconds: float
    max_seconds: float
    max_attempts: int

    @classmethod
    def from_config(cls, daemon: DaemonConfig) -> "Policy":
        retry = daemon.retry
        return cls(daemon.settle_seconds, retry.initial_seconds, retry.max_seconds, retry.max_attempts)

    def settled_at(self, seen: datetime, mtime: float) -> datetime:
        """When a file seen (with this size and mtime) at ``seen`` counts as completely written.

        A file is settled once unchanged for ``settle_seconds``: observed so
        (``seen``), or shown so by its mtime, whichever comes first. A rig
        whose clock runs behind could make a file look settled early; the
        stat taken again after parsing catches a file still being written.
        """
        settle = timedelta(seconds=self.settle_seconds)
        return min(seen + settle, datetime.fromtimestamp(mtime) + settle)

    def backoff_seconds(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based): exponential, capped, with jitter."""
        ceiling = min(self.max_seconds, self.initial_seconds * 2 ** max(0, attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)  # jitter: hosts that failed together retry apart

    def gives_up(self, attempts: int) -> bool:
        return attempts >= self.max_attempts
