"""Generate realistic Bpod ``SessionData`` mat-files for tests and benchmarks.

The files mimic the real MAP session ``behavior/dl25_tw2_20180225_102508.mat``
(Bpod 0.7-0.9, delay-response protocol): same field names and order, same
52-state machine, the same kind of state sequences (TrigTrialStart,
PreSamplePeriod, the OffState/OnState train, SamplePeriod with
EarlyLickSample restarts, DelayPeriod with EarlyLickDelay restarts,
ResponseCue, AnswerPeriod, Reward / TimeOut / NoResponse, StopLicking with
StopLickingReturn restarts, TrialEnd) and the same event codes
(69 Port1In, 70 Port1Out, 71 Port2In, 72 Port2Out, 3 WavePlayer1_3, 109 Tup),
present both as codes in ``RawData`` and by name in ``RawEvents``.

Besides the file, :func:`write_session` returns what a correct ingest must
produce for every trial (:class:`GeneratedSession`), derived from the generated
arrays by the MAP rules (shared/FORMATS.md section 1), without using any
parser code of the repository.

Both MATLAB v5 (scipy.io.savemat) and v7.3 (HDF5 written with h5py in MATLAB's
layout: 512-byte header as user block, ``MATLAB_class`` attributes, ``#refs#``
for cell and struct-array elements, transposed arrays) can be written.
All randomness comes from ``numpy.random.default_rng(seed)``: the same
arguments give byte-identical files.

Run ``python test_data/bpodgen.py --help`` for the command line.
"""

from __future__ import annotations

import argparse
import io
import os
import struct
import sys
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
from h5py import h5a, h5d, h5g, h5p, h5r, h5s, h5t

Fmt = Literal["v5", "v7.3"]

# --------------------------------------------------------------------------
# Constants copied from the real session file.
# --------------------------------------------------------------------------

TICKS_PER_S = 10_000  # Bpod 0.7 timestamps have 100 us resolution

STATE_NAMES: tuple[str, ...] = (
    "TrigTrialStart",
    "PreSamplePeriod",
    *[f"{kind}State{k}" for k in range(1, 17) for kind in ("Off", "On")],
    "OffState17",
    "SamplePeriod",
    "EarlyLickSample",
    "DelayPeriod",
    "EarlyLickDelay",
    "ResponseCue",
    "GiveLeftDrop",
    "GiveRightDrop",
    "GiveLeftDropShort",
    "GiveRightDropShort",
    "AnswerPeriod",
    "Reward",
    "RewardConsumption",
    "NoResponse",
    "TimeOut",
    "StopLicking",
    "StopLickingReturn",
    "TrialEnd",
)

EVENT_CODES: dict[str, int] = {
    "Port1In": 69,
    "Port1Out": 70,
    "Port2In": 71,
    "Port2Out": 72,
    "WavePlayer1_3": 3,
    "Tup": 109,
}

# The states whose absence makes the MAP ingest skip a trial (FORMATS.md).
REQUIRED_STATES: tuple[str, ...] = (
    "PreSamplePeriod",
    "SamplePeriod",
    "DelayPeriod",
    "ResponseCue",
    "StopLicking",
    "TrialEnd",
)

# States removed together with a required one (their companions).
_COMPANION_STATES = {
    "SamplePeriod": ("EarlyLickSample",),
    "DelayPeriod": ("EarlyLickDelay",),
    "StopLicking": ("StopLickingReturn",),
}

# StimTrials codes that are photostim protocols (the original pipeline's 4, 5 and 6); another
# non-zero code (the real file has 2) is a trial note "photostim code" and no photostim.
PHOTOSTIM_PROTOCOLS: tuple[int, ...] = (4, 5, 6)
TRIALEND_DURATION = 0.0  # the trialend event is a point event

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

BAD_KINDS: tuple[str, ...] = ("empty", "truncated", "not_mat", "no_sessiondata", "missing_fields")


# --------------------------------------------------------------------------
# A tiny MATLAB value model shared by the v5 and v7.3 writers.
#   float/int -> 1x1 double, bool -> 1x1 logical, str -> 1xN char,
#   np.ndarray (2-D, MATLAB dims) -> numeric/logical array,
#   dict -> 1x1 struct, Cell -> cell array, StructArray -> struct array.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """A MATLAB cell array: ``items`` is an object array with MATLAB's dims."""

    items: np.ndarray


@dataclass(frozen=True)
class StructArray:
    """A MATLAB struct array: an object array of dicts (same keys) with MATLAB's dims."""

    elements: np.ndarray
    fields: tuple[str, ...]


def cell_row(items: Sequence[Any]) -> Cell:
    """A 1xN cell array."""
    arr = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        arr[0, i] = item
    return Cell(arr)


def struct_row(elements: Sequence[dict[str, Any]]) -> StructArray:
    """A 1xN struct array (every element must have the same fields)."""
    fields = tuple(elements[0]) if elements else ()
    arr = np.empty((1, len(elements)), dtype=object)
    for i, element in enumerate(elements):
        if tuple(element) != fields:
            raise ValueError("struct array elements must have the same fields")
        arr[0, i] = element
    return StructArray(arr, fields)


def row(values: Iterable[float] | np.ndarray) -> np.ndarray:
    """A 1xN double row vector."""
    return np.asarray(values, dtype=np.float64).reshape(1, -1)


# --------------------------------------------------------------------------
# Expected ingest results.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectedEvent:
    """One MAP trial event: time is the state entry (s from trial start)."""

    kind: str  # 'presample' | 'sample' | 'delay' | 'go' | 'trialend' (only in ExpectedTrial.trial_events)
    time: float
    duration: float  # after NaN correction
    raw_duration: float  # as the file gives it (NaN for NaN GUI values)
    corrected: bool  # True when raw_duration was NaN and was replaced


@dataclass(frozen=True)
class ExpectedTrial:
    """What a correct ingest derives from one trial of the file.

    Values are computed for every trial from the file's data. ``events`` is
    empty for a skipped trial (the ingest stores nothing for it); the NaN
    fallback ("last good one of its kind") runs over the non-skipped trials
    in file order, starting from nothing (0.0) at the file's first trial.
    """

    index: int  # 0-based position in the file
    trial_type: int
    instruction: str | None  # 'left' | 'right' (None without GUI.Reversal)
    outcome: str  # 'hit' | 'miss' | 'ignore'
    early_lick: str  # 'early' | 'no early'
    protocol_type: int | None
    autolearn: int | None
    bitcode: str | None
    start_timestamp: float  # TrialStartTimestamp
    events: tuple[ExpectedEvent, ...]
    left_licks: tuple[float, ...]  # Port1In (code 69), s from trial start
    right_licks: tuple[float, ...]  # Port2In (code 71), s from trial start
    skip_reason: str | None  # None, 'missing states: A, B', 'ProtocolType missing', 'ProtocolType 2 < 3'
    missing_states: tuple[str, ...]
    nan_durations: tuple[str, ...]  # event kinds whose GUI duration is NaN
    visited_states: tuple[str, ...]  # state sequence (names), for debugging
    stim_code: float  # StimTrials (0: no photostim)
    photostim_time: float | None  # first DelayPeriod entry for a code in PHOTOSTIM_PROTOCOLS, else None
    trial_end: float | None  # first TrialEnd entry (None for a skipped trial)

    @property
    def skipped(self) -> bool:
        return self.skip_reason is not None

    @property
    def trial_events(self) -> tuple[ExpectedEvent, ...]:
        """Every trial event an ingest records: ``events`` (the timed MAP events), then trialend."""
        if self.trial_end is None:
            return self.events
        return (*self.events, ExpectedEvent("trialend", self.trial_end, TRIALEND_DURATION, TRIALEND_DURATION, False))

    @property
    def trial_number(self) -> int:
        """Bpod's trial number in the file (1-based, skipped trials counted)."""
        return self.index + 1

    @property
    def photostim_protocol(self) -> int | None:
        return int(self.stim_code) if self.photostim_time is not None else None

    @property
    def notes(self) -> dict[str, str]:
        """The trial notes of an ingested trial."""
        notes = {}
        if self.protocol_type is not None:
            notes["protocol #"] = str(self.protocol_type)
        if self.autolearn is not None:
            notes["autolearn"] = str(self.autolearn)
        if self.bitcode is not None:
            notes["bitcode"] = self.bitcode
        if self.stim_code != 0 and self.photostim_time is None:
            code = float(self.stim_code)
            notes["photostim code"] = str(int(code)) if code.is_integer() else repr(code)
        return notes


@dataclass(frozen=True)
class GeneratedSession:
    """A written session file and the values a correct ingest must produce."""

    path: Path
    fmt: str
    h2o: str
    protocol: str
    start: datetime
    n_trials: int
    trials: tuple[ExpectedTrial, ...]
    task: str = "audio delay"
    task_protocol: int = 1

    @property
    def skipped(self) -> dict[int, str]:
        """Trial index -> skip reason."""
        return {t.index: t.skip_reason for t in self.trials if t.skip_reason is not None}

    @property
    def ingested(self) -> tuple[ExpectedTrial, ...]:
        return tuple(t for t in self.trials if t.skip_reason is None)


# --------------------------------------------------------------------------
# File names.
# --------------------------------------------------------------------------


def session_filename(h2o: str, protocol: str, start: datetime) -> str:
    return f"{h2o}_{protocol}_{start:%Y%m%d}_{start:%H%M%S}.mat"


def session_path(root: str | os.PathLike[str], h2o: str, protocol: str, start: datetime) -> Path:
    """``root/{h2o}/{protocol}/Session Data/{h2o}_{protocol}_{YYYYMMDD}_{HHMMSS}.mat``."""
    return Path(root) / h2o / protocol / "Session Data" / session_filename(h2o, protocol, start)


def datenum(when: datetime) -> float:
    """MATLAB datenum (days since year 0) of a naive datetime."""
    midnight = when.replace(hour=0, minute=0, second=0, microsecond=0)
    return when.toordinal() + 366 + (when - midnight).total_seconds() / 86400.0


# --------------------------------------------------------------------------
# Trial simulation (integer ticks of 100 us, so timestamps are exact).
# --------------------------------------------------------------------------

# Nominal state timers (ticks), as in the real file.
_T_TRIG = 5000
_T_SHORT = 100  # PreSamplePeriod, On/Off states, EarlyLick*, StopLickingReturn
_T_OFF17 = 1000
_T_CUE = 500
_T_NORESPONSE = 10_000
_T_TRIALEND = 2500
_WAVE_LAG = 2  # WavePlayer event 0.2 ms after the sound is triggered
_WAVE_BEFORE_END = 498  # sample sound ends 49.8 ms before the sample period
_WAVE_CUE_END = 1502  # go cue sound ends 150.2 ms after ResponseCue entry


@dataclass
class _Timers:
    """The timer values (ticks) the state machine really used."""

    sample: int
    delay: int
    answer: int
    valve: int
    consumption: int
    stop_licking: int
    timeout: int


@dataclass
class _TrialSim:
    """Builds one trial: visited states and events, in ticks."""

    rng: np.random.Generator
    names: tuple[str, ...]
    visits: list[tuple[str, int]] = field(default_factory=list)
    events: list[tuple[int, int, str]] = field(default_factory=list)  # (tick, seq, name)
    tongue_free: int = 0  # tick when the last lick's PortOut happened

    def has(self, state: str) -> bool:
        return state in self.names

    def visit(self, state: str, t: int) -> None:
        self.visits.append((state, t))

    def event(self, name: str, t: int) -> None:
        self.events.append((t, len(self.events), name))

    def timer(self, state: str, t: int, duration: int) -> int:
        """A state left by its timer (Tup)."""
        self.visit(state, t)
        self.event("Tup", t + duration)
        return t + duration

    def lick(self, port: int, t: int) -> int:
        """A lick on port 1 (left) or 2 (right) at tick t; returns PortOut tick."""
        contact = int(self.rng.integers(150, 900))
        self.event(f"Port{port}In", t)
        self.event(f"Port{port}Out", t + contact)
        self.tongue_free = t + contact
        return t + contact

    def next_lick_time(self, earliest: int) -> int:
        """Earliest plausible lick onset at or after ``earliest``."""
        return max(earliest, self.tongue_free + int(self.rng.integers(300, 1200)))

    def bout(self, port: int, start: int, end: int, n_max: int) -> None:
        """Licks that change no state: onsets in [start, end)."""
        t = self.next_lick_time(start)
        for _ in range(int(self.rng.integers(1, n_max + 1))):
            if t >= end:
                break
            self.lick(port, t)
            t = self.next_lick_time(t)


def _random_port(rng: np.random.Generator) -> int:
    return int(rng.integers(1, 3))


def _simulate_trial(
    rng: np.random.Generator, names: tuple[str, ...], timers: _Timers, correct_port: int
) -> tuple[_TrialSim, int]:
    """Run the delay-response state machine once; returns the trial and its end tick."""
    sim = _TrialSim(rng, names)
    t = sim.timer("TrigTrialStart", 0, _T_TRIG)
    if sim.has("PreSamplePeriod"):
        t = sim.timer("PreSamplePeriod", t, _T_SHORT)
    for k in range(1, 17):
        t = sim.timer(f"OffState{k}", t, _T_SHORT)
        t = sim.timer(f"OnState{k}", t, _T_SHORT)
    t = sim.timer("OffState17", t, _T_OFF17)
    if rng.random() < 0.1:  # licks before the sample change nothing
        sim.bout(_random_port(rng), int(rng.integers(0, t)), t, 4)
    if sim.has("SamplePeriod"):
        t = _sample_phase(sim, t, timers.sample)
    if sim.has("DelayPeriod"):
        t = _delay_phase(sim, t, timers.delay)
    t = _response_phase(sim, t, timers, correct_port)
    if sim.has("StopLicking"):
        t = _stop_licking_phase(sim, t, timers.stop_licking)
    if sim.has("TrialEnd"):
        t = sim.timer("TrialEnd", t, _T_TRIALEND)
    return sim, t


def _sample_phase(sim: _TrialSim, t: int, duration: int) -> int:
    """SamplePeriod; an early lick goes to EarlyLickSample and restarts the sample."""
    rng = sim.rng
    for restart in range(8):
        sim.visit("SamplePeriod", t)
        sim.event("WavePlayer1_3", t + _WAVE_LAG)
        lick_at = None
        if restart < 6 and rng.random() < (0.12 if restart == 0 else 0.5):
            lick_at = sim.next_lick_time(t + int(rng.integers(200, duration)))
        if lick_at is not None and lick_at < t + duration:
            if t + duration - _WAVE_BEFORE_END < lick_at:
                sim.event("WavePlayer1_3", t + duration - _WAVE_BEFORE_END)
            sim.lick(_random_port(rng), lick_at)
            t = sim.timer("EarlyLickSample", lick_at, _T_SHORT)
            continue
        sim.event("WavePlayer1_3", t + duration - _WAVE_BEFORE_END)
        sim.event("Tup", t + duration)
        return t + duration
    raise AssertionError("unreachable: the last sample attempt has no early lick")


def _delay_phase(sim: _TrialSim, t: int, duration: int) -> int:
    """DelayPeriod; an early lick goes to EarlyLickDelay and restarts the delay."""
    rng = sim.rng
    for restart in range(6):
        sim.visit("DelayPeriod", t)
        lick_at = None
        if restart < 4 and rng.random() < (0.1 if restart == 0 else 0.4):
            lick_at = sim.next_lick_time(t + int(rng.integers(200, duration)))
        if lick_at is not None and lick_at < t + duration:
            sim.lick(_random_port(rng), lick_at)
            t = sim.timer("EarlyLickDelay", lick_at, _T_SHORT)
            continue
        sim.event("Tup", t + duration)
        return t + duration
    raise AssertionError("unreachable: the last delay attempt has no early lick")


def _response_phase(sim: _TrialSim, t: int, timers: _Timers, correct_port: int) -> int:
    """ResponseCue, AnswerPeriod and its outcome (Reward, TimeOut or NoResponse)."""
    rng = sim.rng
    for attempt in range(4):
        if sim.has("ResponseCue"):
            sim.event("WavePlayer1_3", t + _WAVE_LAG)
            sim.event("WavePlayer1_3", t + _WAVE_CUE_END)
            t = sim.timer("ResponseCue", t, _T_CUE)
        sim.visit("AnswerPeriod", t)
        plan = rng.choice(["hit", "miss", "ignore"], p=[0.7, 0.2, 0.1])
        if plan != "ignore":
            lick_at = sim.next_lick_time(t + int(rng.integers(300, 8000)))
            if lick_at < t + timers.answer:
                port = correct_port if plan == "hit" else 3 - correct_port
                sim.lick(port, lick_at)
                if plan == "hit":
                    end = sim.timer("Reward", lick_at, timers.valve)
                    sim.visit("RewardConsumption", end)
                    sim.bout(port, end, end + timers.consumption, 10)
                    sim.event("Tup", end + timers.consumption)
                    return end + timers.consumption
                sim.visit("TimeOut", lick_at)
                if rng.random() < 0.5:
                    sim.bout(_random_port(rng), lick_at, lick_at + timers.timeout, 5)
                sim.event("Tup", lick_at + timers.timeout)
                return lick_at + timers.timeout
        sim.event("Tup", t + timers.answer)
        t = sim.timer("NoResponse", t + timers.answer, _T_NORESPONSE)
        # As in the real file, NoResponse sometimes goes back to the cue.
        if attempt == 3 or rng.random() >= 0.3:
            return t
    return t


def _stop_licking_phase(sim: _TrialSim, t: int, duration: int) -> int:
    """StopLicking; a lick goes to StopLickingReturn and restarts it."""
    rng = sim.rng
    for restart in range(12):
        sim.visit("StopLicking", t)
        lick_at = None
        if restart < 10 and rng.random() < (0.2 if restart == 0 else 0.6):
            lick_at = sim.next_lick_time(t + int(rng.integers(100, 3000)))
        if lick_at is not None and lick_at < t + duration:
            sim.lick(_random_port(rng), lick_at)
            t = sim.timer("StopLickingReturn", lick_at, _T_SHORT)
            continue
        sim.event("Tup", t + duration)
        return t + duration
    raise AssertionError("unreachable: the last StopLicking has no lick")


# --------------------------------------------------------------------------
# One trial's MATLAB data.
# --------------------------------------------------------------------------


@dataclass
class _TrialData:
    names: tuple[str, ...]
    state_data: np.ndarray  # 1-based indices into names (float64, MATLAB double)
    state_ts: np.ndarray  # entry times + final exit (s)
    event_codes: np.ndarray
    event_ts: np.ndarray
    raw_events: dict[str, Any]  # RawEvents.Trial{i}: {'States': ..., 'Events': ...}
    duration: float  # s


def _trial_data(sim: _TrialSim, end: int) -> _TrialData:
    index = {name: i + 1 for i, name in enumerate(sim.names)}
    entries = [t for _, t in sim.visits]
    state_ts = np.array(entries + [end], dtype=np.float64) / TICKS_PER_S
    state_data = np.array([index[s] for s, _ in sim.visits], dtype=np.float64)

    events = sorted(sim.events)
    event_ts = np.array([t for t, _, _ in events], dtype=np.float64) / TICKS_PER_S
    event_codes = np.array([EVENT_CODES[n] for _, _, n in events], dtype=np.float64)

    # RawEvents.States: visited states in order of first visit, then the others.
    spans: dict[str, list[tuple[float, float]]] = {}
    for k, (state, _) in enumerate(sim.visits):
        spans.setdefault(state, []).append((state_ts[k], state_ts[k + 1]))
    states: dict[str, np.ndarray] = {s: np.array(v, dtype=np.float64) for s, v in spans.items()}
    for state in sim.names:
        if state not in states:
            states[state] = np.array([[np.nan, np.nan]])
    # RawEvents.Events: by name, in order of first occurrence.
    by_name: dict[str, list[float]] = {}
    for k, (_, _, name) in enumerate(events):
        by_name.setdefault(name, []).append(event_ts[k])
    ev = {name: row(times) for name, times in by_name.items()}
    return _TrialData(
        names=sim.names,
        state_data=state_data.reshape(1, -1),
        state_ts=state_ts.reshape(1, -1),
        event_codes=event_codes.reshape(1, -1),
        event_ts=event_ts.reshape(1, -1),
        raw_events={"States": states, "Events": ev},
        duration=end / TICKS_PER_S,
    )


# --------------------------------------------------------------------------
# Settings (GUI, GUIPanels, GUIMeta, ...), as in the real file.
# --------------------------------------------------------------------------

_PROTOCOL_STRINGS = (
    "Water-Valve-Calibration",
    "Licking",
    "AutoAssist_step1",
    "NoAutoAssist_step2",
    "DelayEnforce_step3",
    "SampleDelayEnforce_step4",
    "Fixed_step5",
    "Prep_delay_step6",
)


def _map_gui(
    protocol_type: float, reversal: int, autolearn: int, durations: tuple[float, float, float], random_id: str
) -> dict[str, Any]:
    sample, delay, answer = durations
    return {
        "WaterValveTime": 0.03,
        "SamplePeriod": sample,
        "DelayPeriod": delay,
        "AnswerPeriod": answer,
        "ConsumptionPeriod": 1.5,
        "StopLickingPeriod": 1.5,
        "TimeOut": 1.0,
        "LickportMotorPosition": 127000.0,
        "LickportLeftPos": 0.0,
        "LickportRightPos": 0.0,
        "ProtocolType": float(protocol_type),
        "Autolearn": float(autolearn),
        "Autowater": 2.0,
        "Reversal": float(reversal),
        "MaxSame": 3.0,
        "NoTrialProb": 0.5,
        "Min_correct_Right": 2.0,
        "Max_incorrect_Right": 2.0,
        "Min_correct_Left": 2.0,
        "Max_incorrect_Left": 2.0,
        "randomID": random_id,
    }


def _map_panels() -> dict[str, Any]:
    return {
        "Behavior": cell_row(
            [
                "WaterValveTime",
                "SamplePeriod",
                "DelayPeriod",
                "AnswerPeriod",
                "ConsumptionPeriod",
                "StopLickingPeriod",
                "TimeOut",
            ]
        ),
        "PolePositions": cell_row(["LickportMotorPosition", "LickportLeftPos", "LickportRightPos"]),
        "Protocol": cell_row(["ProtocolType"]),
        "TrialParameters": cell_row(
            [
                "Autolearn",
                "Autowater",
                "Reversal",
                "MaxSame",
                "NoTrialProb",
                "Min_correct_Right",
                "Max_incorrect_Right",
                "Min_correct_Left",
                "Max_incorrect_Left",
            ]
        ),
    }


def _map_meta() -> dict[str, Any]:
    def popup(strings: Sequence[str]) -> dict[str, Any]:
        return {"Style": "popupmenu", "String": cell_row(list(strings))}

    return {
        "ProtocolType": popup(_PROTOCOL_STRINGS),
        "Autolearn": popup(["On", "Off", "fixed", "antiBias"]),
        "Autowater": popup(["On", "Off"]),
        "Reversal": popup(["Off", "On"]),
    }


def _other_lab_gui() -> dict[str, Any]:
    """GUI of another lab's protocol: none of the MAP fields."""
    return {
        "WaterValveTime": 0.03,
        "RewardAmount": 3.0,
        "StimulusDuration": 0.5,
        "ResponseWindow": 2.0,
        "ITI": 2.0,
    }


def _other_lab_panels() -> dict[str, Any]:
    return {"Parameters": cell_row(["WaterValveTime", "RewardAmount", "StimulusDuration", "ResponseWindow", "ITI"])}


def _other_lab_meta() -> dict[str, Any]:
    return {"RewardAmount": {"Style": "edit"}}


# --------------------------------------------------------------------------
# Session assembly.
# --------------------------------------------------------------------------


def _trial_types(rng: np.random.Generator, n: int, max_same: int = 3) -> np.ndarray:
    """Random 0/1 trial types with at most ``max_same`` equal in a row (GUI.MaxSame)."""
    types = np.zeros(n, dtype=np.float64)
    run = 0
    for i in range(n):
        tt = float(rng.integers(0, 2))
        if i and run >= max_same and tt == types[i - 1]:
            tt = 1.0 - tt
        run = run + 1 if i and tt == types[i - 1] else 1
        types[i] = tt
    return types


def _state_names_without(missing: str) -> tuple[str, ...]:
    drop = {missing, *_COMPANION_STATES.get(missing, ())}
    return tuple(s for s in STATE_NAMES if s not in drop)


def _as_per_trial(value: int | Sequence[int], n: int, what: str) -> list[int]:
    if isinstance(value, (int, np.integer)):
        return [int(value)] * n
    values = [int(v) for v in value]
    if len(values) != n:
        raise ValueError(f"{what} has {len(values)} values for {n} trials")
    return values


def _bitcode(rng: np.random.Generator) -> str:
    return "".join("1" if b else "0" for b in rng.integers(0, 2, 16))


@dataclass
class _Built:
    session_data: dict[str, Any]
    trials: tuple[ExpectedTrial, ...]


def build_session(
    *,
    n_trials: int = 500,
    start: datetime = datetime(2018, 2, 25, 10, 25, 8),
    seed: int = 0,
    protocol_type: int | Sequence[int] = 7,
    reversal: int = 1,
    autolearn: int = 1,
    nan_duration_trials: Iterable[int] = (),
    missing_state_trials: Iterable[int] = (),
    no_gui_fields: bool = False,
    trial_start_offset: float = 0.0,
    stim_codes: float | Sequence[float] | None = None,
) -> _Built:
    """Build SessionData (MATLAB value model) and the expected ingest results.

    ``missing_state_trials``: the k-th listed trial lacks the required state
    ``REQUIRED_STATES[k % 6]`` (and its companion EarlyLick*/StopLickingReturn
    state) in its state machine. ``nan_duration_trials``: GUI SamplePeriod,
    DelayPeriod and AnswerPeriod are NaN (the state machine still ran with
    the nominal timers). ``stim_codes``: StimTrials, one value or one per
    trial; by default code 2 in about 15% of the trials, as in the real file.
    """
    if n_trials < 1:
        raise ValueError("n_trials must be >= 1")
    if reversal not in (1, 2):
        raise ValueError("reversal must be 1 or 2")
    rng = np.random.default_rng(seed)
    ptypes = _as_per_trial(protocol_type, n_trials, "protocol_type")
    nan_trials = set(nan_duration_trials)
    missing_order = list(dict.fromkeys(missing_state_trials))
    missing_of = {i: REQUIRED_STATES[k % len(REQUIRED_STATES)] for k, i in enumerate(missing_order)}
    for i in (*nan_trials, *missing_of):
        if not 0 <= i < n_trials:
            raise ValueError(f"trial index {i} out of range for {n_trials} trials")

    nominal = (1.2, 1.2, 1.5)  # SamplePeriod, DelayPeriod, AnswerPeriod (s)
    timers = _Timers(
        sample=12_000, delay=12_000, answer=15_000, valve=300, consumption=15_000, stop_licking=15_000, timeout=10_000
    )
    trial_types = _trial_types(rng, n_trials)
    trials: list[_TrialData] = []
    settings: list[dict[str, Any]] = []
    starts_ticks: list[int] = []
    t_start = 0
    # ProtocolHistory rows: [protocol, trials done with it, performance].
    history = [
        [float(ptypes[0]), float(rng.integers(2, 300)), float(np.round(rng.random(), 3))]
        for _ in range(int(rng.integers(1, 6)))
    ]
    # Identical per-trial values are shared objects: the v5 writer then serializes them once.
    panels, meta = (_other_lab_panels(), _other_lab_meta()) if no_gui_fields else (_map_panels(), _map_meta())
    name_cells: dict[tuple[str, ...], Cell] = {}
    for i in range(n_trials):
        names = _state_names_without(missing_of[i]) if i in missing_of else STATE_NAMES
        # Reversal 1: TrialType 1 -> left (Port1); Reversal 2: 1 -> right.
        left = (trial_types[i] == 1) == (reversal == 1)
        sim, end = _simulate_trial(rng, names, timers, 1 if left else 2)
        trials.append(_trial_data(sim, end))
        starts_ticks.append(t_start)
        gap = int(rng.integers(600, 1000)) if rng.random() > 0.02 else int(rng.integers(300_000, 2_000_000))
        t_start += end + gap

        durations = (np.nan, np.nan, np.nan) if i in nan_trials else nominal
        if no_gui_fields:
            gui = _other_lab_gui()
        else:
            gui = _map_gui(ptypes[i], reversal, autolearn, durations, _bitcode(rng))
        performance = float(np.round(min(1.0, 0.025 * (i + 1)), 3))
        settings.append(
            {
                "GUI": gui,
                "GUIPanels": panels,
                "GUIMeta": meta,
                "ProtocolHistory": np.array(history + [[float(ptypes[i]), float(i + 2), performance]]),
                "LickPortMove": 0.0,
                "GaveFreeReward": row([0.0, 0.0, 154.0 + i]),
            }
        )

    trial_start = trial_start_offset + np.array(starts_ticks, dtype=np.float64) / TICKS_PER_S
    t0 = datenum(start)
    probes = np.where(rng.random(n_trials) < 0.1, rng.choice([1.6, 2.0], n_trials), 0.0)
    stims = np.where(rng.random(n_trials) < 0.15, 2.0, 0.0)  # drawn anyway: the same seed, the same file
    if stim_codes is not None:
        stims = np.broadcast_to(np.asarray(stim_codes, dtype=np.float64), (n_trials,)).copy()
    session_data: dict[str, Any] = {
        "TrialTypes": row(trial_types),
        "LickPortMotorPosition": row(np.full(n_trials, 127000.0)),
        "ProbeTrials": row(probes),
        "StimTrials": row(stims),
        "MATLABStartTimes": row(t0 + (trial_start - trial_start_offset) / 86400.0),
        "Info": {
            "BpodVersion": "Bpod 0.7-0.9",
            "SessionDate": f"{start.day:02d}-{_MONTHS[start.month - 1]}-{start.year:04d}",
            "SessionStartTime_UTC": f"{start:%H:%M:%S}",
            "SessionStartTime_MATLAB": t0,
        },
        "nTrials": float(n_trials),
        "RawEvents": {"Trial": cell_row([t.raw_events for t in trials])},
        "RawData": {
            "OriginalStateNamesByNumber": cell_row(
                [name_cells.setdefault(t.names, cell_row(list(t.names))) for t in trials]
            ),
            "OriginalStateData": cell_row([t.state_data for t in trials]),
            "OriginalEventData": cell_row([t.event_codes for t in trials]),
            "OriginalStateTimestamps": cell_row([t.state_ts for t in trials]),
            "OriginalEventTimestamps": cell_row([t.event_ts for t in trials]),
        },
        "TrialStartTimestamp": row(trial_start),
        "SettingsFile": settings[-1],
        "TrialSettings": struct_row(settings),
    }
    expected = _expected_trials(trials, settings, trial_types, trial_start, stims)
    return _Built(session_data, expected)


# --------------------------------------------------------------------------
# Expected values by the MAP rules (FORMATS.md section 1).
# --------------------------------------------------------------------------


def _entries(names: tuple[str, ...], state_data: np.ndarray, state_ts: np.ndarray, state: str) -> list[float]:
    """Entry times of every visit of ``state``."""
    if state not in names:
        return []
    number = names.index(state) + 1
    return [float(state_ts[k]) for k in np.flatnonzero(state_data == number)]


def _gui_number(gui: dict[str, Any], key: str) -> float | None:
    value = gui.get(key)
    return None if value is None else float(value)


def _expected_trials(
    trials: list[_TrialData],
    settings: list[dict[str, Any]],
    trial_types: np.ndarray,
    trial_start: np.ndarray,
    stims: np.ndarray,
) -> tuple[ExpectedTrial, ...]:
    last_good: dict[str, float] = {}  # kind -> last non-NaN duration
    out: list[ExpectedTrial] = []
    for i, trial in enumerate(trials):
        gui = settings[i]["GUI"]
        names, sd, ts = trial.names, trial.state_data.ravel(), trial.state_ts.ravel()
        visited = {names[int(k) - 1] for k in sd}
        missing = tuple(s for s in REQUIRED_STATES if s not in names)
        ptype = _gui_number(gui, "ProtocolType")
        reversal = _gui_number(gui, "Reversal")
        autolearn = _gui_number(gui, "Autolearn")
        if missing:
            skip = "missing states: " + ", ".join(missing)
        elif ptype is None:
            skip = "ProtocolType missing"
        elif ptype < 3:
            skip = f"ProtocolType {int(ptype)} < 3"
        else:
            skip = None
        tt = int(trial_types[i])
        instruction = None
        if reversal is not None:
            instruction = ("left" if tt == 1 else "right") if reversal == 1 else ("right" if tt == 1 else "left")
        if "Reward" in visited:
            outcome = "hit"
        elif "TimeOut" in visited:
            outcome = "miss"
        else:
            outcome = "ignore"
        p = ptype if ptype is not None else -1.0
        early = (p >= 5 and "EarlyLickDelay" in visited) or (p > 5 and "EarlyLickSample" in visited)
        nan_kinds = tuple(
            kind for kind, key in (("sample", "SamplePeriod"), ("delay", "DelayPeriod"), ("go", "AnswerPeriod"))
            if key in gui and np.isnan(gui[key])
        )
        events: tuple[ExpectedEvent, ...] = ()
        if skip is None:
            events = _expected_events(names, sd, ts, gui, last_good)
        codes, ets = trial.event_codes.ravel(), trial.event_ts.ravel()
        delays = _entries(names, sd, ts, "DelayPeriod")
        stim = float(stims[i])
        out.append(
            ExpectedTrial(
                index=i,
                trial_type=tt,
                instruction=instruction,
                outcome=outcome,
                early_lick="early" if early else "no early",
                protocol_type=None if ptype is None else int(ptype),
                autolearn=None if autolearn is None else int(autolearn),
                bitcode=gui.get("randomID"),
                start_timestamp=float(trial_start[i]),
                events=events,
                left_licks=tuple(float(x) for x in ets[codes == EVENT_CODES["Port1In"]]),
                right_licks=tuple(float(x) for x in ets[codes == EVENT_CODES["Port2In"]]),
                skip_reason=skip,
                missing_states=missing,
                nan_durations=nan_kinds,
                visited_states=tuple(names[int(k) - 1] for k in sd),
                stim_code=stim,
                photostim_time=delays[0] if stim in PHOTOSTIM_PROTOCOLS and delays else None,
                trial_end=(_entries(names, sd, ts, "TrialEnd") or [None])[0] if skip is None else None,
            )
        )
    return tuple(out)


def _expected_events(
    names: tuple[str, ...], sd: np.ndarray, ts: np.ndarray, gui: dict[str, Any], last_good: dict[str, float]
) -> tuple[ExpectedEvent, ...]:
    presample = _entries(names, sd, ts, "PreSamplePeriod")
    samples = _entries(names, sd, ts, "SamplePeriod")
    delays = _entries(names, sd, ts, "DelayPeriod")
    cues = _entries(names, sd, ts, "ResponseCue")
    events = [ExpectedEvent("presample", presample[0], samples[0] - presample[0], samples[0] - presample[0], False)]

    def timed(kind: str, key: str, times: list[float]) -> list[ExpectedEvent]:
        raw = float(gui[key])
        if np.isnan(raw):
            duration, corrected = last_good.get(kind, 0.0), True
        else:
            duration, corrected = raw, False
            last_good[kind] = raw
        return [ExpectedEvent(kind, t, duration, raw, corrected) for t in times]

    events += timed("sample", "SamplePeriod", samples)
    events += timed("delay", "DelayPeriod", delays)
    events += timed("go", "AnswerPeriod", cues[:1])  # 'go' is the first ResponseCue entry
    return tuple(events)


# --------------------------------------------------------------------------
# Writers.
# --------------------------------------------------------------------------


def _header_text(version: str, start: datetime, extra: str = "") -> bytes:
    created = f"{_DAYS[start.weekday()]} {_MONTHS[start.month - 1]} {start.day:2d} {start:%H:%M:%S} {start.year}"
    text = f"MATLAB {version} MAT-file, Platform: PCWIN64, Created on: {created}{extra}"
    return text.encode("ascii").ljust(116, b" ")


def _to_scipy(value: Any, memo: dict[int, Any]) -> Any:
    """MATLAB value model -> objects scipy.io.savemat writes as the same MATLAB types.

    Shared model objects (the state-name cell, GUIPanels, GUIMeta) map to one
    converted object, so the memoizing writer serializes them only once.
    """
    key = id(value)
    if key in memo:
        return memo[key][1]
    if isinstance(value, dict):
        out: Any = {k: _to_scipy(v, memo) for k, v in value.items()}
    elif isinstance(value, Cell):
        out = np.empty(value.items.shape, dtype=object)
        for idx in np.ndindex(value.items.shape):
            out[idx] = _to_scipy(value.items[idx], memo)
    elif isinstance(value, StructArray):
        out = np.empty(value.elements.shape, dtype=[(f, object) for f in value.fields])
        for idx in np.ndindex(value.elements.shape):
            for f in value.fields:
                out[f][idx] = _to_scipy(value.elements[idx][f], memo)
    elif isinstance(value, (bool, np.bool_)):
        out = np.array([[value]], dtype=bool)
    elif isinstance(value, (int, float, np.integer, np.floating)):
        out = np.array([[float(value)]])
    else:
        out = value  # str, numeric ndarray
    memo[key] = (value, out)  # keep value alive so its id is not reused
    return out


def _memo_var_writer() -> type | None:
    """scipy's v5 element writer, made to reuse the bytes of a container written before.

    A nested v5 element is self-contained (no name, sizes relative to itself),
    so an object written twice gives the same bytes twice. Returns None if
    scipy's internals changed; plain savemat is then used.
    """
    try:
        from scipy.io.matlab import _mio5
    except ImportError:
        return None
    base = getattr(_mio5, "VarWriter5", None)
    if base is None or not hasattr(base, "write"):
        return None

    class MemoVarWriter5(base):  # type: ignore[misc, valid-type]
        def __init__(self, file_writer: Any) -> None:
            super().__init__(file_writer)
            self._memo: dict[int, tuple[Any, bytes]] = {}

        def write(self, arr: Any) -> None:
            memoizable = isinstance(arr, dict) or (isinstance(arr, np.ndarray) and arr.dtype.hasobject)
            if not memoizable or self._var_name:  # top-level elements carry their name
                super().write(arr)
                return
            hit = self._memo.get(id(arr))
            if hit is not None and hit[0] is arr:
                self.file_stream.write(hit[1])
                return
            begin = self.file_stream.tell()
            super().write(arr)
            self._memo[id(arr)] = (arr, bytes(self.file_stream.getbuffer()[begin:]))

    return MemoVarWriter5


def write_v5(path: str | os.PathLike[str], variables: dict[str, Any], start: datetime) -> None:
    """Write a MATLAB v5 mat-file (uncompressed) with a deterministic header."""
    import scipy.io
    from unittest import mock

    memo: dict[int, Any] = {}
    mdict = {k: _to_scipy(v, memo) for k, v in variables.items()}
    buf = io.BytesIO()
    writer = _memo_var_writer()
    options = dict(format="5", long_field_names=True, do_compression=False)
    if writer is None:
        scipy.io.savemat(buf, mdict, **options)
    else:
        with mock.patch("scipy.io.matlab._mio5.VarWriter5", writer):
            scipy.io.savemat(buf, mdict, **options)
    data = bytearray(buf.getvalue())
    data[:116] = _header_text("5.0", start)  # savemat stamps the current time here
    Path(path).write_bytes(bytes(data))


class _MatH5Writer:
    """Writes MATLAB values into HDF5 the way MATLAB's ``save -v7.3`` lays them out.

    Uses h5py's low-level API with explicit memory types: a 500-trial session
    has ~10^5 HDF5 objects and the high-level API costs ~3x more per object.
    """

    def __init__(self, h5file: h5py.File) -> None:
        self.root = h5g.open(h5file.id, b"/")
        # No object timestamps: the same session must give the same bytes.
        self._dcpl = h5p.create(h5p.DATASET_CREATE)
        self._dcpl.set_obj_track_times(False)
        self._gcpl = h5p.create(h5p.GROUP_CREATE)
        self._gcpl.set_obj_track_times(False)
        self._scalar = h5s.create(h5s.SCALAR)
        self._types: dict[str, Any] = {}
        self._class_attr: dict[str, tuple[Any, np.ndarray]] = {}
        self._fields_dtype = h5py.vlen_dtype(np.dtype("S1"))
        self._fields_type = h5t.py_create(self._fields_dtype, logical=True)
        self._refs: Any = None
        self._n_refs = 0

    def _type(self, dtype: np.dtype) -> Any:
        key = dtype.str
        if key not in self._types:
            self._types[key] = h5t.STD_REF_OBJ if dtype.hasobject else h5t.py_create(dtype)
        return self._types[key]

    # -- attributes --
    def _set_class(self, oid: Any, matlab_class: str) -> None:
        if matlab_class not in self._class_attr:
            raw = matlab_class.encode("ascii")
            tid = h5t.C_S1.copy()
            tid.set_size(len(raw) + 1)
            tid.set_strpad(h5t.STR_NULLTERM)
            self._class_attr[matlab_class] = (tid, np.array(raw, dtype=f"S{len(raw) + 1}"))
        tid, value = self._class_attr[matlab_class]
        h5a.create(oid, b"MATLAB_class", tid, self._scalar).write(value, mtype=tid)

    def _set_int(self, oid: Any, name: bytes, value: int, dtype: str) -> None:
        arr = np.array(value, dtype=dtype)
        tid = self._type(arr.dtype)
        h5a.create(oid, name, tid, self._scalar).write(arr, mtype=tid)

    def _set_fields(self, oid: Any, fields: Sequence[str]) -> None:
        arr = np.empty(len(fields), dtype=self._fields_dtype)
        for i, name in enumerate(fields):
            arr[i] = np.frombuffer(name.encode("ascii"), dtype="S1")
        space = h5s.create_simple((len(fields),))
        h5a.create(oid, b"MATLAB_fields", self._fields_type, space).write(arr)

    # -- datasets --
    def _dataset(self, loc: Any, name: bytes, data: np.ndarray) -> Any:
        data = np.ascontiguousarray(data)
        tid = self._type(data.dtype)
        dsid = h5d.create(loc, name, tid, h5s.create_simple(data.shape), dcpl=self._dcpl)
        if data.dtype.hasobject:
            dsid.write(h5s.ALL, h5s.ALL, data)  # h5py converts Reference objects itself
        else:
            dsid.write(h5s.ALL, h5s.ALL, data, mtype=tid)
        return dsid

    def _empty(self, loc: Any, name: bytes, dims: tuple[int, ...], matlab_class: str) -> Any:
        # MATLAB stores an empty array as its dims (uint64) flagged MATLAB_empty.
        dsid = self._dataset(loc, name, np.array(dims, dtype="<u8"))
        self._set_class(dsid, matlab_class)
        self._set_int(dsid, b"MATLAB_empty", 1, "u1")
        return dsid

    def _ref_group(self) -> Any:
        if self._refs is None:
            self._refs = h5g.create(self.root, b"#refs#", gcpl=self._gcpl)
            # MATLAB's canonical empty, always '#refs#/a'.
            self._empty(self._refs, b"a", (0, 0), "canonical empty")
            self._n_refs = 1
        return self._refs

    def _new_ref_name(self) -> bytes:
        self._n_refs += 1
        return matlab_ref_name(self._n_refs - 1).encode("ascii")

    def _ref_array(self, values: np.ndarray) -> np.ndarray:
        """Write each element under #refs#; references laid out in HDF5 order (MATLAB dims reversed)."""
        refs = self._ref_group()
        out = np.empty(values.shape[::-1], dtype=h5py.ref_dtype)
        for idx in np.ndindex(values.shape):  # MATLAB's element order
            name = self._new_ref_name()
            self.put(refs, name, values[idx])
            out[idx[::-1]] = h5r.create(refs, name, h5r.OBJECT)
        return out

    # -- values --
    def put(self, loc: Any, name: bytes, value: Any) -> None:
        if isinstance(value, dict):
            self._struct(loc, name, value)
        elif isinstance(value, StructArray):
            self._struct_array(loc, name, value)
        elif isinstance(value, Cell):
            if value.items.size == 0:
                self._empty(loc, name, value.items.shape, "cell")
                return
            self._set_class(self._dataset(loc, name, self._ref_array(value.items)), "cell")
        elif isinstance(value, str):
            self._char(loc, name, value)
        elif isinstance(value, np.ndarray) and value.dtype.kind == "U":
            self._char_matrix(loc, name, value)
        elif isinstance(value, (bool, np.bool_)):
            self._numeric(loc, name, np.array([[value]], dtype=bool))
        elif isinstance(value, (int, float, np.floating, np.integer)):
            self._numeric(loc, name, np.array([[float(value)]]))
        elif isinstance(value, np.ndarray):
            self._numeric(loc, name, value)
        else:
            raise TypeError(f"cannot write {type(value).__name__} as a MATLAB value")

    def _numeric(self, loc: Any, name: bytes, arr: np.ndarray) -> None:
        matlab_class = _MATLAB_CLASS.get(arr.dtype.name, arr.dtype.name)
        if arr.size == 0:
            self._empty(loc, name, arr.shape, matlab_class)
            return
        is_logical = arr.dtype == bool
        data = arr.T.astype(np.uint8) if is_logical else arr.T  # HDF5 dims are MATLAB's reversed
        dsid = self._dataset(loc, name, data)
        self._set_class(dsid, matlab_class)
        if is_logical:
            self._set_int(dsid, b"MATLAB_int_decode", 1, "<i4")

    def _char(self, loc: Any, name: bytes, text: str) -> None:
        if not text:
            dsid = self._empty(loc, name, (0, 0), "char")
        else:
            codes = np.frombuffer(text.encode("utf-16-le"), dtype="<u2")
            dsid = self._dataset(loc, name, codes.reshape(-1, 1))  # 1xN char -> (N, 1)
            self._set_class(dsid, "char")
        self._set_int(dsid, b"MATLAB_int_decode", 2, "<i4")

    def _char_matrix(self, loc: Any, name: bytes, rows: np.ndarray) -> None:
        """A numpy str array (one string per row) -> char matrix, rows padded with spaces as MATLAB does."""
        if rows.size == 0 or rows.dtype.itemsize == 0:
            self._empty(loc, name, (0, 0), "char")
            return
        width = rows.dtype.itemsize // 4
        padded = np.array([text.ljust(width) for text in rows.reshape(-1)], dtype=f"<U{width}")
        codes = padded.view("<u4").reshape(-1, width).astype("<u2")
        dsid = self._dataset(loc, name, codes.T)  # MATLAB (rows, width) -> HDF5 (width, rows)
        self._set_class(dsid, "char")
        self._set_int(dsid, b"MATLAB_int_decode", 2, "<i4")

    def _struct(self, loc: Any, name: bytes, value: dict[str, Any]) -> None:
        gid = h5g.create(loc, name, gcpl=self._gcpl)
        self._set_class(gid, "struct")
        if value:
            self._set_fields(gid, list(value))
        for key, item in value.items():
            self.put(gid, key.encode("ascii"), item)

    def _struct_array(self, loc: Any, name: bytes, value: StructArray) -> None:
        if value.elements.size == 0:
            dsid = self._empty(loc, name, value.elements.shape, "struct")
            if value.fields:
                self._set_fields(dsid, value.fields)
            return
        gid = h5g.create(loc, name, gcpl=self._gcpl)
        self._set_class(gid, "struct")
        self._set_fields(gid, value.fields)
        # Each field is an array of references (no MATLAB_class) to the elements' values.
        for f in value.fields:
            values = np.empty(value.elements.shape, dtype=object)
            for idx in np.ndindex(values.shape):
                values[idx] = value.elements[idx][f]
            self._dataset(gid, f.encode("ascii"), self._ref_array(values))


_REF_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def matlab_ref_name(n: int) -> str:
    """MATLAB's name of the n-th object under ``#refs#``: a..z, A..Z, then ba, bb, ... (0 is 'a')."""
    name = ""
    while True:
        name = _REF_LETTERS[n % 52] + name
        n //= 52
        if n == 0:
            return name


_MATLAB_CLASS = {"float64": "double", "float32": "single", "bool": "logical"}


def write_v73(path: str | os.PathLike[str], variables: dict[str, Any], start: datetime) -> None:
    """Write a MATLAB v7.3 mat-file: HDF5 with a 512-byte MATLAB header as user block."""
    with h5py.File(path, "w", userblock_size=512, libver="earliest") as f:
        writer = _MatH5Writer(f)
        for name, value in variables.items():
            writer.put(writer.root, name.encode("ascii"), value)
    header = _header_text("7.3", start, " HDF5 schema 1.00 .") + b"\x00" * 8 + b"\x00\x02IM"
    with open(path, "r+b") as fh:
        fh.write(header.ljust(512, b"\x00"))


def write_mat(
    path: str | os.PathLike[str], variables: dict[str, Any], *, fmt: Fmt = "v5", start: datetime | None = None
) -> None:
    """Write MATLAB value-model variables as a v5 or v7.3 mat-file."""
    start = start or datetime(2018, 2, 25, 10, 25, 8)
    if fmt == "v5":
        write_v5(path, variables, start)
    elif fmt == "v7.3":
        write_v73(path, variables, start)
    else:
        raise ValueError(f"unknown format {fmt!r} (use 'v5' or 'v7.3')")


# --------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------


def write_session(
    path: str | os.PathLike[str],
    *,
    n_trials: int = 500,
    h2o: str = "dl25",
    protocol: str = "tw2",
    start: datetime = datetime(2018, 2, 25, 10, 25, 8),
    seed: int = 0,
    fmt: Fmt = "v5",
    protocol_type: int | Sequence[int] = 7,
    reversal: int = 1,
    autolearn: int = 1,
    nan_duration_trials: Iterable[int] = (),
    missing_state_trials: Iterable[int] = (),
    no_gui_fields: bool = False,
    trial_start_offset: float = 0.0,
    stim_codes: float | Sequence[float] | None = None,
) -> GeneratedSession:
    """Write one Bpod session file at ``path`` (parent dirs are created).

    ``path`` is the file itself; use :func:`session_path` for the rig layout
    ``root/{h2o}/{protocol}/Session Data/{h2o}_{protocol}_{date}_{time}.mat``.
    ``protocol_type`` may be one value or one per trial. See
    :func:`build_session` for ``nan_duration_trials``, ``missing_state_trials`` and ``stim_codes``.
    """
    built = build_session(
        n_trials=n_trials,
        start=start,
        seed=seed,
        protocol_type=protocol_type,
        reversal=reversal,
        autolearn=autolearn,
        nan_duration_trials=nan_duration_trials,
        missing_state_trials=missing_state_trials,
        no_gui_fields=no_gui_fields,
        trial_start_offset=trial_start_offset,
        stim_codes=stim_codes,
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_mat(out, {"SessionData": built.session_data}, fmt=fmt, start=start)
    return GeneratedSession(
        path=out, fmt=fmt, h2o=h2o, protocol=protocol, start=start, n_trials=n_trials, trials=built.trials
    )


def write_bad_file(path: str | os.PathLike[str], kind: str, *, fmt: Fmt = "v5") -> Path:
    """Write a broken input of ``kind`` (see BAD_KINDS) at ``path``.

    empty: 0 bytes; truncated: a valid 20-trial session cut to half its bytes;
    not_mat: a text file; no_sessiondata: a valid mat-file holding another
    variable only; missing_fields: SessionData without RawData and TrialSettings.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == "empty":
        out.write_bytes(b"")
    elif kind == "truncated":
        write_session(out, n_trials=20, fmt=fmt)
        data = out.read_bytes()
        out.write_bytes(data[: len(data) // 2])
    elif kind == "not_mat":
        out.write_text("Bpod session notes\nmouse dl25 licked a lot today\n", encoding="ascii")
    elif kind == "no_sessiondata":
        write_mat(out, {"Notes": "not a session", "Weights": row([21.5, 21.3])}, fmt=fmt)
    elif kind == "missing_fields":
        data = build_session(n_trials=5).session_data
        del data["RawData"], data["TrialSettings"]
        write_mat(out, {"SessionData": data}, fmt=fmt)
    else:
        raise ValueError(f"unknown bad-file kind {kind!r}; use one of {', '.join(BAD_KINDS)}")
    return out


def write_other_protocol(path: str | os.PathLike[str], *, n_trials: int = 20, fmt: Fmt = "v5",
                         start: datetime = datetime(2018, 2, 25, 10, 25, 8), seed: int = 0) -> Path:
    """A real Bpod session of another lab protocol: the Bpod core (RawData, RawEvents,
    TrialStartTimestamp, Info, nTrials) without the MAP fields (TrialTypes, TrialSettings)."""
    data = build_session(n_trials=n_trials, start=start, seed=seed, no_gui_fields=True).session_data
    for key in ("TrialTypes", "TrialSettings", "StimTrials", "ProbeTrials", "LickPortMotorPosition"):
        del data[key]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_mat(out, {"SessionData": data}, fmt=fmt, start=start)
    return out


# --------------------------------------------------------------------------
# Hostile files: small on disk, huge or deadly once read.
# --------------------------------------------------------------------------

_ZERO_BLOCK = bytes(1 << 20)


def _v5_element(mdtype: int, data: bytes, order: str = "<") -> bytes:
    """A v5 data element: tag (type, byte count) and its data padded to 8 bytes."""
    return struct.pack(f"{order}II", mdtype, len(data)) + data + b"\0" * (-len(data) % 8)


def _v5_matrix_head(matlab_class: int, dims: tuple[int, ...], name: bytes, rest: int, order: str = "<") -> bytes:
    """A miMATRIX tag with its array flags, dimensions and name; ``rest`` bytes of content follow."""
    body = (_v5_element(6, struct.pack(f"{order}II", matlab_class, 0), order)
            + _v5_element(5, struct.pack(f"{order}{len(dims)}i", *dims), order) + _v5_element(1, name, order))
    return struct.pack(f"{order}II", 14, len(body) + rest) + body


def _v5_header(order: str = "<") -> bytes:
    """The 128-byte v5 header: text, no subsystem data, version 0x0100, endian indicator."""
    text = _header_text("5.0", datetime(2018, 2, 25, 10, 25, 8))
    return text + b"\0" * 8 + struct.pack(f"{order}H", 0x0100) + (b"IM" if order == "<" else b"MI")


def _zlib_with_zeros(prefix: bytes, zeros: int) -> bytes:
    """A zlib stream of ``prefix`` then ``zeros`` zero bytes, in milliseconds for any size.

    After a full flush a deflate compressor keeps no history, so a block of
    zeros compresses to the same bytes each time: it is compressed once and
    repeated. The adler-32 of the zeros follows from that of the prefix.
    """
    main = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [b"\x78\xda", main.compress(prefix), main.flush(zlib.Z_FULL_FLUSH)]
    blocker = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = blocker.compress(_ZERO_BLOCK) + blocker.flush(zlib.Z_FULL_FLUSH)
    count, rest = divmod(zeros, len(_ZERO_BLOCK))
    parts += [block * count, main.compress(bytes(rest)), main.flush(zlib.Z_FINISH)]
    adler = zlib.adler32(prefix)
    a, b = adler & 0xFFFF, adler >> 16
    parts.append(struct.pack(">I", (((b + zeros * a) % 65521) << 16) | a))
    return b"".join(parts)


def write_v5_bomb(path: str | os.PathLike[str], inflated_bytes: int = 600 * 10**6, *, order: str = "<") -> int:
    """A v5 file whose compressed SessionData (one zero double array) inflates to ``inflated_bytes``.

    600 MB take 0.6 MB on disk. ``order`` '>' writes a big-endian ('MI') file.
    Returns the declared content size: the SessionData element's bytes, tag included.
    """
    n = inflated_bytes // 8
    field = _v5_matrix_head(6, (1, n), b"", 8 + 8 * n, order) + struct.pack(f"{order}II", 9, 8 * n)
    # The field-name length as a "small data element": type and byte count in one 4-byte word.
    names = (struct.pack(f"{order}HHi", 5, 4, 32) if order == "<" else struct.pack(">HHi", 4, 5, 32))
    names += _v5_element(1, b"TrialStartTimestamp".ljust(32, b"\0"), order)
    body = _v5_matrix_head(2, (1, 1), b"SessionData", 0, order)[8:] + names + field
    prefix = struct.pack(f"{order}II", 14, len(body) + 8 * n) + body
    stream = _zlib_with_zeros(prefix, 8 * n)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(_v5_header(order) + struct.pack(f"{order}II", 15, len(stream)) + stream)
    return len(prefix) + 8 * n


def write_v73_bomb(path: str | os.PathLike[str], declared_bytes: int = 600 * 10**6) -> int:
    """A v7.3 file whose SessionData holds one double dataset declaring ``declared_bytes``.

    Its chunks are never written (HDF5 stores no data for them), so the file
    is a few KB. Returns the declared size (bytes).
    """
    n = declared_bytes // 8
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(out, "w", userblock_size=512) as f:
        group = f.create_group("SessionData")
        group.attrs["MATLAB_class"] = np.bytes_(b"struct")
        data = group.create_dataset("TrialStartTimestamp", shape=(n, 1), dtype="<f8", chunks=(min(n, 1 << 20), 1),
                                    compression="gzip")
        data.attrs["MATLAB_class"] = np.bytes_(b"double")
    header = _header_text("7.3", datetime(2018, 2, 25, 10, 25, 8), " HDF5 schema 1.00 .") + b"\x00" * 8 + b"\x00\x02IM"
    with open(out, "r+b") as fh:
        fh.write(header.ljust(512, b"\x00"))
    return 8 * n


def write_deep_nesting(path: str | os.PathLike[str], depth: int = 100_000) -> Path:
    """A v5 file (200 KB) whose SessionData is a cell in a cell ... ``depth`` levels deep.

    scipy's reader recurses in C once per level: at this depth it overflows
    the stack and the reading process dies of SIGSEGV (scipy 1.17).
    """
    leaf = _v5_matrix_head(6, (1, 1), b"", 16) + _v5_element(9, struct.pack("<d", 1.0))
    heads, inner = [], len(leaf)
    for level in range(depth):
        head = _v5_matrix_head(1, (1, 1), b"SessionData" if level == depth - 1 else b"", inner)
        heads.append(head)
        inner += len(head)
    stream = zlib.compress(b"".join(reversed(heads)) + leaf, 6)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(_v5_header() + struct.pack("<II", 15, len(stream)) + stream)
    return out


# --------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------


def _parse_indices(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write realistic Bpod SessionData mat-files (MAP delay-response protocol).",
        epilog="Example: python test_data/bpodgen.py /tmp/rig --n-trials 500 --days 3 --fmt v7.3",
    )
    parser.add_argument("root", nargs="?", help="rig data root; files go to ROOT/{h2o}/{protocol}/Session Data/")
    parser.add_argument("--file", help="write exactly this file instead of the rig layout under ROOT")
    parser.add_argument("--n-trials", type=int, default=500)
    parser.add_argument("--h2o", default="dl25")
    parser.add_argument("--protocol", default="tw2")
    parser.add_argument("--start", default="2018-02-25T10:25:08", help="session start, ISO format")
    parser.add_argument("--days", type=int, default=1, help="write one session per day for this many days")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fmt", choices=["v5", "v7.3"], default="v5")
    parser.add_argument("--protocol-type", type=int, default=7)
    parser.add_argument("--reversal", type=int, choices=[1, 2], default=1)
    parser.add_argument("--nan-trials", type=_parse_indices, default=[], help="comma-separated trial indices")
    parser.add_argument("--missing-state-trials", type=_parse_indices, default=[], help="comma-separated trial indices")
    parser.add_argument("--stim-codes", type=lambda text: [float(x) for x in text.split(",") if x.strip()],
                        help="StimTrials, one comma-separated code per trial (default: 2 in ~15%% of trials)")
    parser.add_argument("--no-gui-fields", action="store_true", help="another lab's protocol: GUI without MAP fields")
    parser.add_argument("--bad", choices=BAD_KINDS, help="write a broken file of this kind (needs --file)")
    args = parser.parse_args(argv)

    if not (args.root or args.file):
        parser.error("give ROOT or --file")
    if args.bad:
        if not args.file:
            parser.error("--bad needs --file")
        print(write_bad_file(args.file, args.bad, fmt=args.fmt))
        return 0
    first = datetime.fromisoformat(args.start)
    for day in range(args.days):
        when = first + timedelta(days=day)
        target = args.file if args.file else session_path(args.root, args.h2o, args.protocol, when)
        t0 = time.perf_counter()
        session = write_session(
            target,
            n_trials=args.n_trials,
            h2o=args.h2o,
            protocol=args.protocol,
            start=when,
            seed=args.seed + day,
            fmt=args.fmt,
            protocol_type=args.protocol_type,
            reversal=args.reversal,
            nan_duration_trials=args.nan_trials,
            missing_state_trials=args.missing_state_trials,
            no_gui_fields=args.no_gui_fields,
            stim_codes=args.stim_codes,
        )
        size = session.path.stat().st_size
        print(f"{session.path}  {size / 1e6:.2f} MB  {len(session.skipped)} skipped  {time.perf_counter() - t0:.2f} s")
        if args.file:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
