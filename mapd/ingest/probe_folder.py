"""A found probe folder -> its outcome: the probe step that ``mapd rescan`` and ``mapd run`` share.

The folder is inspected (which sorter, which bitcode and meta files), then
ingested in one transaction (:func:`mapd.ingest.probe.ingest_probe`). A probe
whose behavior session is not ingested yet waits; a bad folder fails with the
reason; failures that pass (the database) propagate to the caller.
"""

from __future__ import annotations

from ..find.files import FileOnDisk, sha256_of
from ..formats.alignment import AlignmentError
from ..formats.ephys_errors import EphysFormatError
from ..formats.probe_folders import ProbeFolder, UnusableProbeFolder, inspect_probe_folder
from ..logs import get_logger
from ..queue.files import FileOutcome, FileState
from ..schemas import ingest
from .probe import ProbeAlreadyIngested, ProbeWaiting, ingest_probe

log = get_logger("mapd.ingest")
NOT_SORTED_YET = "no sorting output"  # inspect_probe_folder's reason for a folder without one


def probe_outcome(found: FileOnDisk) -> tuple[FileOutcome, str]:
    """The outcome of one probe folder and its summary category (as for behavior files)."""
    folder = inspect_probe_folder(found.path)
    if isinstance(folder, UnusableProbeFolder):
        if folder.reason.startswith(NOT_SORTED_YET):  # sorting is done by hand, later: its output will come
            return FileOutcome(found, FileState.WAITING, f"{folder.reason}: not sorted yet"), "waiting"
        return FileOutcome(found, FileState.FAILED, folder.reason), "failed"
    try:
        probe = ingest_probe(folder)
    except ProbeWaiting as waiting:
        return FileOutcome(found, FileState.WAITING, str(waiting)), "waiting"
    except ProbeAlreadyIngested:
        return _compare_with_ingested(found, folder)
    except (EphysFormatError, AlignmentError) as error:
        return FileOutcome(found, FileState.FAILED, str(error)), "failed"
    log.info("probe ingested", h2o=folder.h2o, session_date=str(folder.session_date), probe=folder.probe,
             sorter=folder.sorter, units=probe.units, spikes=probe.spikes, trials=probe.trials,
             duration=round(probe.seconds, 3))
    return FileOutcome(found, FileState.INGESTED, "", {"units": probe.units, "trials": probe.trials}), "ingested"


def _compare_with_ingested(found: FileOnDisk, folder: ProbeFolder) -> tuple[FileOutcome, str]:
    """An ingested probe folder seen again: unchanged (a touch, or another process's ingest) or changed.

    As for behavior files, content decides: each file's sha256 against the one
    recorded at ingest.
    """
    recorded = (ingest.EphysIngest.EphysFile & (ingest.EphysIngest & {
        "data_root": str(found.data_root), "probe_folder": found.subpath})).to_dicts()
    if not recorded:  # ingested from another data path (a copy of the folder)
        return FileOutcome(found, FileState.SKIPPED, "this probe of the session is already ingested "
                                                     "from another folder"), "skipped"
    cleaned = _cleaned_by_mapd(found)  # archived raw files mapd deleted itself: gone, not changed
    before = {row["ephys_file"]: row["file_sha256"] for row in recorded if row["ephys_file"] not in cleaned}
    now = {}
    for path in folder.files:
        try:
            now[path.relative_to(folder.path).as_posix()] = sha256_of(path)[0]
        except OSError as error:
            return FileOutcome(found, FileState.FAILED, f"{path}: cannot read: {error.strerror or error}"), "failed"
    if now == before:
        return FileOutcome(found, FileState.INGESTED), "already ingested"
    differing = sorted(name for name in before.keys() | now.keys() if before.get(name) != now.get(name))
    log.warning("probe folder changed after ingest; not ingested again", folder=str(found.path), files=differing)
    return FileOutcome(found, FileState.CHANGED, f"files differ from the ingested ones: {', '.join(differing)}; "
                                                 "not ingested again"), "changed"


def _cleaned_by_mapd(found: FileOnDisk) -> set[str]:
    """Files of the folder (relative to it) that mapd's cleanup deleted after verified archival."""
    prefix = found.subpath.rstrip("/") + "/"
    cleaned = ingest.ArchiveFile & {"data_root": str(found.data_root), "state": "cleaned"}
    return {subpath[len(prefix):] for subpath in cleaned.to_arrays("subpath") if subpath.startswith(prefix)}
