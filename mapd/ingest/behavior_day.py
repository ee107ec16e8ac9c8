"""The behavior files of one subject and day -> their outcomes: the ingest step that
``mapd rescan`` and ``mapd run`` share.

:func:`triage` decides what needs no parsing (already ingested, a copy of an
ingested file, waiting for its subject, too small); :func:`ingest_parsed`
turns parsed files into one session transaction and an outcome per file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import datajoint as dj

from ..config import MapdConfig
from ..database import first_line
from ..find.files import FileOnDisk, sha256_of
from ..formats.behavior import merge_session
from ..logs import get_logger
from ..parsing import ParsedFile
from ..queue.files import FileOutcome, FileState
from ..schemas import ingest, lab
from ..transient import is_transient_database_error
from .behavior import AlreadyIngested, IngestedFile, IngestedSession, SessionConflict, ingested_files, insert_session

log = get_logger("mapd.ingest")

# Summary categories, in the order they are printed.
CATEGORIES = ("ingested", "already ingested", "waiting for subject", "skipped", "ignored", "changed", "failed")

Outcomes = list[tuple[FileOutcome, str]]  # each file's outcome and its summary category


@dataclass(frozen=True)
class SessionUnit:
    """The files of one subject and day, to become one session."""

    h2o: str
    session_date: date
    subject_id: int
    files: tuple[FileOnDisk, ...]


def subjects_by_h2o() -> dict[str, int]:
    h2os, subject_ids = lab.WaterRestriction.to_arrays("water_restriction_number", "subject_id")
    return {str(h2o): int(subject_id) for h2o, subject_id in zip(h2os, subject_ids)}


def waiting_reason(h2o: str) -> str:
    return f"no subject with water_restriction_number {h2o}; enter it with `mapd subject add`"


def triage(config: MapdConfig, h2o: str, session_date: date, files: list[FileOnDisk],
           ingested: dict[str, IngestedFile], subjects: dict[str, int]) -> tuple[Outcomes, SessionUnit | None]:
    """Outcomes of the files that need no parsing, and the unit of those that do.

    ``ingested``: the ingest records of the day's file names (:func:`ingested_files`).
    """
    outcomes: Outcomes = []
    todo = []
    minimum = config.ingest.min_behavior_file_bytes
    for file in files:
        record = ingested.get(file.path.name)
        if record is not None:
            outcomes.append(_compare_with_ingested(file, record))
        elif h2o not in subjects:
            outcomes.append((FileOutcome(file, FileState.WAITING, waiting_reason(h2o)), "waiting for subject"))
        elif file.size < minimum:
            reason = f"{file.size} bytes, under min_behavior_file_bytes ({minimum}): an aborted session"
            outcomes.append((FileOutcome(file, FileState.SKIPPED, reason), "skipped"))
        else:
            todo.append(file)
    unit = SessionUnit(h2o, session_date, subjects[h2o], tuple(todo)) if todo else None
    return outcomes, unit


def _compare_with_ingested(file: FileOnDisk, record: IngestedFile) -> tuple[FileOutcome, str]:
    """A file whose name was ingested: that very file (unchanged, touched or changed), or a copy.

    Content decides, not the stat: a touch or a copy with a new mtime changes
    no byte. The checksum is read only when the stat alone cannot tell.
    """
    if record.is_at(file) and (record.size, record.mtime) == file.version:
        return FileOutcome(file, FileState.INGESTED, sha256=record.sha256), "already ingested"
    try:
        sha256, stat = sha256_of(file.path)
    except OSError as error:
        return FileOutcome(file, FileState.FAILED, f"cannot read: {error.strerror or error}"), "failed"
    file = file.with_stat(stat)
    same = record.sha256 is not None and sha256 == record.sha256
    if record.is_at(file):
        if same:
            _update_ingested_stat(record, file)
            return FileOutcome(file, FileState.INGESTED, sha256=sha256), "already ingested"
        log.warning("file changed after ingest; not ingested again", file=str(file.path), rig=file.rig,
                    size=file.size)
        # Shown under "changed after ingest" (status) or after "changed:" (rescan): not said again here.
        reason = f"content differs from the ingested file (now {file.size} bytes, sha256 {sha256[:12]}); " \
                 "not ingested again"
        return FileOutcome(file, FileState.CHANGED, reason, sha256=sha256), "changed"
    if same:
        return FileOutcome(file, FileState.SKIPPED, f"same file as {record.rig}: {record.subpath}",
                           sha256=sha256), "skipped"
    reason = (f"{record.rig}: {record.subpath} of the same name is ingested and this file differs from it; "
              "not ingested (rename it if it is another session)")
    return FileOutcome(file, FileState.FAILED, reason, sha256=sha256), "failed"


def _update_ingested_stat(record: IngestedFile, file: FileOnDisk) -> None:
    """A touched file: same bytes, new mtime; remember the new stat so it is not read again."""
    keys = (ingest.BehaviorIngest.BehaviorFile & {"behavior_file": record.name}).keys()
    for key in keys:
        ingest.BehaviorIngest.BehaviorFile.update1(dict(key, file_size=file.size, file_mtime=file.mtime))


def ingest_parsed(config: MapdConfig, unit: SessionUnit,
                  parsed: list[ParsedFile]) -> tuple[Outcomes, IngestedSession | None]:
    """Outcomes of ingesting one unit's parsed files (one transaction for the session), and the session."""
    by_path = {file.path: file for file in unit.files}  # copies under two rigs have different paths
    outcomes: Outcomes = []
    good: dict[str, tuple[FileOnDisk, ParsedFile]] = {}
    for result in parsed:
        file = by_path[result.path]
        if result.error is not None:
            outcomes.append((FileOutcome(file, FileState.FAILED, result.error), "failed"))
        elif not result.records.trials:
            skipped = result.records.skipped
            reasons = "; ".join(f"{count} {reason}" for reason, count in sorted(skipped.items())) or "no trials"
            outcomes.append((FileOutcome(file, FileState.SKIPPED, f"no ingestible trial ({reasons})",
                                         {"skipped_trials": skipped}, sha256=result.records.sha256), "skipped"))
        elif file.path.name in good:
            outcomes.append(_same_name_twice(good[file.path.name], file, result))
        else:
            good[file.path.name] = (file, result)
    session = None
    if good:
        inserted, session = _insert_files(config, unit, list(good.values()))
        outcomes += inserted
    return outcomes, session


def _same_name_twice(first: tuple[FileOnDisk, ParsedFile], file: FileOnDisk, result: ParsedFile) -> tuple[FileOutcome, str]:
    """A second file of one name in the day (the same relative path under two rigs): a copy or a conflict."""
    kept, kept_result = first
    where = f"{kept.rig}: {kept.subpath}"
    if result.records.sha256 == kept_result.records.sha256:
        return FileOutcome(file, FileState.SKIPPED, f"same file as {where}", sha256=result.records.sha256), "skipped"
    reason = f"{where} has the same name and different content; not ingested (rename it if it is another session)"
    return FileOutcome(file, FileState.FAILED, reason, sha256=result.records.sha256), "failed"


def _insert_files(config: MapdConfig, unit: SessionUnit, good: list[tuple[FileOnDisk, ParsedFile]], *,
                  retry: bool = True) -> tuple[Outcomes, IngestedSession | None]:
    files = {file.path.name: file for file, _ in good}
    records = merge_session([result.records for _, result in good])
    rig = files[records.files[0].path.name].rig
    try:
        session = insert_session(records, subject_id=unit.subject_id, rig=rig, username=config.session_user,
                                 files=files)
    except (AlreadyIngested, dj.errors.DuplicateError):
        # Another mapd process committed some of these files (or this day) first.
        already = ingested_files(list(files))
        outcomes = [(FileOutcome(files[name], FileState.INGESTED, "ingested by another process"), "already ingested")
                    for name in sorted(already)]
        remaining = [(file, result) for file, result in good if file.path.name not in already]
        if remaining and retry:
            more, session = _insert_files(config, unit, remaining, retry=False)
            return outcomes + more, session
        return outcomes + [(FileOutcome(file, FileState.FAILED, "another process was ingesting the same session; "
                                                                "run rescan again"), "failed")
                           for file, _ in remaining], None
    except SessionConflict as error:
        return [(FileOutcome(file, FileState.FAILED, str(error)), "failed") for file, _ in good], None
    except Exception as error:
        if is_transient_database_error(error):
            raise  # not the files' fault: the caller retries them later
        # The database refused the session (e.g. a value out of range): the
        # transaction was rolled back; record why and go on with other files.
        log.exception("session not ingested", h2o=unit.h2o, session_date=str(unit.session_date))
        reason = f"ingest failed: {type(error).__name__}: {first_line(error)}"
        return [(FileOutcome(file, FileState.FAILED, reason), "failed") for file, _ in good], None
    log.info("session ingested", h2o=unit.h2o, session_date=str(unit.session_date), rig=rig, files=sorted(files),
             trials=session.trials, rows=session.rows, duration=round(session.seconds, 3), appended=session.appended,
             **session.key.as_dict())
    for parsed in records.files:  # e.g. a StimTrials code that is no photostim protocol
        for reason, count in sorted(parsed.warnings.items()):
            log.warning("trials ingested with a warning", file=str(files[parsed.path.name].path), h2o=unit.h2o,
                        session_date=str(unit.session_date), trials=count, reason=reason, **session.key.as_dict())
    detail = {"session": session.key.as_dict()}
    return [(FileOutcome(file, FileState.INGESTED, "", dict(detail, trials=len(result.records.trials),
                                                            skipped_trials=result.records.skipped,
                                                            warnings=result.records.warnings),
                         sha256=result.records.sha256), "ingested")
            for file, result in good], session

