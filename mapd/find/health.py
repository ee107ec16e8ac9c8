"""Health of the configured data paths: ok, missing, not a directory, unreadable (file system only).

An unmounted share looks like an empty directory or none at all; saying so is
the difference between "no new data" and "data we cannot see".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..config import MapdConfig

OK, MISSING, NOT_A_DIRECTORY, UNREADABLE = "ok", "missing", "not a directory", "unreadable"


@dataclass(frozen=True)
class DataPath:
    """One configured data path."""

    kind: str  # behavior | ephys
    path: Path
    rig: str | None

    @property
    def label(self) -> str:
        return f"rig {self.rig}" if self.rig else "ephys"


@dataclass(frozen=True)
class PathHealth:
    data_path: DataPath
    health: str  # ok | missing | not a directory | unreadable
    problem: str = ""  # in words, for anything but ok

    @property
    def ok(self) -> bool:
        return self.health == OK


def data_paths(config: MapdConfig) -> list[DataPath]:
    return ([DataPath("behavior", entry.path, entry.rig) for entry in config.rig_data_paths]
            + [DataPath("ephys", entry.path, None) for entry in config.ephys_data_paths])


def check(data_path: DataPath) -> PathHealth:
    """Stat the path and try to list it (a dead share can pass a stat and fail a listing)."""
    path = data_path.path
    try:
        if not path.exists():
            return PathHealth(data_path, MISSING, f"{path} does not exist (share not mounted?)")
        if not path.is_dir():
            return PathHealth(data_path, NOT_A_DIRECTORY, f"{path} is not a directory")
        with os.scandir(path) as entries:
            next(entries, None)
    except OSError as error:
        return PathHealth(data_path, UNREADABLE, f"{path} cannot be read: {error.strerror or error}")
    if not os.access(path, os.R_OK | os.X_OK):
        return PathHealth(data_path, UNREADABLE, f"{path} cannot be read: permission denied")
    return PathHealth(data_path, OK)


def check_all(config: MapdConfig) -> list[PathHealth]:
    return [check(data_path) for data_path in data_paths(config)]
