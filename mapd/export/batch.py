"""Export sessions one at a time to a target (nwb | reports), each session's failure its own.

Used by ``mapd export nwb``, ``mapd report`` and the daemon's export handler.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..schemas.experiment import SessionKey
from .session import SessionData, read_session

__all__ = ["TARGETS", "ExportOutcome", "export_session"]

TARGETS = ("nwb", "reports")


@dataclass(frozen=True)
class ExportOutcome:
    key: SessionKey
    label: str  # h2o and date, e.g. "dl25 2018-02-25"
    target: str  # nwb | reports
    state: str  # written | exists | failed
    path: Path | None  # the NWB file or the report's index.html
    reason: str = ""
    seconds: float = 0.0


def export_session(key: SessionKey, target: str, out: Path, timezone: str | None = None, overwrite: bool = False,
                   passes: Callable[[BaseException], bool] = lambda error: False) -> ExportOutcome:
    """Write one session's NWB file or report below ``out``. An error is the outcome, named by session,
    unless ``passes(error)`` (the daemon: the database is down; it waits that out and tries again)."""
    from .nwb import NwbExists, session_timezone, write_nwb
    from .report import write_report

    started = time.perf_counter()
    label = f"subject {key.subject_id} session {key.session}"
    try:
        data = read_session(key)
        label = session_label(data)
        if target == "nwb":
            path = write_nwb(data, out, session_timezone(timezone), overwrite=overwrite)
        else:
            path = write_report(data, out)
    except NwbExists as exists:
        return ExportOutcome(key, label, target, "exists", None, str(exists), time.perf_counter() - started)
    except Exception as error:  # noqa: BLE001 (bad data of one session must not stop the others)
        if passes(error):
            raise
        reason = f"{type(error).__name__}: {error}"
        return ExportOutcome(key, label, target, "failed", None, reason[:2000], time.perf_counter() - started)
    return ExportOutcome(key, label, target, "written", path, "", time.perf_counter() - started)


def session_label(data: SessionData) -> str:
    return f"{data.subject.h2o} {data.session_date}"
