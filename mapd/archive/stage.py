"""The archive stage: an ingested session's (or probe's) raw files -> one batch -> the archive, verified.

A batch's states, kept in ``ingest.ArchiveBatch`` (its files in
``ingest.ArchiveFile``)::

    pending ──submit──> submitted ──poll: succeeded, verify──> archived
       │                    │ └─poll: stuck (paused, credentials)──> blocked ──> submitted
       └──── failed <───────┘  (the task failed, or the archive holds a different file)

Every step is recorded before the next begins, and the submission id before
the first submit, so a daemon killed between any two steps resumes where it
was: no file is lost, no second transfer starts, no second copy is made.
Work is derived from the database (sessions in ``BehaviorIngest``, probes in
``EphysIngest``, without a batch), as DataJoint's ``populate`` derives it, so
a crash between an ingest's commit and its batch loses nothing either.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

from .. import failpoints
from ..config import MapdConfig
from ..find.files import sha256_of
from ..logs import get_logger
from ..queue.files import now_ms
from ..queue.policy import Policy
from ..schemas import experiment, ingest, lab, publication
from .select import RawFile, behavior_batch_files, probe_batch_files
from .transport import ArchivedCopy, ArchiveItem, Batch, Transport, TransportError

log = get_logger("mapd.archive")
BEHAVIOR = "behavior"
OPEN_STATES = ("pending", "submitted", "blocked")


@dataclass(frozen=True)
class BatchPlan:
    """A batch to stage: a session's behavior part, or one of its probes."""

    h2o: str
    session_date: date
    part: str  # behavior | probe N
    subject_id: int
    session: int
    insertion_number: int | None = None
    data_root: Path | None = None  # the probe's ephys data path
    probe_folder: str = ""  # relative to data_root

    @property
    def batch_id(self) -> str:
        return batch_id(self.h2o, self.session_date, self.part)

    @property
    def label(self) -> str:
        return f"mapd {self.h2o} {self.session_date} {self.part}"


def batch_id(h2o: str, session_date: date, part: str) -> str:
    return hashlib.sha256(f"{h2o}\0{session_date}\0{part}".encode()).hexdigest()[:16]


def unstaged() -> list[BatchPlan]:
    """Ingested sessions and probes that have no batch yet (behavior parts first)."""
    staged = set(ingest.ArchiveBatch.to_arrays("batch_id"))
    sessions = (experiment.Session * lab.WaterRestriction & ingest.BehaviorIngest).to_dicts(
        order_by=("session_date", "subject_id"))
    plans = [BatchPlan(row["water_restriction_number"], row["session_date"], BEHAVIOR, row["subject_id"],
                       row["session"]) for row in sessions]
    probes = (ingest.EphysIngest.proj("data_root", "probe_folder") * experiment.Session.proj("session_date")
              * lab.WaterRestriction.proj("water_restriction_number")).to_dicts(order_by=("session_date", "subject_id"))
    plans += [BatchPlan(row["water_restriction_number"], row["session_date"], f"probe {row['insertion_number']}",
                        row["subject_id"], row["session"], row["insertion_number"], Path(row["data_root"]),
                        row["probe_folder"]) for row in probes]
    return [plan for plan in plans if plan.batch_id not in staged]


def due_days() -> list[tuple[str, date]]:
    """Days with a batch to submit or poll now."""
    due = ingest.ArchiveBatch & [{"state": state} for state in OPEN_STATES] & f"next_attempt <= '{now_ms()}'"
    return sorted({(str(h2o), day) for h2o, day in zip(*due.to_arrays("h2o", "session_date"))})


@dataclass
class ArchiveStage:
    """Moves one day's batches along: stage what is new, submit, poll, verify, record."""

    config: MapdConfig
    transport: Transport
    policy: Policy
    keepalive: Callable[[], None] = lambda: None  # called while reading big files (the daemon's heartbeat)

    def work_on_day(self, h2o: str, session_date: date, plans: list[BatchPlan]) -> None:
        for plan in plans:
            if plan.h2o == h2o and plan.session_date == session_date:
                self.stage(plan)
        open_batches = ingest.ArchiveBatch & {"h2o": h2o, "session_date": session_date} & [
            {"state": state} for state in OPEN_STATES] & f"next_attempt <= '{now_ms()}'"
        for row in open_batches.to_dicts(order_by="part"):
            self.advance(row)

    # ---- staging -------------------------------------------------------------

    def stage(self, plan: BatchPlan) -> None:
        """Record the batch and its files (sizes, mtimes, checksums read now), in one transaction."""
        found = (behavior_batch_files(self.config, plan.h2o, plan.session_date) if plan.part == BEHAVIOR else
                 probe_batch_files(self.config, plan.h2o, plan.session_date, plan.data_root, plan.probe_folder))
        files = []
        for raw in _one_per_destination(found, plan):
            try:
                sha256, stat = sha256_of(raw.file.path, self.keepalive)
            except OSError as error:
                log.warning("raw file cannot be read; not archived", path=str(raw.file.path), error=str(error))
                continue
            files.append((replace(raw, file=raw.file.with_stat(stat)), sha256))
        now = now_ms()
        batch = dict(batch_id=plan.batch_id, h2o=plan.h2o, session_date=plan.session_date, part=plan.part,
                     subject_id=plan.subject_id, session=plan.session, insertion_number=plan.insertion_number,
                     transport=self.transport.name, state="pending" if files else "archived",
                     reason="" if files else "no raw file matched the archive.files patterns",
                     file_count=len(files), total_bytes=sum(raw.file.size for raw, _ in files), staged_time=now,
                     next_attempt=now, archived_time=None if files else now)
        rows = [dict(batch_id=plan.batch_id, file_id=_file_id(raw), kind=raw.kind,
                     data_root=str(raw.file.data_root), rig=raw.file.rig, subpath=raw.file.subpath,
                     destination=raw.destination(plan.h2o, plan.session_date), file_size=raw.file.size,
                     file_mtime=raw.file.mtime, sha256=sha256, state="pending")
                for raw, sha256 in files]
        with ingest.ArchiveBatch.connection.transaction:
            if ingest.ArchiveBatch & {"batch_id": plan.batch_id}:
                return  # another mapd process staged it first
            ingest.ArchiveBatch.insert1(batch)
            ingest.ArchiveFile.insert(rows)
        log.info("archive batch staged", batch=plan.label, files=len(rows), bytes=batch["total_bytes"])
        failpoints.reached("archive:staged")

    # ---- submit, poll, verify --------------------------------------------------

    def advance(self, row: dict) -> None:
        """One step for a batch, or as many as the transport finishes at once (local: all)."""
        try:
            if row["state"] == "pending":
                row = self._submit(row)
            if row["state"] in ("submitted", "blocked"):
                self._poll(row)
        except TransportError as error:
            self._transport_error(row, error)

    def _submit(self, row: dict) -> dict:
        if not row["submission_id"]:
            row = {**row, "submission_id": self.transport.new_submission_id()}
            _update(row, submission_id=row["submission_id"])  # before the submit: a retry reuses it
            failpoints.reached("archive:submission-id-stored")
        task_id = self.transport.submit(batch_of(row))
        failpoints.reached("archive:submitted-unrecorded")
        _update(row, state="submitted", task_id=task_id, reason="", attempts=0)
        _set_files(row["batch_id"], "submitted")
        log.info("archive transfer submitted", batch=_label(row), task_id=task_id, files=row["file_count"])
        failpoints.reached("archive:submitted")
        return {**row, "state": "submitted", "task_id": task_id}

    def _poll(self, row: dict) -> None:
        status = self.transport.poll(row["task_id"])
        if status.state == "active":
            state = "blocked" if status.problem else "submitted"
            if status.problem and status.problem != row["reason"]:
                log.error("archive transfer is stuck", batch=_label(row), task_id=row["task_id"],
                          problem=status.problem)
            _update(row, state=state, reason=status.problem,
                    next_attempt=now_ms() + timedelta(seconds=self.config.archive.poll_seconds))
            return
        if status.state == "failed":
            self._fail(row, f"transfer {row['task_id']} failed: {status.problem}")
            return
        copies = self.transport.verify(row["task_id"], batch_of(row))
        failpoints.reached("archive:verified-unrecorded")
        self._record_archived(row, copies)

    def _record_archived(self, row: dict, copies: list[ArchivedCopy]) -> None:
        files = {f["destination"]: f for f in (ingest.ArchiveFile & {"batch_id": row["batch_id"]}).to_dicts()}
        for copy in copies:
            staged = files[copy.destination]
            if (copy.size, copy.sha256) != (staged["file_size"], staged["sha256"]):
                raise TransportError(f"{copy.destination}: the archived copy ({copy.size} bytes, sha256 "
                                     f"{copy.sha256[:12]}...) is not the file staged", retry=False)
        if len(copies) != len(files):
            raise TransportError(f"{len(copies)} of {len(files)} files verified in the archive", retry=False)
        now = now_ms()
        with ingest.ArchiveBatch.connection.transaction:
            for staged in files.values():
                ingest.ArchiveFile.update1(dict(batch_id=row["batch_id"], file_id=staged["file_id"],
                                                state="archived", verified_time=now))
            _update(row, state="archived", reason="", archived_time=now)
            _publish(row, list(files.values()), self.transport)
        log.info("archive batch verified", batch=_label(row), files=len(files),
                 bytes=sum(f["file_size"] for f in files.values()))

    def _transport_error(self, row: dict, error: TransportError) -> None:
        attempts = row["attempts"] + 1
        if not error.retry or self.policy.gives_up(attempts):
            self._fail(row, str(error))
            return
        delay = self.policy.backoff_seconds(attempts)
        log.warning("archive transfer will be retried", batch=_label(row), error=str(error), delay=round(delay, 1))
        _update(row, attempts=attempts, reason=str(error)[:2000], next_attempt=now_ms() + timedelta(seconds=delay))

    def _fail(self, row: dict, reason: str) -> None:
        log.error("archive batch failed", batch=_label(row), reason=reason)
        _update(row, state="failed", reason=reason[:2000])


def batch_of(row: dict) -> Batch:
    """A batch as the transport sees it, from its rows."""
    files = (ingest.ArchiveFile & {"batch_id": row["batch_id"]}).to_dicts(order_by="destination")
    items = tuple(ArchiveItem(Path(f["data_root"]) / f["subpath"], f["destination"], f["file_size"], f["sha256"])
                  for f in files)
    return Batch(row["batch_id"], _label(row), items, row["submission_id"])


def requeue_failed_batches() -> int:
    """``mapd retry``: failed batches are submitted again (with a fresh submission id, as a new transfer)."""
    failed = (ingest.ArchiveBatch & {"state": "failed"}).keys()
    for key in failed:
        ingest.ArchiveBatch.update1(dict(key, state="pending", submission_id="", task_id="", attempts=0,
                                         reason="", next_attempt=now_ms()))
        _set_files(key["batch_id"], "pending")
    return len(failed)


# ---- records ---------------------------------------------------------------------

def _update(row: dict, **values) -> None:
    ingest.ArchiveBatch.update1(dict(batch_id=row["batch_id"], **values))


def _set_files(batch: str, state: str) -> None:
    for key in (ingest.ArchiveFile & {"batch_id": batch}).keys():
        ingest.ArchiveFile.update1(dict(key, state=state))


def _label(row: dict) -> str:
    return f"mapd {row['h2o']} {row['session_date']} {row['part']}"


def _file_id(raw: RawFile) -> str:
    return hashlib.sha256(f"{raw.file.data_root}\0{raw.file.subpath}".encode()).hexdigest()[:16]


def _one_per_destination(found: list[RawFile], plan: BatchPlan) -> list[RawFile]:
    """The first (rigs in configured order) of files that would land at one destination."""
    chosen: dict[str, RawFile] = {}
    for raw in found:
        destination = raw.destination(plan.h2o, plan.session_date)
        if destination in chosen:
            log.warning("two raw files for one archive destination; the first rig's is archived",
                        destination=destination, archived=str(chosen[destination].file.path), left=str(raw.file.path))
            continue
        chosen[destination] = raw
    return list(chosen.values())


def storage_location(transport: Transport) -> dict:
    """The publication.GlobusStorageLocation row of this transport's archive."""
    digest = hashlib.sha256(f"{transport.endpoint}\0{transport.root}".encode()).hexdigest()[:8]
    return dict(globus_alias=f"{transport.name}-{digest}", globus_endpoint=transport.endpoint,
                globus_path=transport.root)


def _publish(row: dict, files: list[dict], transport: Transport) -> None:
    """publication rows for an archived batch, so a query says where each raw file is."""
    location = storage_location(transport)
    publication.GlobusStorageLocation.insert1(location, skip_duplicates=True)
    session = dict(subject_id=row["subject_id"], session=row["session"])
    publication.ArchivedSession.insert1(dict(session, globus_alias=location["globus_alias"]), skip_duplicates=True)
    dataset = dict(globus_alias=location["globus_alias"],
                   dataset_name=f"{row['h2o']}/{row['session_date']}/{row['part'].replace(' ', '')}")
    publication.DataSet.insert1(dict(dataset, dataset_type=_dataset_type(row, files)), skip_duplicates=True)
    publication.DataSet.PhysicalFile.insert(
        [dict(dataset, file_subpath=f["destination"], file_type=file_type(f["destination"]),
              file_size=f["file_size"], file_sha256=f["sha256"]) for f in files], skip_duplicates=True)
    if row["part"] == BEHAVIOR:
        publication.ArchivedSession.BehaviorData.insert1(dict(session, **dataset), skip_duplicates=True)
    else:
        publication.ArchivedRawEphys.insert1(dict(session, insertion_number=row["insertion_number"], **dataset),
                                             skip_duplicates=True)


TRIAL_FILE = re.compile(r"_t(\d+)\.imec")


def _dataset_type(row: dict, files: list[dict]) -> str:
    if row["part"] == BEHAVIOR:
        return "behavior-raw"
    # One file per trial (g0_t1, g0_t2, ...) is how the original rigs recorded: trialized.
    trials = {match.group(1) for f in files if (match := TRIAL_FILE.search(f["destination"]))}
    return "ephys-raw-trialized" if len(trials) > 1 else "ephys-raw-continuous"


def file_type(name: str) -> str:
    for file_type_name, pattern in publication.FileType.contents:
        if fnmatch.fnmatch(name.rsplit("/", 1)[-1], pattern):
            return file_type_name
    return "other"


def fail_day(h2o: str, session_date: date, reason: str) -> None:
    """An unexpected error while working on a day: its open batches fail with the reason (``mapd retry``)."""
    for row in (ingest.ArchiveBatch & {"h2o": h2o, "session_date": session_date} & [
            {"state": state} for state in OPEN_STATES]).to_dicts():
        _update(row, state="failed", reason=reason[:2000])
