"""Finding data files under the configured data paths (file system only, no database)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator

from .config import MapdConfig
from .formats.behavior import BehaviorFileName, BehaviorFormatError, is_behavior_path
from .formats.ephys_paths import ephys_session
from .ingest.behavior import FileOnDisk


class DiscoveryError(Exception):
    """A requested path or rig is not part of the configuration."""


@dataclass(frozen=True)
class ScanScope:
    """What a rescan looks at: all rig paths, or some rigs, dates or paths."""

    rigs: frozenset[str] = frozenset()
    since: date | None = None
    paths: tuple[Path, ...] = ()


def behavior_files(config: MapdConfig, scope: ScanScope = ScanScope()) -> list[FileOnDisk]:
    """Every ``{h2o}/*/Session Data/*.mat`` below the rig data paths, within ``scope``."""
    unknown = scope.rigs - set(config.rigs)
    if unknown:
        raise DiscoveryError(f"no rig named {', '.join(sorted(unknown))} in rig_data_paths ({', '.join(config.rigs)})")
    roots = [entry for entry in config.rig_data_paths if not scope.rigs or entry.rig in scope.rigs]
    requested = [path.resolve() for path in scope.paths]
    for path in requested:
        if not any(_is_within(path, entry.path.resolve()) for entry in config.rig_data_paths):
            raise DiscoveryError(f"{path} is not below any rig_data_paths entry")
        if not path.exists():
            raise DiscoveryError(f"{path} does not exist")

    found: dict[Path, FileOnDisk] = {}
    for entry in roots:
        root = entry.path.resolve()
        starts = [p for p in requested if _is_within(p, root)] if requested else [root]
        for start in starts:
            for file in data_files("behavior", root, entry.rig, start):
                if _in_dates(file.path.name, scope.since):
                    found.setdefault(file.path, file)
    return sorted(found.values(), key=lambda file: file.path)


def data_files(kind: str, root: Path, rig: str | None, start: Path) -> list[FileOnDisk]:
    """The behavior or processed-ephys files at or below ``start`` (a file or a directory) under ``root``."""
    files = []
    for path in _walk_files(start):
        try:
            subpath = PurePosixPath(path.relative_to(root).as_posix())
        except ValueError:
            continue  # not below this root
        if kind == "behavior" and not is_behavior_path(subpath):
            continue
        if kind == "ephys" and ephys_session(subpath) is None:
            continue
        try:
            stat = path.stat()
        except OSError:
            continue  # vanished between listing and stat
        files.append(FileOnDisk(path=path, data_root=root, rig=rig, size=stat.st_size, mtime=stat.st_mtime))
    return files


def _walk_files(start: Path) -> Iterator[Path]:
    if start.is_file():
        yield start
        return
    for directory, _, names in os.walk(start):
        for name in names:
            yield Path(directory, name)


def _in_dates(name: str, since: date | None) -> bool:
    if since is None:
        return True
    try:
        return BehaviorFileName.parse(name).session_date >= since
    except BehaviorFormatError:
        return True  # undated names are reported as errors, not hidden by a date filter


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def group_by_session(files: Iterable[FileOnDisk]) -> tuple[dict[tuple[str, date], list[FileOnDisk]], list[tuple[FileOnDisk, str]]]:
    """Files by (h2o, session date), and the files whose names do not parse with the reason."""
    sessions: dict[tuple[str, date], list[FileOnDisk]] = {}
    unparsable: list[tuple[FileOnDisk, str]] = []
    for file in files:
        try:
            name = BehaviorFileName.parse(file.path.name)
        except BehaviorFormatError as error:
            unparsable.append((file, error.problem))
            continue
        sessions.setdefault((name.h2o, name.session_date), []).append(file)
    return sessions, unparsable
