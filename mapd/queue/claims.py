"""Which mapd process works on what: daemon heartbeats and atomic session claims.

Exactly-once does not depend on claims (the database's unique keys ensure
it); claims keep two hosts from parsing the same files at the same time, and
let a restarted daemon take over the work of one that was killed.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import date, timedelta

import datajoint as dj

from ..database import pid_alive
from ..liveness import STALE_HEARTBEATS
from ..schemas import ingest
from .files import HOST, now_ms


@dataclass(frozen=True)
class DaemonIdentity:
    daemon_id: str
    host: str
    pid: int

    @classmethod
    def new(cls) -> "DaemonIdentity":
        return cls(uuid.uuid4().hex, HOST, os.getpid())


def register_daemon(me: DaemonIdentity) -> None:
    now = now_ms()
    ingest.Daemon.insert1(dict(daemon_id=me.daemon_id, host=me.host, pid=me.pid, started_time=now,
                               heartbeat_time=now, activity="starting"))


def heartbeat(me: DaemonIdentity, activity: str) -> None:
    if ingest.Daemon & {"daemon_id": me.daemon_id}:
        ingest.Daemon.update1(dict(daemon_id=me.daemon_id, heartbeat_time=now_ms(), activity=activity[:255]))
    else:  # removed as dead while the database was unreachable: come back
        register_daemon(me)


def unregister_daemon(me: DaemonIdentity) -> None:
    (ingest.SessionClaim & {"daemon_id": me.daemon_id}).delete_quick()
    (ingest.Daemon & {"daemon_id": me.daemon_id}).delete_quick()


def _stale_before(heartbeat_seconds: float):
    """Heartbeats older than this are of dead daemons."""
    return now_ms() - timedelta(seconds=STALE_HEARTBEATS * heartbeat_seconds)


def live_daemons(heartbeat_seconds: float) -> list[dict]:
    cutoff = _stale_before(heartbeat_seconds)
    return [row for row in ingest.Daemon.to_dicts(order_by="started_time") if row["heartbeat_time"] >= cutoff]


def claim(me: DaemonIdentity, kind: str, h2o: str, session_date: date, heartbeat_seconds: float) -> bool:
    """Take the day's files of this subject for this daemon; False if another live process has them."""
    key = dict(kind=kind, h2o=h2o, session_date=session_date)
    row = dict(key, daemon_id=me.daemon_id, host=me.host, pid=me.pid, claimed_time=now_ms())
    try:
        ingest.SessionClaim.insert1(row)
        return True
    except dj.errors.DuplicateError:
        pass
    holder = (ingest.SessionClaim & key).to_dicts()
    if holder and holder[0]["daemon_id"] == me.daemon_id:
        return True  # ours, left behind when the database went away during a release
    if holder and not _is_stale(holder[0], heartbeat_seconds):
        return False
    # The holder died: take its claim over, atomically (a concurrent taker's insert fails).
    try:
        with ingest.SessionClaim.connection.transaction:
            (ingest.SessionClaim & key).delete_quick()
            ingest.SessionClaim.insert1(row)
    except dj.errors.DuplicateError:
        return False
    return True


def release(me: DaemonIdentity, kind: str, h2o: str, session_date: date) -> None:
    (ingest.SessionClaim & dict(kind=kind, h2o=h2o, session_date=session_date, daemon_id=me.daemon_id)).delete_quick()


def _is_stale(claim_row: dict, heartbeat_seconds: float) -> bool:
    if claim_row["host"] == HOST and not pid_alive(claim_row["pid"]):
        return True  # on this host a dead process is known at once
    owner = (ingest.Daemon & {"daemon_id": claim_row["daemon_id"]}).to_dicts()
    if not owner:
        return True
    return owner[0]["heartbeat_time"] < _stale_before(heartbeat_seconds)


