"""Parsing in worker processes: imports only the pure parsers, never the database."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .formats.behavior import BehaviorFileRecords, BehaviorFormatError, parse_behavior_file


@dataclass(frozen=True)
class ParsedFile:
    path: Path
    records: BehaviorFileRecords | None = None
    error: str | None = None  # the problem, when the file cannot be ingested
    transient: bool = False  # the error may go away (share gone, file locked): try again later


def parse_behavior_files(paths: list[Path]) -> list[ParsedFile]:
    """Parse each file; a bad file gives an error result and never stops the others."""
    results = []
    for path in paths:
        try:
            results.append(ParsedFile(path, records=parse_behavior_file(path)))
        except BehaviorFormatError as error:
            results.append(ParsedFile(path, error=error.problem, transient=error.transient))
        except OSError as error:  # unreadable, vanished, share gone
            results.append(ParsedFile(path, error=f"cannot read: {error.strerror or error}", transient=True))
    return results
