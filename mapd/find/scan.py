"""Finding data files under the configured data paths, and what a scan could not use (file system only)."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path, PurePosixPath
from typing import Iterable

from ..config import MapdConfig
from ..formats.behavior import FILE_NAME_PATTERN, BehaviorFileName, BehaviorFormatError, is_behavior_path
from ..formats.ephys_paths import ephys_session
from ..formats.probe_folders import ProbeFolderKey, probe_folder_key
from .files import FileOnDisk, ScanProblem, special_file_kind

# lab.WaterRestriction.water_restriction_number is varchar(16): a longer h2o
# can never match a subject, and would not fit the queue's claim key either.
H2O_MAX_LENGTH = 16


class DiscoveryError(Exception):
    """A requested path or rig is not part of the configuration."""


@dataclass(frozen=True)
class ScanScope:
    """What a rescan looks at: all rig paths, or some rigs, dates or paths."""

    rigs: frozenset[str] = frozenset()
    since: date | None = None
    paths: tuple[Path, ...] = ()


@dataclass
class Scan:
    """What one walk found: data files, and entries it could not use."""

    files: list[FileOnDisk] = field(default_factory=list)
    problems: list[ScanProblem] = field(default_factory=list)

    def extend(self, other: "Scan") -> None:
        self.files += other.files
        self.problems += other.problems


def behavior_files(config: MapdConfig, scope: ScanScope = ScanScope()) -> Scan:
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

    found: dict[tuple[Path, Path], FileOnDisk] = {}
    result = Scan()
    for entry in roots:
        # Files are known by the data path as configured (as the daemon knows them), even where it is a link.
        root, real = entry.path, entry.path.resolve()
        starts = [root / p.relative_to(real) for p in requested if _is_within(p, real)] if requested else [root]
        for start in starts:
            scan = data_files("behavior", root, entry.rig, start)
            result.problems += scan.problems
            for file in scan.files:
                if _in_dates(file.path.name, scope.since):
                    found.setdefault((root, file.path), file)
    # Rigs in their configured order: of two copies of one file, the first rig's is ingested.
    order = {entry.path: n for n, entry in enumerate(config.rig_data_paths)}
    result.files = sorted(found.values(), key=lambda file: (order[file.data_root], file.path))
    return result


def data_files(kind: str, root: Path, rig: str | None, start: Path) -> Scan:
    """The behavior or processed-ephys files at or below ``start`` (a file or a directory) under ``root``.

    Only regular files are data files: a FIFO, socket or device named like one
    is reported, never opened. Directories that cannot be read and symbolic
    links that lead nowhere are reported too; symbolic links to directories
    are not followed (a link loop would never end).
    """
    scan = Scan()
    for path in _walk(start, scan.problems):
        try:
            subpath = PurePosixPath(path.relative_to(root).as_posix())
        except ValueError:
            continue  # not below this root
        if not _is_data_path(kind, subpath):
            continue
        file_or_problem = _examine(path, root, rig)
        if isinstance(file_or_problem, ScanProblem):
            scan.problems.append(file_or_problem)
        elif file_or_problem is not None:
            scan.files.append(file_or_problem)
    return scan


def _is_data_path(kind: str, subpath: PurePosixPath) -> bool:
    if kind == "behavior":
        return is_behavior_path(subpath)
    return ephys_session(subpath) is not None


def _examine(path: Path, root: Path, rig: str | None) -> FileOnDisk | ScanProblem | None:
    try:
        stat = path.stat()  # stat never blocks, even on a FIFO: only opening does
    except FileNotFoundError:
        return ScanProblem(path, "dangling symbolic link") if path.is_symlink() else None  # else vanished
    except OSError as error:
        if error.errno == errno.ELOOP:
            return ScanProblem(path, "symbolic link loop")
        return ScanProblem(path, f"cannot stat: {error.strerror or error}")
    special = special_file_kind(stat.st_mode)
    if special is not None:
        return ScanProblem(path, f"not a regular file ({special}): not read")
    return FileOnDisk(path=path, data_root=root, rig=rig, size=stat.st_size, mtime=stat.st_mtime)


def _walk(start: Path, problems: list[ScanProblem]):
    try:
        is_dir = start.is_dir()
    except OSError:
        is_dir = False
    if not is_dir:
        yield start
        return

    def unreadable(error: OSError) -> None:
        problems.append(ScanProblem(Path(error.filename or start), f"directory not readable: {error.strerror or error}"))

    for directory, _, names in os.walk(start, onerror=unreadable):
        for name in names:
            yield Path(directory, name)


def _in_dates(name: str, since: date | None) -> bool:
    if since is None:
        return True
    try:
        return BehaviorFileName.parse(name).session_date >= since
    except BehaviorFormatError:
        return True  # undated names are reported, not hidden by a date filter


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


@dataclass
class SessionGroups:
    """Found behavior files by (h2o, session date), and those that cannot belong to a session."""

    sessions: dict[tuple[str, date], list[FileOnDisk]] = field(default_factory=dict)
    not_sessions: list[tuple[FileOnDisk, str]] = field(default_factory=list)  # name off the pattern: ignored
    bad_names: list[tuple[FileOnDisk, str]] = field(default_factory=list)  # session-like name, unusable: failed


def group_by_session(files: Iterable[FileOnDisk]) -> SessionGroups:
    groups = SessionGroups()
    for file in files:
        try:
            name = BehaviorFileName.parse(file.path.name)
        except BehaviorFormatError as error:
            if FILE_NAME_PATTERN.match(file.path.name):  # the pattern fits, the date does not
                groups.bad_names.append((file, error.problem))
            else:
                groups.not_sessions.append((file, f"not a session file: {error.problem}"))
            continue
        if len(name.h2o) > H2O_MAX_LENGTH:
            groups.bad_names.append((file, f"h2o {name.h2o!r} is longer than {H2O_MAX_LENGTH} characters, "
                                           "the longest water-restriction number lab.WaterRestriction holds"))
            continue
        groups.sessions.setdefault((name.h2o, name.session_date), []).append(file)
    return groups


def probe_folders(root: Path, files: Iterable[FileOnDisk]) -> list[tuple[ProbeFolderKey, FileOnDisk]]:
    """The probe folders these processed-ephys files are in, each as one found unit.

    A probe folder is one unit of work: its stat is the total size and the
    latest mtime of its files (all of them, walked again, not only those
    reported), so it settles only when every file has.
    """
    keys = {key for file in files if (key := probe_folder_key(PurePosixPath(file.subpath))) is not None}
    units = []
    for key in sorted(keys, key=lambda key: str(key.subpath)):
        folder = root / key.subpath
        inside = data_files("ephys", root, None, folder).files
        if inside:
            units.append((key, FileOnDisk(folder, root, None, sum(f.size for f in inside),
                                          max(f.mtime for f in inside))))
    return units
