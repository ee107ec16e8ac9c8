"""Which files below an ephys data path are processed-ephys files: a thin wrapper over probe_folders."""

from __future__ import annotations

from datetime import date
from pathlib import PurePath

from .probe_folders import is_probe_file, session_of


def ephys_session(subpath: PurePath) -> tuple[str, date] | None:
    """(h2o, date) of a processed-ephys file at ``{h2o}/{YYYY-MM-DD | YYYYMMDD}[-N]/...``, else None.

    The file is one a probe's ingest uses (probe_folders.is_probe_file): a sorting
    output, a bitcode file, a Kilosort/phy file or a SpikeGLX ``.ap.meta``.
    """
    parts = subpath.parts
    if len(parts) < 3 or not is_probe_file(parts[-1]):
        return None
    session = session_of(parts[1])
    return None if session is None else (parts[0], session[0])
