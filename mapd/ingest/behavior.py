"""Behavior session records -> the MAP experiment tables, in one transaction.

Exactly once, even with several hosts on one database: the session's
``(subject_id, session_date)`` and each file name are unique in the database,
so of two hosts ingesting the same file concurrently one commits and the
other's transaction fails as a duplicate, rolls back, and finds it ingested.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import datajoint as dj

from ..find.files import FileOnDisk
from ..formats.behavior import TASK, TASK_PROTOCOL, BehaviorFileName, PhotostimProtocol, SessionRecords
from ..schemas import experiment, ingest
from ..schemas.experiment import SessionKey
from . import uids



class SessionConflict(Exception):
    """The day's session exists and the new files cannot be added to it."""


class AlreadyIngested(Exception):
    """Another process committed some of these files first."""

    def __init__(self, names: set[str]) -> None:
        super().__init__(f"already ingested: {', '.join(sorted(names))}")
        self.names = names


@dataclass(frozen=True)
class IngestedSession:
    key: SessionKey
    trials: int  # trials inserted by this ingest
    rows: int  # rows inserted, all tables
    appended: bool  # files added to a session that already existed
    seconds: float


@dataclass(frozen=True)
class IngestedFile:
    """A behavior file as its ingest recorded it."""

    name: str
    rig: str
    subpath: str  # below its rig data path
    size: int | None
    mtime: float | None
    sha256: str | None

    def is_at(self, file: FileOnDisk) -> bool:
        """Whether ``file`` is this very file (not a copy of the same name elsewhere)."""
        return (self.rig, self.subpath) == (file.rig, file.subpath)


def ingested_files(names: list[str]) -> dict[str, IngestedFile]:
    """The ingest records of those of these behavior file names that are in the database."""
    if not names:
        return {}
    found = ingest.BehaviorIngest.BehaviorFile & [{"behavior_file": name} for name in set(names)]
    rows = found.proj("rig", "file_subpath", "file_size", "file_mtime", "file_sha256").to_dicts()
    return {row["behavior_file"]: IngestedFile(row["behavior_file"], row["rig"], row["file_subpath"],
                                               row["file_size"], row["file_mtime"], row["file_sha256"])
            for row in rows}


def insert_session(
    records: SessionRecords,
    *,
    subject_id: int,
    rig: str,
    username: str,
    files: dict[str, FileOnDisk],
) -> IngestedSession:
    """Insert one session's records (or add split-session files to it) in one transaction.

    ``files`` maps each file name in ``records`` to its stat. Raises
    AlreadyIngested (or ``dj.errors.DuplicateError``, in a race) when another
    process ingested a file or the day first, and SessionConflict when an
    existing session cannot take the new files.
    """
    started = time.perf_counter()
    first_uid = _allocate_trial_uids(len(records.trials))
    connection = experiment.Session.connection
    with connection.transaction:
        existing = (experiment.Session & {"subject_id": subject_id, "session_date": records.session_date}).to_dicts()
        if existing:
            key, trial_offset, time_offset = _append_point(existing[0], records)
        else:
            key = SessionKey(subject_id, _next_session_number(subject_id))
            experiment.Session.insert1(
                dict(
                    key.as_dict(),
                    session_date=records.session_date,
                    session_time=records.session_time,
                    username=username,
                    rig=rig,
                    bpod_trials=records.trial_count,
                )
            )
            ingest.BehaviorIngest.insert1(key.as_dict(), allow_direct_insert=True)
            trial_offset, time_offset = 0, 0.0
        rows = _photostim_rows(records, key)
        rows.update(_session_rows(records, key, first_uid, trial_offset, time_offset))
        rows[ingest.BehaviorIngest.BehaviorFile] = [
            dict(
                key.as_dict(),
                behavior_file=parsed.path.name,
                rig=rig,
                file_subpath=files[parsed.path.name].subpath,
                file_size=parsed.size,  # what was read, parsed and hashed
                file_mtime=parsed.mtime,
                file_sha256=parsed.sha256,
                trial_offset=trial_offset + offset,
            )
            for parsed, offset in zip(records.files, records.file_trial_offsets)
        ]
        for table, table_rows in rows.items():
            if table_rows:
                table.insert(table_rows, allow_direct_insert=True)
    return IngestedSession(
        key=key,
        trials=len(records.trials),
        rows=sum(len(table_rows) for table_rows in rows.values()) + (0 if existing else 2),
        appended=bool(existing),
        seconds=time.perf_counter() - started,
    )


def _append_point(session: dict, records: SessionRecords) -> tuple[SessionKey, int, float]:
    """Where the new files' trials go in an existing session (a split session's later part).

    Returns the session, the Bpod trials before the new files (their trials
    continue that count) and the new files' start from the session's start
    (s); the session's Bpod trial count is raised by the new files'. The
    session's row is locked first, so that a concurrent append of other
    files waits for this transaction and then sees its files and count.
    """
    key = SessionKey(session["subject_id"], session["session"])
    experiment.Session.update1(dict(key.as_dict(), bpod_trials=session["bpod_trials"]))  # the row lock
    before = (experiment.Session & key.as_dict()).fetch1("bpod_trials")
    ingested = (ingest.BehaviorIngest.BehaviorFile & key.as_dict()).to_arrays("behavior_file").tolist()
    if not ingested or before is None:
        raise SessionConflict(
            f"subject {key.subject_id} already has session {key.session} on {records.session_date} "
            "that mapd did not ingest (entered by hand?); not adding files to it"
        )
    already = set(ingested) & {records.path.name for records in records.files}
    if already:  # committed by another process since this one looked
        raise AlreadyIngested(already)
    starts = sorted(BehaviorFileName.parse(name).start for name in ingested)
    new_first = records.files[0].name.start
    if new_first <= starts[-1]:
        raise SessionConflict(
            f"session {key.session} of subject {key.subject_id} on {records.session_date} already has "
            f"{', '.join(sorted(ingested))}; {records.files[0].path.name} starts before the last of them, "
            "so its trials cannot be appended: delete the session and rescan to re-ingest the day"
        )
    experiment.Session.update1(dict(key.as_dict(), bpod_trials=int(before) + records.trial_count))
    return key, int(before), (new_first - starts[0]).total_seconds()


def _photostim_rows(records: SessionRecords, key: SessionKey) -> dict[type, list[dict]]:
    """The session's Photostim rows for the protocols its new trials use and it lacks."""
    have = set((experiment.Photostim & key.as_dict()).to_arrays("photo_stim").tolist())
    needed: list[PhotostimProtocol] = [protocol for protocol in records.photostim_protocols
                                       if protocol.photo_stim not in have]
    return {
        experiment.Photostim: [
            dict(key.as_dict(), photo_stim=protocol.photo_stim, photostim_device=protocol.device,
                 duration=protocol.duration)
            for protocol in needed
        ],
        experiment.Photostim.PhotostimLocation: [
            dict(key.as_dict(), photo_stim=protocol.photo_stim, skull_reference=site.skull_reference,
                 ap_location=site.ap_location, ml_location=site.ml_location, depth=site.depth, theta=site.theta,
                 phi=site.phi, brain_area=site.brain_area)
            for protocol in needed
            for site in protocol.sites
        ],
    }


def _session_rows(records: SessionRecords, key: SessionKey, first_uid: int, trial_offset: int, time_offset: float):
    session_key = key.as_dict()
    rows: dict[type, list[dict]] = {
        experiment.SessionTrial: [],
        experiment.BehaviorTrial: [],
        experiment.TrialNote: [],
        experiment.TrialEvent: [],
        experiment.ActionEvent: [],
        ingest.BehaviorIngest.CorrectedTrialEvents: [],
        experiment.PhotostimTrial: [],
        experiment.PhotostimEvent: [],
    }
    for position, trial in enumerate(records.trials):
        trial_key = dict(session_key, trial=trial_offset + trial.trial)
        source = trial.source
        rows[experiment.SessionTrial].append(
            dict(
                trial_key,
                trial_uid=first_uid + position,
                start_time=time_offset + trial.start_time,
                stop_time=time_offset + trial.stop_time,
            )
        )
        rows[experiment.BehaviorTrial].append(
            dict(
                trial_key,
                task=TASK,
                task_protocol=TASK_PROTOCOL,
                trial_instruction=source.instruction,
                early_lick=source.early_lick,
                outcome=source.outcome,
            )
        )
        rows[experiment.TrialNote] += [
            dict(trial_key, trial_note_type=note_type, trial_note=note) for note_type, note in source.notes.items()
        ]
        for event_id, event in enumerate(trial.events, start=1):
            rows[experiment.TrialEvent].append(
                dict(
                    trial_key,
                    trial_event_id=event_id,
                    trial_event_type=event.event_type,
                    trial_event_time=event.time,
                    duration=event.duration,
                )
            )
            if event.corrected:
                rows[ingest.BehaviorIngest.CorrectedTrialEvents].append(dict(trial_key, trial_event_id=event_id))
        rows[experiment.ActionEvent] += [
            dict(trial_key, action_event_id=action_id, action_event_type=action.action_event_type,
                 action_event_time=action.time)
            for action_id, action in enumerate(source.actions, start=1)
        ]
        if source.photostim is not None:
            rows[experiment.PhotostimTrial].append(trial_key)
            rows[experiment.PhotostimEvent].append(
                dict(trial_key, photostim_event_id=1, photo_stim=source.photostim.photo_stim,
                     photostim_event_time=source.photostim.time, power=source.photostim.power))
    return rows


def _next_session_number(subject_id: int) -> int:
    # Inside the transaction; a concurrent insert of the same number fails as a
    # duplicate and the caller retries.
    top = dj.U().aggr(experiment.Session & {"subject_id": subject_id}, n="max(session)").fetch1("n")
    return int(top or 0) + 1


def _allocate_trial_uids(count: int) -> int:
    return uids.allocate(ingest.TrialUidBlock, count, "trial uids")
