"""Which raw files belong to an archive batch: the configured patterns, expanded on disk (no database).

A session's behavior batch holds its Bpod files and videos (patterns under
each rig data path); a probe's batch holds its raw SpikeGLX files (patterns
under each ephys data path, below that probe's folder). Only regular files
are taken: a FIFO or a directory matching a pattern is not a raw file.
"""

from __future__ import annotations

import glob
import os
import stat as stat_module
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from ..config import MapdConfig
from ..find.files import FileOnDisk


@dataclass(frozen=True)
class RawFile:
    kind: str  # behavior | ephys_raw | video
    file: FileOnDisk

    def destination(self, h2o: str, session_date: date) -> str:
        """Where it goes, relative to the archive root: {h2o}/{YYYY-MM-DD}/{kind}/{path relative to its data path}."""
        return f"{h2o}/{session_date.isoformat()}/{self.kind}/{self.file.subpath}"


def expand(pattern: str, h2o: str, session_date: date) -> str:
    """A configured pattern with the session's ``{h2o}``, ``{YYYYMMDD}`` and ``{YYYY-MM-DD}``."""
    return (pattern.replace("{h2o}", glob.escape(h2o))
            .replace("{YYYYMMDD}", session_date.strftime("%Y%m%d"))
            .replace("{YYYY-MM-DD}", session_date.isoformat()))


def behavior_batch_files(config: MapdConfig, h2o: str, session_date: date) -> list[RawFile]:
    """The session's Bpod files and videos under every rig data path (rigs in their configured order)."""
    patterns = config.archive.files
    found = []
    for entry in config.rig_data_paths:
        for kind, kind_patterns in (("behavior", patterns.behavior), ("video", patterns.video)):
            found += _matches(kind, entry.path, entry.rig, kind_patterns, h2o, session_date)
    return _unique(found)


def probe_batch_files(config: MapdConfig, h2o: str, session_date: date, data_root: Path,
                      probe_folder: str) -> list[RawFile]:
    """A probe's raw files: the ephys_raw patterns under its data path, below its folder."""
    below = probe_folder.rstrip("/") + "/"
    matches = _matches("ephys_raw", data_root, None, config.archive.files.ephys_raw, h2o, session_date)
    return _unique([raw for raw in matches if raw.file.subpath.startswith(below)])


def _matches(kind: str, root: Path, rig: str | None, patterns: list[str], h2o: str,
             session_date: date) -> list[RawFile]:
    found = []
    for pattern in patterns:
        for name in sorted(glob.glob(expand(pattern, h2o, session_date), root_dir=root)):
            path = root / name
            try:
                stat = os.stat(path, follow_symlinks=False)
            except OSError:
                continue  # gone since listed
            if stat_module.S_ISREG(stat.st_mode):
                found.append(RawFile(kind, FileOnDisk(path, root, rig, stat.st_size, stat.st_mtime)))
    return found


def _unique(files: list[RawFile]) -> list[RawFile]:
    """Each path once (two patterns may match one file)."""
    seen, unique = set(), []
    for raw in files:
        if raw.file.path not in seen:
            seen.add(raw.file.path)
            unique.append(raw)
    return unique
