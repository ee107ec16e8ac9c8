"""``mapd run``'s export handler: after a session commits, its NWB file and / or report (config ``export:``).

Work is derived from the database, not queued: a session in
``ingest.BehaviorIngest`` needs a target when it has no ``ingest.SessionExport``
row for it, or when it now has more ingested probes or behavior files than
that export included (a probe ingested after its behavior session, a file
appended to the session). Each attempt records
its row (done with the path, or failed with the reason), so a crash loses
nothing and ``mapd status`` shows the failures. A failed export is tried
again when a new probe of the session arrives, or when ``mapd retry --all``
forgets the failures; an export's failure never touches the ingest.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import MapdConfig
from .export.batch import ExportOutcome, export_session
from .handlers import UnitKey
from .logs import get_logger
from .queue.files import HOST, now_ms
from .queue.policy import Policy
from .schemas import experiment, ingest, lab
from .schemas.experiment import SessionKey
from .transient import is_transient_database_error

log = get_logger("mapd.export")
KIND = "export"


@dataclass
class SessionExports:
    """Handler of exports: one unit is one session (h2o, day), for every configured target."""

    config: MapdConfig
    policy: Policy
    kind: str = KIND

    def ready(self) -> list[UnitKey]:
        keys = set()
        for target in self.config.export.targets:
            keys.update(_sessions_needing(target))
        return [UnitKey(KIND, h2o, day) for h2o, day in sorted(keys)]

    def handle(self, unit: UnitKey) -> None:
        key = _session_key(unit)
        if key is None:
            return  # deleted meanwhile
        for target, out in self.config.export.targets.items():
            contents = _Contents.of(key)
            if not _needs(key, target, contents):
                continue
            outcome = export_session(key, target, out, self.config.timezone, overwrite=True,
                                     passes=is_transient_database_error)
            _record(outcome, contents)

    def fail(self, unit: UnitKey, reason: str) -> None:
        key = _session_key(unit)
        if key is None:
            return
        contents = _Contents.of(key)
        for target in self.config.export.targets:
            _record(ExportOutcome(key, f"{unit.h2o} {unit.session_date}", target, "failed", None, reason), contents)


def requeue_failed_exports() -> int:
    """Forget the failed exports (``mapd retry --all``): a running daemon exports those sessions again. How many."""
    failed = ingest.SessionExport & {"state": "failed"}
    count = len(failed)
    failed.delete_quick()
    return count


@dataclass(frozen=True)
class _Contents:
    """What of a session an export includes: when the session has more, the export is outdated."""

    probes: int  # ingested probes (EphysIngest)
    behavior_files: int  # ingested behavior files (a session's later files are appended to it)

    @classmethod
    def of(cls, key: SessionKey) -> "_Contents":
        return cls(len(ingest.EphysIngest & key.as_dict()), len(ingest.BehaviorIngest.BehaviorFile & key.as_dict()))


def _sessions_needing(target: str) -> set[tuple[str, object]]:
    """(h2o, session_date) of the ingested sessions this target has not exported, or not with all they hold."""
    sessions = experiment.Session.proj("session_date") * lab.WaterRestriction.proj("water_restriction_number")
    exported = ingest.SessionExport & {"target": target}
    never = sessions & ingest.BehaviorIngest & (experiment.Session - exported).proj()
    # count(a column of the group), not count(*): the join keeps sessions without any, as one row of NULLs.
    contents = (experiment.Session.proj().aggr(ingest.EphysIngest, probes_now="count(insertion_number)")
                * experiment.Session.proj().aggr(ingest.BehaviorIngest.BehaviorFile, files_now="count(behavior_file)"))
    outdated = sessions & (contents * exported.proj(exported_probes="probes", exported_files="behavior_files")
                           & "probes_now > exported_probes OR files_now > exported_files").proj()
    found = set()
    for query in (never, outdated):
        h2os, days = query.to_arrays("water_restriction_number", "session_date")
        found.update(zip(h2os.tolist(), days.tolist()))
    return found


def _session_key(unit: UnitKey) -> SessionKey | None:
    rows = (experiment.Session * lab.WaterRestriction.proj("water_restriction_number")
            & {"water_restriction_number": unit.h2o, "session_date": unit.session_date}).keys()
    return SessionKey(rows[0]["subject_id"], rows[0]["session"]) if rows else None


def _needs(key: SessionKey, target: str, contents: _Contents) -> bool:
    rows = (ingest.SessionExport & key.as_dict() & {"target": target}).to_dicts()
    return not rows or rows[0]["probes"] < contents.probes or rows[0]["behavior_files"] < contents.behavior_files


def _record(outcome: ExportOutcome, contents: _Contents) -> None:
    """The attempt's row (replacing the last one)."""
    key = {**outcome.key.as_dict(), "target": outcome.target}
    path = str(outcome.path or "")
    state = "done" if outcome.state == "written" else "failed"
    with ingest.SessionExport.connection.transaction:  # replace the row (no REPLACE on PostgreSQL)
        (ingest.SessionExport & key).delete_quick()
        ingest.SessionExport.insert1({**key, "state": state, "reason": outcome.reason[:2000], "path": path,
                                      "probes": contents.probes, "behavior_files": contents.behavior_files,
                                      "host": HOST, "export_time": now_ms()})
    if state == "done":
        log.info("session exported", target=outcome.target, label=outcome.label, path=path, probes=contents.probes,
                 behavior_files=contents.behavior_files, duration=round(outcome.seconds, 3), **outcome.key.as_dict())
    else:
        log.error("export failed", target=outcome.target, label=outcome.label, error=outcome.reason,
                  **outcome.key.as_dict())
