"""What ``mapd run`` does with archive and cleanup units: one subject's day each, claimed like ingest.

Both derive their work from the database (what is ingested, archived,
verified) rather than from a notice sent at commit, so nothing is lost when
mapd stops between an ingest and its archival.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import MapdConfig
from ..handlers import UnitKey
from ..logs import get_logger
from ..queue.policy import Policy
from . import cleanup, stage
from .transport import Transport, transport_for

log = get_logger("mapd.archive")
LOOK_SECONDS = 10.0  # how often the ingested sessions without a batch are looked for


@dataclass
class ArchiveDays:
    """Handler of archive units: stage a day's new batches, submit, poll and verify its open ones."""

    config: MapdConfig
    policy: Policy
    keepalive: Callable[[], None] = lambda: None  # the daemon's heartbeat, kept during long copies
    kind: str = "archive"
    _transport: Transport | None = None
    _transport_of: object = None  # the archive config the transport was made for
    _plans: list[stage.BatchPlan] = field(default_factory=list)
    _next_look: float = 0.0

    @property
    def transport(self) -> Transport:
        if self._transport is None or self._transport_of != self.config.archive:  # reloaded
            self._transport, self._transport_of = transport_for(self.config, self.keepalive), self.config.archive
        return self._transport

    def ready(self) -> list[UnitKey]:
        if self.config.archive.transport == "none":
            return []
        if time.monotonic() >= self._next_look:
            self._plans = stage.unstaged()
            self._next_look = time.monotonic() + LOOK_SECONDS
        days = {(plan.h2o, plan.session_date) for plan in self._plans} | set(stage.due_days())
        return [UnitKey(self.kind, h2o, day) for h2o, day in sorted(days, key=lambda d: (d[1], d[0]))]

    def handle(self, unit: UnitKey) -> None:
        plans, self._plans = ([p for p in self._plans if (p.h2o, p.session_date) == (unit.h2o, unit.session_date)],
                              [p for p in self._plans if (p.h2o, p.session_date) != (unit.h2o, unit.session_date)])
        worker = stage.ArchiveStage(self.config, self.transport, self.policy, self.keepalive)
        worker.work_on_day(unit.h2o, unit.session_date, plans)

    def fail(self, unit: UnitKey, reason: str) -> None:
        stage.fail_day(unit.h2o, unit.session_date, reason)


@dataclass
class CleanupDays:
    """Handler of cleanup units: delete a day's archived source files that every rule lets go."""

    config: MapdConfig
    policy: Policy
    archive: ArchiveDays
    kind: str = "cleanup"
    _next_look: float = 0.0

    def ready(self) -> list[UnitKey]:
        if not self.config.cleanup.enabled or time.monotonic() < self._next_look:
            return []
        self._next_look = time.monotonic() + LOOK_SECONDS
        return [UnitKey(self.kind, h2o, day) for h2o, day in cleanup.days_due(self.config)]

    def handle(self, unit: UnitKey) -> None:
        decisions = cleanup.review(self.config, (unit.h2o, unit.session_date))
        cleanup.clean(self.config, self.archive.transport, decisions)

    def fail(self, unit: UnitKey, reason: str) -> None:
        log.error("cleanup of a day failed; its files are kept", h2o=unit.h2o, session_date=str(unit.session_date),
                  reason=reason)
