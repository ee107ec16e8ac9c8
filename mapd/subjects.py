"""Entering subjects with their water-restriction number (h2o), one at a time or from a file."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path
from typing import Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from .queue.files import release_waiting
from .schemas import lab


class SubjectError(Exception):
    """A subject that cannot be entered; the message says which and why."""


class SubjectEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    subject_id: int = Field(gt=0, lt=2**31)
    h2o: str = Field(min_length=1, max_length=16, pattern=r"^[A-Za-z]{2}\w*$",
                     validation_alias=AliasChoices("h2o", "water_restriction_number"))
    sex: Literal["M", "F", "Unknown"] = "Unknown"
    dob: date | None = Field(default=None, validation_alias=AliasChoices("dob", "date_of_birth"))
    username: str | None = Field(default=None, max_length=24)  # person responsible


def add_subjects(entries: list[SubjectEntry], rows: list[int] | None = None) -> list[SubjectEntry]:
    """Enter subjects (all or none); returns those that were new. Re-entering the same subject is a no-op.

    ``rows``: each entry's row in the file it came from, named by errors.
    Files waiting for these subjects are queued again at once, so a running
    daemon ingests them within seconds.
    """
    added = []
    with lab.Subject.connection.transaction:
        for n, entry in enumerate(entries):
            try:
                if _check_existing(entry):
                    continue
            except SubjectError as error:
                raise SubjectError(f"row {rows[n]}: {error}" if rows else str(error)) from None
            if entry.username:
                lab.Person.insert1({"username": entry.username}, skip_duplicates=True)
            lab.Subject.insert1(
                {"subject_id": entry.subject_id, "sex": entry.sex, "date_of_birth": entry.dob,
                 "username": entry.username}
            )
            lab.WaterRestriction.insert1({"subject_id": entry.subject_id, "water_restriction_number": entry.h2o})
            added.append(entry)
        release_waiting([entry.h2o for entry in entries])
    return added


def _check_existing(entry: SubjectEntry) -> bool:
    """True if exactly this subject is already entered; SubjectError if it conflicts."""
    by_h2o = (lab.WaterRestriction & {"water_restriction_number": entry.h2o}).to_arrays("subject_id").tolist()
    if by_h2o and by_h2o[0] != entry.subject_id:
        raise SubjectError(f"h2o {entry.h2o} already belongs to subject {by_h2o[0]}")
    if not lab.Subject & {"subject_id": entry.subject_id}:
        return False
    h2o = (lab.WaterRestriction & {"subject_id": entry.subject_id}).to_arrays("water_restriction_number").tolist()
    if h2o and h2o[0] != entry.h2o:
        raise SubjectError(f"subject {entry.subject_id} already has h2o {h2o[0]}, not {entry.h2o}")
    if not h2o:
        lab.WaterRestriction.insert1({"subject_id": entry.subject_id, "water_restriction_number": entry.h2o})
    return True


def read_subject_file(path: Path) -> list[tuple[int, SubjectEntry]]:
    """(row, subject) from a CSV file (header row) or a YAML list of mappings; errors name the file and the row.

    Rows are counted as a reader finds them: a CSV's header is row 1, a YAML list's first item row 1.
    """
    try:
        text = path.read_text()
    except OSError as error:
        raise SubjectError(f"{path}: cannot read: {error.strerror or error}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            rows = yaml.safe_load(text) or []
        except yaml.YAMLError as error:
            raise SubjectError(f"{path}: not valid YAML: {error}") from None
        if not isinstance(rows, list):
            raise SubjectError(f"{path}: expected a list of subjects")
        first_row = 1
    elif path.suffix.lower() == ".csv":
        rows = [{k.strip(): (v.strip() or None) for k, v in row.items() if k} for row in csv.DictReader(text.splitlines())]
        first_row = 2  # after the header line
    else:
        raise SubjectError(f"{path}: expected a .csv or .yaml file")
    entries = []
    for number, row in enumerate(rows, start=first_row):
        try:
            entries.append((number, SubjectEntry.model_validate({k: v for k, v in row.items() if v is not None})))
        except (ValidationError, AttributeError) as error:
            raise SubjectError(f"{path}: row {number}: {_first_problem(error)}") from None
    _check_rows_agree(path, entries)
    return entries


def _check_rows_agree(path: Path, entries: list[tuple[int, SubjectEntry]]) -> None:
    """Two rows giving one h2o to two subjects, or two h2os to one subject, name both rows."""
    by_h2o: dict[str, tuple[int, SubjectEntry]] = {}
    by_subject: dict[int, tuple[int, SubjectEntry]] = {}
    for number, entry in entries:
        first, earlier = by_h2o.setdefault(entry.h2o, (number, entry))
        if earlier.subject_id != entry.subject_id:
            raise SubjectError(f"{path}: row {number}: h2o {entry.h2o} already belongs to subject "
                               f"{earlier.subject_id} (row {first})")
        first, earlier = by_subject.setdefault(entry.subject_id, (number, entry))
        if earlier.h2o != entry.h2o:
            raise SubjectError(f"{path}: row {number}: subject {entry.subject_id} already has h2o {earlier.h2o} "
                               f"(row {first}), not {entry.h2o}")


def _first_problem(error: Exception) -> str:
    if isinstance(error, ValidationError):
        problem = error.errors()[0]
        key = ".".join(str(part) for part in problem["loc"])
        message = "unknown column" if problem["type"] == "extra_forbidden" else problem["msg"]
        return f"{key}: {message}"
    return "not a mapping of column names to values"
