"""Probe folders below an ephys data path -> what each holds (names only; no file is read).

A probe folder is one probe's processed ephys of one session (FORMATS.md
section 2), in one of the layouts

    {h2o}/{YYYY-MM-DD}/{N}/     {h2o}/{YYYYMMDD}/{N}/     {h2o}/{YYYY-MM-DD}-{N}/   (older)

holding one sorting output: a JRClust v3 ``*_jrc.mat`` or v4 ``*_res.mat``
in the folder itself, or a Kilosort/phy folder (``spike_times.npy``) in it or
below it; the trial bitcodes ``{h2o}_bitcode.mat`` (``{h2o}_*bitcode.mat``
as the original); and, when present, the SpikeGLX ``*.ap.meta``.
:func:`inspect_probe_folder` says what a folder holds, or why it is not usable.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePath
from typing import Iterator, Literal

from .kilosort import OPTIONAL_FILES as KILOSORT_OPTIONAL
from .kilosort import REQUIRED_FILES as KILOSORT_REQUIRED
from .kilosort import SPIKE_TIMES

__all__ = ["ProbeFolder", "ProbeFolderKey", "UnusableProbeFolder", "find_probe_folders", "inspect_probe_folder",
           "is_probe_file", "probe_folder_key", "session_of"]

Sorter = Literal["jrclust3", "jrclust4", "kilosort"]

_DASHED = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_DASHED_PROBE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})-(\d+)$")  # the older {YYYY-MM-DD}-{N}
_PROBE = re.compile(r"^\d+$")

JRCLUST_SUFFIXES: tuple[tuple[str, Sorter], ...] = (("_jrc.mat", "jrclust3"), ("_res.mat", "jrclust4"))
BITCODE_SUFFIX = "bitcode.mat"
META_SUFFIX = ".ap.meta"
KILOSORT_FILES = frozenset(KILOSORT_REQUIRED + KILOSORT_OPTIONAL)


@dataclass(frozen=True)
class ProbeFolderKey:
    """Where a probe folder is and which session and probe it is, from its path alone."""

    h2o: str
    session_date: date
    probe: int  # N, as the folder is named (1, 2, ...)
    subpath: PurePath  # the folder, relative to its ephys data path


@dataclass(frozen=True)
class ProbeFolder:
    """A usable probe folder: one sorting output and the files that go with it."""

    h2o: str
    session_date: date
    probe: int
    path: Path  # the probe folder
    sorter: Sorter
    sorting: Path  # the JRClust file, or the phy folder
    files: tuple[Path, ...]  # every file of the probe's ingest (sorting, bitcode, meta), sorted
    bitcode: Path | None  # {h2o}_bitcode.mat; None only with require_bitcode=False
    meta: Path | None  # the SpikeGLX .ap.meta, when present


@dataclass(frozen=True)
class UnusableProbeFolder:
    """A probe folder that cannot be ingested (yet), and why."""

    h2o: str
    session_date: date
    probe: int
    path: Path
    reason: str


def session_of(folder_name: str) -> tuple[date, int | None] | None:
    """(date, probe or None) of a ``{YYYY-MM-DD}``, ``{YYYYMMDD}`` or ``{YYYY-MM-DD}-{N}`` folder name."""
    found = _DASHED.match(folder_name) or _COMPACT.match(folder_name)
    probe = None
    if not found:
        found = _DASHED_PROBE.match(folder_name)
        if not found:
            return None
        probe = int(found[4])
    try:
        return date(int(found[1]), int(found[2]), int(found[3])), probe
    except ValueError:
        return None


def probe_folder_key(subpath: PurePath) -> ProbeFolderKey | None:
    """The probe folder a path below an ephys data path is (or is inside), else None."""
    parts = subpath.parts
    if len(parts) < 2:
        return None
    session = session_of(parts[1])
    if session is None:
        return None
    day, probe = session
    if probe is not None:
        return ProbeFolderKey(parts[0], day, probe, PurePath(*parts[:2]))
    if len(parts) < 3 or not _PROBE.match(parts[2]):
        return None
    return ProbeFolderKey(parts[0], day, int(parts[2]), PurePath(*parts[:3]))


def is_probe_file(name: str) -> bool:
    """Whether a file of this name is part of a probe's ingest (sorting, bitcode, meta)."""
    return (name.endswith(tuple(suffix for suffix, _ in JRCLUST_SUFFIXES)) or name.endswith("_" + BITCODE_SUFFIX)
            or name.endswith(META_SUFFIX) or name in KILOSORT_FILES)


def find_probe_folders(root: str | os.PathLike[str]) -> Iterator[ProbeFolder | UnusableProbeFolder]:
    """Every probe folder below ``root`` (an ``ephys_data_paths`` entry), in path order."""
    root = Path(root)
    for h2o_dir in _subdirs(root):
        for session_dir in _subdirs(h2o_dir):
            session = session_of(session_dir.name)
            if session is None:
                continue
            folders = [session_dir] if session[1] is not None else _subdirs(session_dir)
            for folder in folders:
                key = probe_folder_key(folder.relative_to(root))
                if key is not None:
                    yield inspect_probe_folder(folder, key)


def inspect_probe_folder(path: str | os.PathLike[str], key: ProbeFolderKey | None = None, *,
                         require_bitcode: bool = True) -> ProbeFolder | UnusableProbeFolder:
    """What a probe folder holds, or why it is not usable (no or several sorting outputs,
    no or several bitcode files). ``key`` defaults to the folder's last path parts."""
    path = Path(path)
    key = key or _key_from_path(path)
    if key is None:
        raise ValueError(f"{path} is not a probe folder ({{h2o}}/{{date}}/{{N}} or {{h2o}}/{{YYYY-MM-DD}}-{{N}})")

    def unusable(reason: str) -> UnusableProbeFolder:
        return UnusableProbeFolder(key.h2o, key.session_date, key.probe, path, reason)

    try:
        top = sorted(entry for entry in path.iterdir() if entry.is_file())
        spike_times = sorted(path.rglob(SPIKE_TIMES))
    except OSError as exc:
        return unusable(f"cannot list the folder ({exc.strerror or exc})")
    outputs = [(sorter, f) for f in top for suffix, sorter in JRCLUST_SUFFIXES if f.name.endswith(suffix)]
    outputs += [("kilosort", f.parent) for f in spike_times]
    if not outputs:
        return unusable("no sorting output (JRClust *_jrc.mat or *_res.mat, or Kilosort spike_times.npy)")
    if len(outputs) > 1:
        return unusable(f"several sorting outputs: {', '.join(_relative(p, path) for _, p in outputs)}")
    sorter, sorting = outputs[0]
    bitcodes = [f for f in top if f.name.startswith(key.h2o + "_") and f.name.endswith(BITCODE_SUFFIX)]
    if len(bitcodes) > 1:
        return unusable(f"several bitcode files: {', '.join(f.name for f in bitcodes)}")
    if not bitcodes and require_bitcode:
        return unusable(f"no bitcode file {key.h2o}_bitcode.mat")
    meta = _meta(path, top)
    files = [sorting] if sorter != "kilosort" else [f for f in sorted(sorting.iterdir()) if f.name in KILOSORT_FILES]
    files += bitcodes + ([meta] if meta else [])
    return ProbeFolder(key.h2o, key.session_date, key.probe, path, sorter, sorting, tuple(sorted(files)),
                       bitcodes[0] if bitcodes else None, meta)


def _key_from_path(path: Path) -> ProbeFolderKey | None:
    for depth in (2, 3):
        if len(path.parts) >= depth:
            key = probe_folder_key(PurePath(*path.parts[-depth:]))
            if key is not None and key.subpath == PurePath(*path.parts[-depth:]):
                return key
    return None


def _meta(path: Path, top: list[Path]) -> Path | None:
    """The folder's own .ap.meta, else one below it; the first by name (per-trial
    recordings ``..._t0``, ``..._t1`` share one probe configuration)."""
    metas = [f for f in top if f.name.endswith(META_SUFFIX)] or sorted(path.rglob("*" + META_SUFFIX))
    return metas[0] if metas else None


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(entry for entry in folder.iterdir() if entry.is_dir())
    except OSError:
        return []


def _relative(p: Path, base: Path) -> str:
    try:
        return str(p.relative_to(base)) or "."
    except ValueError:
        return str(p)
