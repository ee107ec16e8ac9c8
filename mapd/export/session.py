"""One ingested session, read from the database into typed arrays on one clock (for NWB files and reports).

Every time here is in seconds on the **session clock**: from the start of
the Bpod session (``experiment.SessionTrial.start_time`` is on it). Trial
events and licks are stored relative to their trial's start, and are moved
onto the session clock by adding it.

Ephys time is mapped trial by trial, at each trial's go cue:
``ephys.TrialSpikes.spike_times`` are relative to the go cue the recording
saw (the bitcode file's ``goCue``, else the trial's sTrig plus its behavior
``go`` event), and that go cue is the behavior trial's first ``go`` event,
``SessionTrial.start_time + TrialEvent.trial_event_time``, on the session
clock. So a spike's session time is that sum plus its ``TrialSpikes`` time.
Anchoring each trial separately keeps the drift between the recording's and
Bpod's clocks from adding up over a session. Spikes that belong to no
stored trial with a go cue (before the first recorded trial, in recorded
trials that are not trials of the behavior session) have no place on the
session clock and are left out.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import numpy as np

from .. import pgcopy
from ..schemas import ephys, experiment, ingest, lab
from ..schemas.experiment import SessionKey

LICK_SIDES = ("left", "right", "middle")

__all__ = ["NoSuchSession", "ProbeData", "SessionData", "SessionSelection", "Subject", "Trials",
           "read_session", "select_sessions"]


class NoSuchSession(Exception):
    """The selection names no ingested session, or a session vanished while it was read."""


@dataclass(frozen=True)
class SessionSelection:
    """Which ingested sessions to export (every field optional; all given ones must hold)."""

    subject_id: int | None = None
    h2o: str | None = None
    since: date | None = None  # on or after
    until: date | None = None  # on or before


@dataclass(frozen=True)
class Subject:
    subject_id: int
    h2o: str
    sex: str  # M | F | Unknown
    date_of_birth: date | None


@dataclass(frozen=True)
class Trials:
    """The session's trials in Bpod order; per-trial arrays of equal length. NaN: the trial has no such event."""

    trial: np.ndarray  # int Bpod trial number
    start: np.ndarray  # (s) session clock
    stop: np.ndarray
    instruction: np.ndarray  # str: left | right | ...
    outcome: np.ndarray  # str: hit | miss | ignore | N/A
    early_lick: np.ndarray  # str: early | early, presample only | no early
    task_protocol: np.ndarray  # int
    auto_water: np.ndarray  # bool
    free_water: np.ndarray  # bool
    sample: np.ndarray  # (s) session clock: first sample event of the trial
    delay: np.ndarray
    go: np.ndarray
    photostim: np.ndarray  # bool: a PhotostimTrial
    bitcode: np.ndarray  # str, '' when none

    def __len__(self) -> int:
        return int(self.trial.size)


@dataclass(frozen=True)
class Licks:
    time: np.ndarray  # (s) session clock, ascending
    side: np.ndarray  # str: left | right | middle
    trial: np.ndarray  # int Bpod trial number


@dataclass(frozen=True)
class Electrodes:
    """The probe's recorded electrodes (its lab.ElectrodeConfig), positions within the probe."""

    electrode: np.ndarray  # int lab.ProbeType.Electrode number (1-based)
    shank: np.ndarray
    x: np.ndarray  # (um) within the probe, (0, 0) is the tip; NaN unknown
    y: np.ndarray


@dataclass(frozen=True)
class ProbeData:
    insertion_number: int
    probe: str | None  # serial number
    probe_type: str | None
    electrode_config: str | None
    sampling_rate: float  # (Hz)
    brain_area: str | None  # InsertionLocation, when entered
    hemisphere: str | None
    electrodes: Electrodes  # empty when the probe's .meta was not known
    # Units, ordered by (clustering_method, unit).
    unit_uid: np.ndarray
    unit: np.ndarray  # the sorter's cluster number
    clustering_method: np.ndarray  # str
    quality: np.ndarray  # str
    site: np.ndarray  # int, -1 unknown
    electrode: np.ndarray  # int lab electrode of the unit's site, -1 unknown
    x: np.ndarray  # (um) position on the probe, NaN unknown
    y: np.ndarray
    amplitude: np.ndarray  # (uV; Kilosort without metrics: NaN)
    snr: np.ndarray
    waveforms: np.ndarray  # (n_units, n_samples) mean waveform on the unit's site, NaN-padded / NaN rows: none
    spike_times: np.ndarray  # (s) session clock, grouped by unit, ascending within a unit
    spike_offsets: np.ndarray  # (n_units + 1,) unit k: spike_times[offsets[k]:offsets[k + 1]]
    # The TrialSpikes rows: spikes relative to each trial's go cue, for aligned rasters.
    aligned_unit: np.ndarray  # (n_rows,) unit index
    aligned_trial: np.ndarray  # (n_rows,) Bpod trial number
    aligned_times: np.ndarray  # (s) from the go cue, rows concatenated
    aligned_offsets: np.ndarray  # (n_rows + 1,)

    @property
    def n_units(self) -> int:
        return int(self.unit.size)

    def unit_spike_times(self, k: int) -> np.ndarray:
        return self.spike_times[self.spike_offsets[k]:self.spike_offsets[k + 1]]


@dataclass(frozen=True)
class SessionData:
    key: SessionKey
    subject: Subject
    session_date: date
    session_time: time
    experimenter: str  # lab.Person username
    experimenter_name: str  # lab.Person fullname ('' when not entered)
    rig: str
    trials: Trials
    licks: Licks
    probes: tuple[ProbeData, ...]

    @property
    def start(self) -> datetime:
        """The session's start (naive, the rig's local time)."""
        return datetime.combine(self.session_date, self.session_time)


def select_sessions(selection: SessionSelection) -> list[SessionKey]:
    """The ingested sessions (``ingest.BehaviorIngest``) the selection names, by subject and date."""
    query = experiment.Session.selected(selection.subject_id, selection.h2o, selection.since,
                                        selection.until) & ingest.BehaviorIngest
    subjects, sessions = query.to_arrays("subject_id", "session", order_by=("subject_id", "session_date"))
    return [SessionKey(int(s), int(n)) for s, n in zip(subjects, sessions)]


def read_session(key: SessionKey) -> SessionData:
    """Everything the exports need of one session; NoSuchSession when it is not in the database."""
    subject = lab.WaterRestriction.proj("water_restriction_number") * lab.Subject.proj("sex", "date_of_birth")
    rows = (experiment.Session * subject & key.as_dict()).to_dicts()
    if not rows:
        raise NoSuchSession(f"no session {key.session} of subject {key.subject_id}")
    row = rows[0]
    people = (lab.Person & {"username": row["username"]}).to_dicts()
    trials = _read_trials(key)
    return SessionData(
        key=key,
        subject=Subject(key.subject_id, row["water_restriction_number"], row["sex"], row["date_of_birth"]),
        session_date=row["session_date"], session_time=_as_time(row["session_time"]),
        experimenter=row["username"], experimenter_name=people[0]["fullname"] if people else "",
        rig=row["rig"], trials=trials, licks=_read_licks(key, trials),
        probes=tuple(_read_probe(key, int(n), trials) for n in
                     (ephys.ProbeInsertion & key.as_dict()).to_arrays("insertion_number", order_by="insertion_number")),
    )


def _as_time(value) -> time:
    # The driver gives a TIME column as a timedelta since midnight.
    if isinstance(value, timedelta):
        return (datetime.min + value).time()
    return value


def _floats(values) -> np.ndarray:
    return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)


# --------------------------------------------------------------------------
# Trials and licks.
# --------------------------------------------------------------------------


def _read_trials(key: SessionKey) -> Trials:
    restriction = key.as_dict()
    numbers, starts, stops = (experiment.SessionTrial & restriction).to_arrays(
        "trial", "start_time", "stop_time", order_by="trial")
    numbers = numbers.astype(np.int64)
    starts = _floats(starts)
    behavior = {int(r["trial"]): r for r in (experiment.BehaviorTrial & restriction).to_dicts()}

    def column(name, default):
        return np.array([behavior[int(t)][name] if int(t) in behavior else default for t in numbers])

    photostim = (experiment.PhotostimTrial & restriction).to_arrays("trial")
    note_trials, notes = (experiment.TrialNote & restriction & {"trial_note_type": "bitcode"}).to_arrays(
        "trial", "trial_note")
    codes = dict(zip(note_trials.astype(np.int64).tolist(), notes))
    return Trials(
        trial=numbers, start=starts, stop=_floats(stops),
        instruction=column("trial_instruction", "none").astype(str), outcome=column("outcome", "N/A").astype(str),
        early_lick=column("early_lick", "no early").astype(str),
        task_protocol=column("task_protocol", -1).astype(np.int64),
        auto_water=column("auto_water", False).astype(bool), free_water=column("free_water", False).astype(bool),
        sample=_first_events(restriction, "sample", numbers, starts),
        delay=_first_events(restriction, "delay", numbers, starts),
        go=_first_events(restriction, "go", numbers, starts),
        photostim=np.isin(numbers, photostim.astype(np.int64)),
        bitcode=np.array([str(codes.get(int(t), "")) for t in numbers], dtype=str),
    )


def _first_events(restriction: dict, event_type: str, numbers: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(s, session clock) each trial's first event of that type; NaN where it has none."""
    trials, times = (experiment.TrialEvent & restriction & {"trial_event_type": event_type}).to_arrays(
        "trial", "trial_event_time")
    first = np.full(numbers.size, np.inf)
    where = np.searchsorted(numbers, trials.astype(np.int64))
    np.minimum.at(first, where, _floats(times))
    first[np.isinf(first)] = np.nan
    return starts + first


def _read_licks(key: SessionKey, trials: Trials) -> Licks:
    query = experiment.ActionEvent & key.as_dict() & [{"action_event_type": f"{side} lick"} for side in LICK_SIDES]
    numbers, kinds, times = query.to_arrays("trial", "action_event_type", "action_event_time")
    numbers = numbers.astype(np.int64)
    session_times = trials.start[np.searchsorted(trials.trial, numbers)] + _floats(times)
    order = np.argsort(session_times, kind="stable")
    sides = np.array([str(kind).removesuffix(" lick") for kind in kinds], dtype=str)
    return Licks(session_times[order], sides[order] if sides.size else np.array([], dtype=str), numbers[order])


# --------------------------------------------------------------------------
# Probes.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Insertion:
    probe: str | None
    probe_type: str | None
    electrode_config: str | None
    sampling_rate: float
    brain_area: str | None
    hemisphere: str | None
    electrodes: Electrodes


def _read_probe(key: SessionKey, number: int, trials: Trials) -> ProbeData:
    restriction = {**key.as_dict(), "insertion_number": number}
    insertion = _read_insertion(restriction)
    units = (ephys.Unit & restriction).proj(
        "unit_uid", "unit_quality", "unit_site", "electrode", "unit_posx", "unit_posy", "unit_amp", "unit_snr",
        "waveform").to_dicts(order_by=("clustering_method", "unit"))
    aligned = _read_trial_spikes(restriction, [(u["clustering_method"], u["unit"]) for u in units])
    times, offsets = _on_session_clock(aligned, len(units), trials)
    return ProbeData(
        insertion_number=number, **vars(insertion),
        unit_uid=np.array([u["unit_uid"] for u in units], dtype=np.int64),
        unit=np.array([u["unit"] for u in units], dtype=np.int64),
        clustering_method=np.array([u["clustering_method"] for u in units], dtype=str),
        quality=np.array([u["unit_quality"] for u in units], dtype=str),
        site=np.array([-1 if u["unit_site"] is None else u["unit_site"] for u in units], dtype=np.int64),
        electrode=np.array([-1 if u["electrode"] is None else u["electrode"] for u in units], dtype=np.int64),
        x=_floats(u["unit_posx"] for u in units), y=_floats(u["unit_posy"] for u in units),
        amplitude=_floats(u["unit_amp"] for u in units), snr=_floats(u["unit_snr"] for u in units),
        waveforms=_padded([u["waveform"] for u in units]),
        spike_times=times, spike_offsets=offsets, **aligned.as_fields(),
    )


def _read_insertion(restriction: dict) -> _Insertion:
    row = (ephys.ProbeInsertion & restriction).to_dicts()[0]
    rates = (ephys.ProbeInsertion.RecordingSystemSetup & restriction).to_arrays("sampling_rate")
    location = (ephys.ProbeInsertion.InsertionLocation & restriction).to_dicts()
    electrodes = Electrodes(*(np.array([], dtype=t) for t in (np.int64, np.int64, np.float64, np.float64)))
    if row["electrode_config_name"] is not None:
        config = {"probe_type": row["probe_type"], "electrode_config_name": row["electrode_config_name"]}
        numbers, shanks, xs, ys = (lab.ElectrodeConfig.Electrode * lab.ProbeType.Electrode & config).to_arrays(
            "electrode", "shank", "x_coord", "y_coord", order_by="electrode")
        electrodes = Electrodes(numbers.astype(np.int64), shanks.astype(np.int64), _floats(xs), _floats(ys))
    return _Insertion(
        probe=row["probe"], probe_type=row["probe_type"], electrode_config=row["electrode_config_name"],
        sampling_rate=float(rates[0]) if len(rates) else math.nan,
        brain_area=location[0]["brain_area"] if location else None,
        hemisphere=location[0]["hemisphere"] if location else None, electrodes=electrodes,
    )


@dataclass(frozen=True)
class _Aligned:
    unit: np.ndarray
    trial: np.ndarray
    times: np.ndarray
    offsets: np.ndarray

    def as_fields(self) -> dict[str, np.ndarray]:
        return {"aligned_unit": self.unit, "aligned_trial": self.trial, "aligned_times": self.times,
                "aligned_offsets": self.offsets}

    @classmethod
    def joined(cls, units: list[int], trials: list[np.ndarray], counts: list[np.ndarray],
               times: list[np.ndarray]) -> _Aligned:
        """From per-unit parts: unit index, its rows' trials, their spike counts and their spikes."""
        counts_all = np.concatenate(counts) if counts else np.array([], dtype=np.int64)
        return cls(np.repeat(np.array(units, dtype=np.int64), [t.size for t in trials]),
                   np.concatenate(trials).astype(np.int64) if trials else np.array([], dtype=np.int64),
                   np.concatenate(times) if times else np.array([], dtype=np.float64),
                   np.concatenate([[0], np.cumsum(counts_all)]).astype(np.int64))


def _read_trial_spikes(restriction: dict, units: list[tuple[str, int]]) -> _Aligned:
    """The probe's TrialSpikes rows by unit then trial, their arrays concatenated.

    On PostgreSQL the server joins each unit's rows into one (below); elsewhere, or when a blob is
    not in the plain layout the probe ingest writes, DataJoint decodes the blobs one by one (about
    20 s for the 120,000 rows of a 10-million-spike probe)."""
    index = {(str(method), int(unit)): k for k, (method, unit) in enumerate(units)}
    aligned = None
    if getattr(ephys.TrialSpikes.connection.adapter, "backend", "") == "postgresql":
        aligned = _trial_spikes_joined_by_server(restriction, index)
    return aligned if aligned is not None else _trial_spikes_decoded(restriction, index)


def _trial_spikes_decoded(restriction: dict, index: dict[tuple[str, int], int]) -> _Aligned:
    rows = (ephys.TrialSpikes & restriction).to_dicts(order_by=("clustering_method", "unit", "trial"))
    arrays = [np.ravel(np.asarray(r["spike_times"], dtype=np.float64)) for r in rows]
    return _Aligned(np.array([index[(r["clustering_method"], int(r["unit"]))] for r in rows], dtype=np.int64),
                    np.array([r["trial"] for r in rows], dtype=np.int64),
                    np.concatenate(arrays) if arrays else np.array([], dtype=np.float64),
                    np.concatenate([[0], np.cumsum([a.size for a in arrays])]).astype(np.int64))


# The probe ingest writes TrialSpikes blobs in DataJoint's plain layout of a float64 vector (mapd.pgcopy): a
# 29-byte head, then the values. The head's element count is its only part that differs between such blobs.
_HEAD_BYTES = pgcopy.BLOB_HEAD.itemsize
_COUNT_AT = pgcopy.BLOB_HEAD.fields["n"][1]  # byte offset of the element count (uint64)
_AFTER_COUNT = _COUNT_AT + 8


def _trial_spikes_joined_by_server(restriction: dict, index: dict[tuple[str, int], int]) -> _Aligned | None:
    """One row per unit from PostgreSQL: its trials, each row's spike count and all its spike values
    without the blob heads, each as one bytea, in one binary COPY; None when a blob is not plain.

    The server does the joining, so 120,000 rows (80 MB) cost no Python loop and no hex decoding."""
    table = ephys.TrialSpikes
    head = pgcopy.plain_blob_head(0)
    start, kind = head[:_COUNT_AT], head[_AFTER_COUNT:]
    ordered = "ORDER BY trial"
    select = (
        f"SELECT clustering_method, unit, "
        f"string_agg(int4send(trial::int4), ''::bytea {ordered}), "
        f"string_agg(int4send((length(spike_times) - {_HEAD_BYTES}) / 8), ''::bytea {ordered}), "
        f"string_agg(substring(spike_times FROM {_HEAD_BYTES + 1}), ''::bytea {ordered}), "
        f"bool_and(length(spike_times) >= {_HEAD_BYTES} AND mod(length(spike_times) - {_HEAD_BYTES}, 8) = 0 "
        f"AND substring(spike_times FROM 1 FOR {len(start)}) = %s "
        f"AND substring(spike_times FROM {_AFTER_COUNT + 1} FOR {len(kind)}) = %s) "  # SQL counts from 1
        f"FROM {table.full_table_name} WHERE subject_id = %s AND session = %s AND insertion_number = %s "
        f"GROUP BY clustering_method, unit ORDER BY clustering_method, unit")
    args = (start, kind, restriction["subject_id"], restriction["session"], restriction["insertion_number"])
    cursor = table.connection._conn.cursor()
    stream = io.BytesIO()
    cursor.copy_expert(cursor.mogrify(f"COPY ({select}) TO STDOUT WITH (FORMAT binary)", args).decode(), stream)
    units, trials, counts, times = [], [], [], []
    for method, unit, trial_bytes, count_bytes, value_bytes, plain in pgcopy.read_rows(stream.getbuffer()):
        if bytes(plain) != b"\x01":
            return None
        units.append(index[(bytes(method).decode(), struct.unpack(">i", unit)[0])])
        trials.append(np.frombuffer(trial_bytes, dtype=">i4"))
        counts.append(np.frombuffer(count_bytes, dtype=">i4").astype(np.int64))
        times.append(np.frombuffer(value_bytes, dtype="<f8"))
    return _Aligned.joined(units, trials, counts, times)


def _on_session_clock(aligned: _Aligned, n_units: int, trials: Trials) -> tuple[np.ndarray, np.ndarray]:
    """Every TrialSpikes spike on the session clock (trial's go cue + time from it), grouped by unit."""
    lengths = np.diff(aligned.offsets)
    go = trials.go[np.searchsorted(trials.trial, aligned.trial)] if aligned.trial.size else np.array([])
    times = aligned.times + np.repeat(go, lengths)
    per_unit = np.bincount(aligned.unit, weights=lengths, minlength=n_units).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(per_unit)])
    # Rows come by unit then trial: within a unit the trials follow each other; two go cues that the
    # recording and Bpod saw a little apart can make neighbouring trials overlap by milliseconds.
    for k in range(n_units):
        segment = times[offsets[k]:offsets[k + 1]]
        if segment.size > 1 and np.any(np.diff(segment) < 0):
            segment.sort(kind="stable")
    return times, offsets


def _padded(waveforms: list) -> np.ndarray:
    """(n_units, longest) float64, NaN where a unit has no waveform or a shorter one."""
    arrays = [np.array([]) if w is None else np.ravel(np.asarray(w, dtype=np.float64)) for w in waveforms]
    width = max((a.size for a in arrays), default=0)
    out = np.full((len(arrays), width), np.nan)
    for k, values in enumerate(arrays):
        out[k, :values.size] = values
    return out
