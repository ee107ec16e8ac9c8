"""Retrieval: archived raw files back onto this host, in the archive layout, verified by sha256.

``mapd retrieve`` and the tables' ``retrieve`` methods (as the seed's
``(publication.ArchivedRawEphys() & key).retrieve(to=DIR)``) both come here.
A file already under ``to`` with the same content is kept; a different one is
never overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from ..config import MapdConfig, load_config
from ..logs import get_logger
from ..schemas import experiment, publication
from .local import LocalTransport
from .transport import ArchiveItem, TransportError, transport_for

log = get_logger("mapd.archive")
KIND_FOLDERS = ("behavior", "ephys_raw", "video")  # the {kind} of the archive layout


@dataclass(frozen=True)
class Selection:
    subject_id: int | None = None
    h2o: str | None = None
    since: date | None = None
    until: date | None = None
    kind: str | None = None  # behavior | ephys_raw | video


def select_files(selection: Selection):
    """The archived files (``DataSet.PhysicalFile`` rows with their location) of the selected sessions."""
    sessions = experiment.Session.selected(selection.subject_id, selection.h2o, selection.since, selection.until)
    behavior = (publication.ArchivedSession.BehaviorData & sessions.proj()).proj("globus_alias", "dataset_name")
    raw = (publication.ArchivedRawEphys & sessions.proj()).proj("globus_alias", "dataset_name")
    files = publication.DataSet.PhysicalFile & [behavior, raw]
    if selection.kind is not None:
        files &= f"file_subpath LIKE '%%/%%/{selection.kind}/%%'"
    return files


def retrieve_physical_files(files, to: Path | str, config: MapdConfig | None = None) -> list[Path]:
    """Bring these ``DataSet.PhysicalFile`` rows back under ``to``; the paths written (or found identical)."""
    to = Path(to)
    rows = (files * publication.GlobusStorageLocation).to_dicts(order_by="file_subpath")
    written: list[Path] = []
    by_location: dict[tuple[str, str], list[ArchiveItem]] = {}
    for row in rows:
        item = ArchiveItem(Path(row["file_subpath"]), row["file_subpath"], row["file_size"], row["file_sha256"])
        by_location.setdefault((row["globus_endpoint"], row["globus_path"]), []).append(item)
    for (endpoint, root), items in by_location.items():
        written += _transport(endpoint, root, config).fetch(items, to)
    log.info("archived files retrieved", files=len(written), to=str(to))
    return written


def _transport(endpoint: str, root: str, config: MapdConfig | None):
    if endpoint == "local":
        return LocalTransport(Path(root))  # the location row says all a mounted archive needs
    config = config or load_config()
    transport = transport_for(config)
    if transport is None or (transport.endpoint, transport.root) != (endpoint, root):
        raise TransportError(f"files archived at Globus endpoint {endpoint} {root}: the configuration's "
                             "archive.globus does not name that archive", retry=False)
    return transport
