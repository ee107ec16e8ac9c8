"""A probe folder -> the MAP ephys tables, in one transaction: its units, their spikes per trial, its ingest record.

:func:`ingest_probe` reads the folder with the ``mapd.formats`` readers
(sorting output, ``{h2o}_bitcode.mat``, SpikeGLX ``.ap.meta``), finds the
behavior session of the same h2o and date, matches the recorded trials to the
session's Bpod trials (``mapd.formats.alignment``), and stores:

* ``ephys.ProbeInsertion`` (+ ``RecordingSystemSetup``): probe serial and
  electrode configuration from the ``.meta`` when there is one (``lab.Probe``,
  ``lab.ProbeType.Electrode``, ``lab.ElectrodeConfig`` rows are entered as
  needed, in a short transaction of their own: reference rows that the probes
  of a session share, so that concurrent probes never wait on each other);
* ``ephys.Unit``: every unit with its spike times in seconds from the start of
  the first recorded trial;
* ``ephys.TrialSpikes``: per unit and stored trial with a go cue, the spikes
  in seconds from the go cue (an empty array when there are none);
  ``ephys.Unit.UnitTrial``: the stored trials in which each unit has spikes;
* ``ingest.EphysIngest`` and its ``EphysFile`` part: the folder's files (size,
  mtime, sha256), the sorter and how the trials were aligned.

Every spike is handled by array operations (one sort, ``searchsorted``, range
indexing); the three large tables are written in bulk (:mod:`mapd.ingest.bulk`:
binary ``COPY`` on PostgreSQL, DataJoint's insert elsewhere).

Errors: ``ProbeWaiting`` (no subject or no behavior session yet),
``ProbeAlreadyIngested`` (another process won), ``ProbeFormatError`` or the
readers' ``EphysFormatError`` (the message names the file; ``transient`` when
it could not be read now). Nothing is written for any of them.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePath

import datajoint as dj
import numpy as np

from ..formats import alignment
from ..formats.alignment import AlignmentError, TrialMatch, group_spikes, match_trials
from ..formats.bitcode import BitcodeFile, in_samples, read_bitcode
from ..formats.ephys_errors import EphysFormatError
from ..formats.jrclust import read_jrclust
from ..formats.kilosort import read_kilosort
from ..formats.probe_folders import ProbeFolder, session_of
from ..formats.spikeglx import ProbeGeometry, read_probe
from ..schemas import ephys, experiment, ingest, lab
from . import uids
from .bulk import Block, BulkWriter

__all__ = ["IngestedProbe", "ProbeAlreadyIngested", "ProbeFormatError", "ProbeKey", "ProbeWaiting", "ingest_probe"]

CLUSTERING_METHODS = {"jrclust3": "jrclust_v3", "jrclust4": "jrclust_v4", "kilosort": "kilosort"}
ELECTRODE_GROUP = 0  # one group per configuration, as the original
# Rows of the large tables are encoded per block of this many spikes (bounds the memory they take).
BLOCK_SPIKES = 1 << 21
BLOCK_ROWS = 1 << 16


class ProbeWaiting(Exception):
    """The probe's subject or behavior session is not in the database yet; try again once it is."""


class ProbeAlreadyIngested(Exception):
    """The probe insertion exists (another process ingested it first, or it was entered by hand)."""


class ProbeFormatError(EphysFormatError):
    """The probe's files cannot be ingested together (they disagree, or the trials cannot be aligned)."""


@dataclass(frozen=True)
class ProbeKey:
    subject_id: int
    session: int
    insertion_number: int

    def as_dict(self) -> dict[str, int]:
        return {"subject_id": self.subject_id, "session": self.session, "insertion_number": self.insertion_number}


@dataclass(frozen=True)
class IngestedProbe:
    key: ProbeKey
    sorter: str  # jrclust3 | jrclust4 | kilosort
    alignment: str  # bitcode | trialNum
    recorded_trials: int  # trials of the bitcode file
    trials: int  # of those, trials of the behavior session (stored)
    units: int
    spikes: int  # spikes of the units
    rows: int  # rows inserted, all tables
    read_seconds: float  # reading, hashing and aligning the files
    insert_seconds: float  # the transaction
    seconds: float  # all of it


def ingest_probe(folder: ProbeFolder) -> IngestedProbe:
    """Ingest one probe folder (found by ``mapd.formats.probe_folders``) in one transaction.

    Raises ProbeWaiting when the subject (``lab.WaterRestriction``) or its
    behavior session of that date is not ingested yet, ProbeAlreadyIngested
    when the probe insertion exists, and ProbeFormatError / EphysFormatError
    (naming the file) for bad input; nothing is written then.
    """
    started = time.perf_counter()
    session = _behavior_session(folder.h2o, folder.session_date)
    key = ProbeKey(session.subject_id, session.session, folder.probe)
    _refuse_ingested(key)
    if folder.bitcode is None:
        raise ProbeFormatError(folder.path, f"no bitcode file {folder.h2o}_bitcode.mat")
    with _FileDigests(folder) as digests:
        probe = _read_probe(folder, session)
        files = digests.result()
    read_seconds = time.perf_counter() - started
    references = _enter_references(probe.geometry)
    first_uid = _allocate_unit_uids(probe.groups.units.size)
    inserting = time.perf_counter()
    rows = _insert(key, folder, probe, references, first_uid, files, started)
    done = time.perf_counter()
    return IngestedProbe(
        key=key, sorter=folder.sorter, alignment=probe.trials.match.method,
        recorded_trials=int(probe.trials.match.trials.size), trials=int(probe.trials.stored.sum()),
        units=int(probe.groups.units.size), spikes=int(probe.groups.unit_times.size), rows=rows,
        read_seconds=read_seconds, insert_seconds=done - inserting, seconds=done - started,
    )


# --------------------------------------------------------------------------
# The behavior session.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Session:
    subject_id: int
    session: int
    trials: np.ndarray  # Bpod trial numbers of the session's SessionTrial rows
    codes: dict[int, str]  # Bpod trial number -> bitcode note
    go_events: dict[int, float]  # Bpod trial number -> go event (s from the trial's start)


def _behavior_session(h2o: str, session_date: date) -> _Session:
    """The behavior session of ``h2o`` on that day, with its trials' bitcodes and go events; ProbeWaiting
    while the subject or the session is not in the database."""
    subjects = (lab.WaterRestriction & {"water_restriction_number": h2o}).to_arrays("subject_id")
    if not len(subjects):
        raise ProbeWaiting(f"no subject with water-restriction number {h2o} yet")
    subject_id = int(subjects[0])
    sessions = (experiment.Session & {"subject_id": subject_id, "session_date": session_date}).to_arrays("session")
    if not len(sessions):
        raise ProbeWaiting(f"waiting for the behavior session of {h2o} on {session_date}")
    key = {"subject_id": subject_id, "session": int(sessions[0])}
    trials = (experiment.SessionTrial & key).to_arrays("trial").astype(np.int64)
    note_trials, notes = (experiment.TrialNote & key & {"trial_note_type": "bitcode"}).to_arrays("trial", "trial_note")
    go_trials, go_times = (experiment.TrialEvent & key & {"trial_event_type": "go"}).to_arrays(
        "trial", "trial_event_time", order_by="trial_event_time DESC")
    return _Session(
        subject_id=subject_id, session=key["session"], trials=trials,
        codes={int(t): str(code) for t, code in zip(note_trials, notes)},
        go_events={int(t): float(go) for t, go in zip(go_trials, go_times)},  # the first go event of each trial wins
    )


def _refuse_ingested(key: ProbeKey) -> None:
    if ingest.EphysIngest & key.as_dict():
        raise ProbeAlreadyIngested(f"probe {key.insertion_number} of session {key.session} of subject "
                                   f"{key.subject_id} is already ingested")
    if ephys.ProbeInsertion & key.as_dict():
        raise ProbeAlreadyIngested(f"probe insertion {key.insertion_number} of session {key.session} of subject "
                                   f"{key.subject_id} exists without an ingest record (entered by hand?)")


# --------------------------------------------------------------------------
# Reading and aligning the folder (no database writes).
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Units:
    """Per-unit values of either sorter, in cluster order; NaN / -1 / None where the sorter gives none."""

    clusters: np.ndarray
    qualities: tuple[str, ...]
    sites: np.ndarray  # 1-based; -1: unknown
    x: np.ndarray
    y: np.ndarray
    amplitude: np.ndarray
    snr: np.ndarray
    waveforms: np.ndarray | None  # (n_units, n_samples) on the unit's site; rows of NaN: none


@dataclass(frozen=True)
class _Sorting:
    """What either sorter gives besides the spikes."""

    path: Path
    sample_rate: float
    trial_offsets: np.ndarray | None  # JRClust v3 viT_offset_file
    noise_spikes: int
    units: _Units


@dataclass(frozen=True)
class _Trials:
    match: TrialMatch
    starts: np.ndarray  # (n_recorded,) window start of each recorded trial (samples)
    go_cues: np.ndarray  # (n_recorded,) go cue (s on the recording's clock); NaN: none
    stored: np.ndarray  # (n_recorded,) bool: the recorded trial is a SessionTrial of the session
    starts_from: str  # sTrig | viT_offset_file
    go_from: str  # goCue | behavior


@dataclass(frozen=True)
class _Probe:
    sorting: _Sorting
    bitcode: BitcodeFile
    geometry: ProbeGeometry | None
    trials: _Trials
    groups: alignment.SpikeGroups


def _read_probe(folder: ProbeFolder, session: _Session) -> _Probe:
    """Read the folder's files, align its trials and group its spikes (the reader's spike arrays are
    dropped once grouped: the groups hold every spike)."""
    sorting, spike_times, spike_clusters = _read_sorting(folder)
    bitcode = read_bitcode(folder.bitcode)
    geometry = read_probe(folder.meta) if folder.meta is not None else None
    trials = _align(sorting, bitcode, session)
    try:
        groups = group_spikes(spike_times, spike_clusters, trials.starts, trials.go_cues, sorting.sample_rate,
                              units=sorting.units.clusters)
    except AlignmentError as error:
        raise ProbeFormatError(bitcode.path if trials.starts_from == "sTrig" else sorting.path, str(error)) from None
    return _Probe(sorting, bitcode, geometry, trials, groups)


def _read_sorting(folder: ProbeFolder) -> tuple[_Sorting, np.ndarray, np.ndarray]:
    """(the sorting, spike times in samples, spike clusters), noise left out by the readers."""
    if folder.sorter == "kilosort":
        ks = read_kilosort(folder.sorting, meta_path=folder.meta)
        sorting = _Sorting(ks.path, ks.sample_rate, None, ks.noise_spikes, _kilosort_units(ks.units))
        return sorting, ks.spike_times, ks.spike_clusters
    jr = read_jrclust(folder.sorting, meta_path=folder.meta)  # its spike sites and positions are not stored
    units = jr.units
    values = _Units(units.clusters, units.qualities, units.sites, units.x, units.y, units.vpp, units.snr,
                    units.waveforms[:, 0, :] if units.waveforms.shape[1] else None)  # JRClust's site 0 is the unit's
    return _Sorting(jr.path, jr.sample_rate, jr.trial_offsets, jr.noise_spikes, values), jr.spike_times, \
        jr.spike_clusters


def _kilosort_units(units) -> _Units:
    n = units.clusters.size
    sites = units.sites if units.sites is not None else np.full(n, -1)
    waveforms = None
    if units.waveforms is not None and n:
        peak = np.nan_to_num(np.abs(units.waveforms).max(axis=2), nan=-1.0).argmax(axis=1)
        waveforms = units.waveforms[np.arange(n), peak, :]  # the template on its largest channel
    return _Units(units.clusters, units.qualities, sites, units.x, units.y, units.amplitude, units.snr, waveforms)


def _align(sorting: _Sorting, bitcode: BitcodeFile, session: _Session) -> _Trials:
    try:
        match = match_trials(list(bitcode.codes), session.codes, bitcode.trial_numbers)
    except AlignmentError as error:
        raise ProbeFormatError(bitcode.path, str(error)) from None
    stored = np.isin(match.trials, session.trials)
    repeated = np.unique(match.trials[stored], return_counts=True)
    if np.any(repeated[1] > 1):
        raise ProbeFormatError(bitcode.path, f"trialNum lists Bpod trials {repeated[0][repeated[1] > 1][:5].tolist()} "
                                             "more than once")
    if not stored.any():
        raise ProbeFormatError(bitcode.path, f"none of the {match.trials.size} recorded trials is a trial of the "
                                             "behavior session")
    starts, triggers, starts_from = _trial_starts(sorting, bitcode)
    if bitcode.go_cues is not None:
        go = alignment.go_cues_from_bitcode(in_samples(bitcode.go_cues, sorting.sample_rate), sorting.sample_rate)
        go_from = "goCue"
    else:
        events = np.array([session.go_events.get(int(t), math.nan) for t in match.trials])
        go = alignment.go_cues_from_behavior(triggers, events, sorting.sample_rate)
        go_from = "behavior"
    return _Trials(match, starts, go, stored, starts_from, go_from)


def _trial_starts(sorting: _Sorting, bitcode: BitcodeFile) -> tuple[np.ndarray, np.ndarray, str]:
    """(window starts, Bpod trial-start triggers, where they came from), in samples."""
    if bitcode.trial_starts is not None:
        triggers = in_samples(bitcode.trial_starts, sorting.sample_rate)
        if not np.all(np.isfinite(triggers)):
            raise ProbeFormatError(bitcode.path, "sTrig holds values that are not numbers")
        return alignment.trial_starts(strig=triggers), triggers, "sTrig"
    offsets = sorting.trial_offsets
    if offsets is None:
        raise ProbeFormatError(bitcode.path, f"no sTrig, and {sorting.path.name} has no viT_offset_file: "
                                             "the trials cannot be found in the recording")
    if offsets.size != bitcode.n_trials:
        raise ProbeFormatError(sorting.path, f"viT_offset_file has {offsets.size} values for {bitcode.n_trials} "
                                             f"trials in {bitcode.path.name}")
    return alignment.trial_starts(file_offsets=offsets), offsets.astype(np.float64), "viT_offset_file"


# --------------------------------------------------------------------------
# The folder's files: stat, sha256 (in a thread, while they are read).
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _FileRecord:
    name: str  # relative to the probe folder
    size: int
    mtime: float
    sha256: str


class _FileDigests:
    """sha256 of each of a folder's files, computed in a thread while the readers read them.

    Each file's (size, mtime) is taken before it is read and compared after
    it is hashed: a file that changed meanwhile is a transient error (still
    being written or replaced), not a bad file.
    """

    def __init__(self, folder: ProbeFolder) -> None:
        self._folder = folder
        self._stats = {path: _stat(path) for path in folder.files}
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mapd-sha256")
        self._future = self._pool.submit(self._hash_all)

    def __enter__(self) -> "_FileDigests":
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()  # on an error, files not hashed yet are left
        self._pool.shutdown(wait=True)

    def result(self) -> list[_FileRecord]:
        digests = self._future.result()
        records = []
        for path, (size, mtime) in self._stats.items():
            if _stat(path) != (size, mtime):
                raise EphysFormatError(path, "changed while it was read", transient=True)
            records.append(_FileRecord(path.relative_to(self._folder.path).as_posix(), size, mtime, digests[path]))
        return records

    def _hash_all(self) -> dict[Path, str]:
        digests = {}
        for path in self._stats:
            if self._stop.is_set():
                break
            try:
                with open(path, "rb") as handle:
                    digests[path] = hashlib.file_digest(handle, "sha256").hexdigest()
            except OSError as exc:
                raise EphysFormatError(path, f"cannot read file ({exc.strerror or exc})", transient=True) from None
        return digests


def _stat(path: Path) -> tuple[int, float]:
    try:
        stat = path.stat()
    except OSError as exc:
        raise EphysFormatError(path, f"cannot read file ({exc.strerror or exc})", transient=True) from None
    return stat.st_size, stat.st_mtime


def _folder_location(folder: ProbeFolder) -> tuple[str, str]:
    """(ephys data path, the folder below it): {h2o}/{date}-{N} is two parts, {h2o}/{date}/{N} three."""
    parts = folder.path.parts
    depth = 2 if (session_of(parts[-1]) or (None, None))[1] is not None else 3
    return str(PurePath(*parts[:-depth])), PurePath(*parts[-depth:]).as_posix()


# --------------------------------------------------------------------------
# Reference rows: probe type, its electrodes, the electrode configuration, the probe.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _References:
    probe: str | None  # lab.Probe
    config: dict | None  # lab.ElectrodeConfig key
    electrodes: np.ndarray | None  # electrode (lab.ProbeType.Electrode) of each recorded site, in site order


_CONTACT = re.compile(r"(?:s(\d+))?e(\d+)$")


def _enter_references(geometry: ProbeGeometry | None) -> _References:
    """Enter (if missing) the lab rows the probe insertion refers to, in a short transaction of their own."""
    if geometry is None:
        return _References(None, None, None)
    layout = _probe_layout(geometry)
    config, electrodes = None, None
    with lab.ProbeType.connection.transaction:
        lab.ProbeType.insert1({"probe_type": geometry.probe_type}, skip_duplicates=True)
        if layout is not None:
            per_shank, rows = layout
            if len(lab.ProbeType.Electrode & {"probe_type": geometry.probe_type}) < len(rows):
                lab.ProbeType.Electrode.insert(rows, skip_duplicates=True)
            electrodes = geometry.shanks * per_shank + geometry.electrodes + 1
            config = _electrode_config(geometry.probe_type, electrodes)
        if geometry.serial:
            lab.Probe.insert1({"probe": geometry.serial, "probe_type": geometry.probe_type}, skip_duplicates=True)
    return _References(geometry.serial or None, config, electrodes)


def _probe_layout(geometry: ProbeGeometry) -> tuple[int, list[dict]] | None:
    """(electrodes per shank, lab.ProbeType.Electrode rows of every electrode) of the probe's part
    number, from probeinterface's Neuropixels catalogue; None for a part it does not know."""
    from probeinterface.neuropixels_tools import build_neuropixels_probe

    try:
        full = build_neuropixels_probe(geometry.part_number)
    except Exception:  # KeyError for an unknown part number; no electrode configuration then
        return None
    found = [_CONTACT.search(str(contact)) for contact in full.contact_ids]
    shanks = np.array([int(m[1] or 0) for m in found])
    indices = np.array([int(m[2]) for m in found])
    positions = np.asarray(full.contact_positions, dtype=np.float64)
    per_shank = int(np.sum(shanks == 0))
    columns = int(np.sum((shanks == 0) & (positions[:, 1] == positions[shanks == 0, 1].min())))
    rows = [{"probe_type": geometry.probe_type, "electrode": int(s * per_shank + e + 1), "shank": int(s),
             "shank_col": int(e % columns), "shank_row": int(e // columns), "x_coord": float(x), "y_coord": float(y)}
            for s, e, (x, y) in zip(shanks, indices, positions[:, :2])]
    return per_shank, rows


def _electrode_config(probe_type: str, electrodes: np.ndarray) -> dict:
    """The lab.ElectrodeConfig key of this set of electrodes, entered if new (named by its ranges, as the original)."""
    members = np.unique(electrodes)
    digest = hashlib.md5(f"{probe_type}:{','.join(map(str, members))}".encode()).hexdigest()
    existing = (lab.ElectrodeConfig & {"electrode_config_hash": digest}).keys()
    if existing:
        return {"probe_type": existing[0]["probe_type"], "electrode_config_name": existing[0]["electrode_config_name"]}
    breaks = np.flatnonzero(np.diff(members) > 1)
    firsts, lasts = members[np.r_[0, breaks + 1]], members[np.r_[breaks, members.size - 1]]
    name = "; ".join(f"{a}-{b}" for a, b in zip(firsts, lasts))
    if len(name) > 64:
        name = f"{members.size} electrodes {digest[:8]}"
    key = {"probe_type": probe_type, "electrode_config_name": name}
    # Another process may enter the same configuration at the same moment: the same rows.
    lab.ElectrodeConfig.insert1({**key, "electrode_config_hash": digest}, skip_duplicates=True)
    lab.ElectrodeConfig.ElectrodeGroup.insert1({**key, "electrode_group": ELECTRODE_GROUP}, skip_duplicates=True)
    lab.ElectrodeConfig.Electrode.insert([{**key, "electrode_group": ELECTRODE_GROUP, "electrode": int(e)}
                                          for e in members], skip_duplicates=True)
    return key


def _allocate_unit_uids(count: int) -> int:
    return uids.allocate(ephys.UnitUidBlock, count, "unit uids")


# --------------------------------------------------------------------------
# The transaction.
# --------------------------------------------------------------------------


def _insert(key: ProbeKey, folder: ProbeFolder, probe: _Probe, references: _References, first_uid: int,
            files: list[_FileRecord], started: float) -> int:
    """Every row of the probe in one transaction; returns how many. ProbeAlreadyIngested if another
    process inserted the probe first."""
    method = CLUSTERING_METHODS[folder.sorter]
    unit_key = {**key.as_dict(), "clustering_method": method}
    stored = probe.trials.match.trials[probe.trials.stored]
    writer = BulkWriter(ephys.Unit.connection)
    try:
        with ephys.Unit.connection.transaction:
            _lock_trials(key, stored)
            ephys.ProbeInsertion.insert1({**key.as_dict(), "probe": references.probe, **(references.config or {})})
            ephys.ProbeInsertion.RecordingSystemSetup.insert1(
                {**key.as_dict(), "sampling_rate": probe.sorting.sample_rate})
            rows = 2 + writer.write_rows(ephys.Unit, _unit_rows(unit_key, probe, references, first_uid))
            # Both parents are locked against deletion: this transaction's units, and the trials _lock_trials locked.
            with writer.references_checked_in_bulk(unit_key, parents=(ephys.Unit, experiment.SessionTrial)):
                rows += writer.write_blocks(ephys.Unit.UnitTrial, [_unit_trial_block(unit_key, probe)])
                rows += writer.write_blocks(ephys.TrialSpikes, _trial_spike_blocks(unit_key, probe))
            rows += _insert_record(key, folder, probe, files, time.perf_counter() - started)
    except dj.errors.DuplicateError as error:
        raise ProbeAlreadyIngested(f"probe {key.insertion_number} of session {key.session} of subject "
                                   f"{key.subject_id} was ingested by another process ({error})") from None
    return rows


def _lock_trials(key: ProbeKey, trials: np.ndarray) -> None:
    """Lock the session's trials against deletion until the commit (as each foreign key check
    would, once for all) and make sure the ones the probe refers to are still there."""
    table = experiment.SessionTrial
    found = table.connection.query(
        f"SELECT trial FROM {table.full_table_name} WHERE subject_id = %s AND session = %s FOR KEY SHARE",
        args=(key.subject_id, key.session)).fetchall()
    missing = np.setdiff1d(trials, [row[0] for row in found])
    if missing.size:
        raise ProbeWaiting(f"trials {missing[:5].tolist()} of session {key.session} of subject {key.subject_id} "
                           "were deleted meanwhile")


def _unit_rows(unit_key: dict, probe: _Probe, references: _References, first_uid: int) -> Iterator[dict]:
    """One ephys.Unit row per unit (its spike times are views into the grouped spikes)."""
    units, groups = probe.sorting.units, probe.groups
    times = groups.unit_spike_times()
    for i, cluster in enumerate(units.clusters):
        site = int(units.sites[i])
        waveform = None if units.waveforms is None or np.isnan(units.waveforms[i]).all() else units.waveforms[i]
        yield {
            **unit_key, "unit": int(cluster), "unit_uid": first_uid + i, "unit_quality": units.qualities[i],
            "unit_site": site if site > 0 else None, **_site_electrode(references, site),
            "unit_posx": _number(units.x[i]), "unit_posy": _number(units.y[i]),
            "unit_amp": _number(units.amplitude[i]), "unit_snr": _number(units.snr[i]),
            "spike_times": times[i], "waveform": waveform,
        }


def _site_electrode(references: _References, site: int) -> dict:
    """The ElectrodeConfig.Electrode of a recording site (1-based, the .meta's saved-channel order, as the original)."""
    if references.electrodes is None or not 1 <= site <= references.electrodes.size:
        return {"probe_type": None, "electrode_config_name": None, "electrode_group": None, "electrode": None}
    return {**references.config, "electrode_group": ELECTRODE_GROUP, "electrode": int(references.electrodes[site - 1])}


def _number(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _unit_trial_block(unit_key: dict, probe: _Probe) -> Block:
    """UnitTrial: (unit, trial) of every stored trial in which the unit has spikes."""
    columns = np.flatnonzero(probe.trials.stored)
    units, trials = np.nonzero(probe.groups.counts[:, columns] > 0)
    numbers = probe.trials.match.trials[columns]
    return Block({**unit_key, "unit": probe.groups.units[units], "trial": numbers[trials]}, units.size)


def _trial_spike_blocks(unit_key: dict, probe: _Probe) -> Iterator[Block]:
    """TrialSpikes of every unit and stored trial with a go cue, a block of units at a time: spike
    times from the trial's go cue, gathered with one range index per block (no loop over pairs)."""
    groups, trials = probe.groups, probe.trials
    columns = np.flatnonzero(trials.stored & np.isfinite(trials.go_cues))
    numbers, go = trials.match.trials[columns], groups.go_offsets[columns]
    for first, last in _unit_blocks(groups.unit_offsets, columns.size):
        bounds = groups.trial_bounds[first:last]
        starts = bounds[:, columns].reshape(-1)
        lengths = bounds[:, columns + 1].reshape(-1) - starts
        values = groups.unit_times[_ranges(starts, lengths)]
        values -= np.repeat(np.tile(go, last - first), lengths)
        block_units = np.repeat(groups.units[first:last], columns.size)
        yield Block({**unit_key, "unit": block_units, "trial": np.tile(numbers, last - first)}, lengths.size,
                     blob="spike_times", values=values, lengths=lengths)


def _unit_blocks(unit_offsets: np.ndarray, n_trials: int) -> list[tuple[int, int]]:
    """Consecutive unit ranges of about BLOCK_SPIKES spikes and at most BLOCK_ROWS unit x trial rows."""
    n_units = unit_offsets.size - 1
    by_spikes = np.searchsorted(unit_offsets, np.arange(BLOCK_SPIKES, int(unit_offsets[-1]), BLOCK_SPIKES))
    by_rows = np.arange(0, n_units, max(1, BLOCK_ROWS // max(n_trials, 1)))
    edges = np.unique(np.concatenate([by_spikes, by_rows, [0, n_units]]).clip(0, n_units))
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenation of ``arange(s, s + n)`` for each start s and length n."""
    before = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(starts - before, lengths)


def _insert_record(key: ProbeKey, folder: ProbeFolder, probe: _Probe, files: list[_FileRecord],
                   seconds: float) -> int:
    data_root, subpath = _folder_location(folder)
    match, trials = probe.trials.match, probe.trials
    ingest.EphysIngest.insert1(dict(
        key.as_dict(), data_root=data_root, probe_folder=subpath, sorter=folder.sorter, alignment=match.method,
        first_trial=match.first_trial, recorded_trials=int(match.trials.size), matched_trials=int(trials.stored.sum()),
        agreeing_codes=match.agreeing, compared_codes=match.compared, trial_starts=trials.starts_from,
        go_cues=trials.go_from, units=int(probe.groups.units.size), spikes=int(probe.groups.unit_times.size),
        noise_spikes=probe.sorting.noise_spikes, ingest_seconds=seconds,
    ), allow_direct_insert=True)
    ingest.EphysIngest.EphysFile.insert([
        dict(key.as_dict(), ephys_file=f.name, file_size=f.size, file_mtime=f.mtime, file_sha256=f.sha256)
        for f in files], allow_direct_insert=True)
    return 1 + len(files)
