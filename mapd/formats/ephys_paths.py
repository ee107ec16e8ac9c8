"""Which files below an ephys data path are processed-ephys files (FORMATS.md section 2); no reading."""

from __future__ import annotations

import re
from datetime import date
from pathlib import PurePath

_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:-(\d+))?$")
SORTER_FILES = re.compile(r".*(_jrc\.mat|_res\.mat|_bitcode\.mat)$")
KILOSORT_FILES = frozenset({"spike_times.npy", "spike_clusters.npy", "params.py", "cluster_group.tsv",
                            "cluster_KSLabel.tsv", "templates.npy", "channel_map.npy", "channel_positions.npy",
                            "amplitudes.npy"})


def ephys_session(subpath: PurePath) -> tuple[str, date] | None:
    """(h2o, date) of a processed-ephys file at ``{h2o}/{YYYY-MM-DD}[-N]/...``, else None."""
    parts = subpath.parts
    if len(parts) < 3 or not (SORTER_FILES.match(parts[-1]) or parts[-1] in KILOSORT_FILES):
        return None
    match = _DATE.match(parts[1])
    if not match:
        return None
    try:
        return parts[0], date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None
