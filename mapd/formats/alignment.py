"""Recorded trials -> Bpod trials, and spikes -> units x trials (pure numpy: arrays in, arrays out).

No file is read here and no database is asked: the ingest passes the
bitcodes, trial starts and go cues it got from the readers and from the
behavior session.

Clocks and references (every time below says which it uses):

* spike and trial-start times are *samples* of the recording, counted from
  its first sample (sample 0 = 0 s);
* go cues are *seconds on the recording's clock* (sample / sample rate);
* a recorded trial ``j`` holds the spikes with
  ``trial_starts[j] <= sample < trial_starts[j + 1]``, the last trial those
  from its start to the end of the recording; spikes before
  ``trial_starts[0]`` belong to no trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

__all__ = [
    "AlignmentError", "NO_TRIAL", "SpikeGroups", "TRIAL_START_MARGIN", "TrialMatch",
    "go_cues_from_behavior", "go_cues_from_bitcode", "group_spikes", "match_trials", "trial_starts",
]

# A trial's window opens this many samples before its sTrig trigger, as the
# original pipeline ("sTrig - 7500 ... mimic MATLAB implementation": 0.25 s at 30 kHz).
TRIAL_START_MARGIN = 7500

# A recorded trial without a Bpod trial (it would precede Bpod trial 1).
NO_TRIAL = -1

# A bitcode match needs this many agreeing codes (or all recorded ones, if fewer).
MIN_AGREEING = 3


class AlignmentError(Exception):
    """Recorded trials that cannot be matched or split; the message says why, with the counts."""


@dataclass(frozen=True)
class TrialMatch:
    """Which Bpod trial each recorded trial is."""

    trials: np.ndarray  # (n_recorded,) int64 Bpod trial number (1-based) of each recorded trial; NO_TRIAL: none
    method: str  # 'bitcode' (the offset where the codes agree) or 'trialNum' (the bitcode file's numbers)
    first_trial: int | None  # Bpod trial number of recorded trial 0 ('bitcode'); None for 'trialNum'
    agreeing: int  # recorded codes equal to the behavior's code of their Bpod trial
    compared: int  # recorded trials whose Bpod trial has a behavior bitcode


@dataclass(frozen=True)
class SpikeGroups:
    """Spikes grouped by unit, and within each unit by recorded trial.

    ``unit_times`` holds every spike of the units, grouped by unit (in
    ``units`` order) and ascending in time within a unit, in seconds from the
    start of the first recorded trial: ``(sample - trial_starts[0]) / sample_rate``
    (negative before it). Unit ``k``'s spikes are
    ``unit_times[unit_offsets[k]:unit_offsets[k + 1]]``; those of its recorded
    trial ``j`` are ``unit_times[trial_bounds[k, j]:trial_bounds[k, j + 1]]``.
    Relative to trial ``j``'s go cue they are those values minus
    ``go_offsets[j]``, i.e. ``sample / sample_rate - go_cues[j]``.
    """

    units: np.ndarray  # (n_units,) cluster ids, ascending
    unit_offsets: np.ndarray  # (n_units + 1,) int64 positions in unit_times
    unit_times: np.ndarray  # (n_spikes,) float64 (s) from the first recorded trial's start
    trial_bounds: np.ndarray  # (n_units, n_trials + 1) int64 positions in unit_times
    go_offsets: np.ndarray  # (n_trials,) float64 (s) each go cue on unit_times' clock; NaN: no go cue

    @property
    def counts(self) -> np.ndarray:
        """(n_units, n_trials) int64 spikes of each unit in each recorded trial."""
        return np.diff(self.trial_bounds, axis=1)

    def unit_spike_times(self) -> list[np.ndarray]:
        """Each unit's spike times (views into unit_times), in units order."""
        return np.split(self.unit_times, self.unit_offsets[1:-1])

    def unit_trials(self) -> tuple[np.ndarray, np.ndarray]:
        """(unit index, recorded trial index) of each unit x trial with spikes and a go cue,
        by unit then trial."""
        return np.nonzero((self.counts > 0) & ~np.isnan(self.go_offsets)[np.newaxis, :])

    def trial_spike_times(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(unit index, trial index, times, offsets) of the pairs of :meth:`unit_trials`:
        pair ``p``'s spikes are ``times[offsets[p]:offsets[p + 1]]``, in seconds from
        its trial's go cue. One array operation over all spikes, no loop over pairs."""
        units, trials = self.unit_trials()
        n_units, n_trials = self.counts.shape
        # Segments in unit_times order: per unit, the spikes before its first trial, then each trial.
        edges = np.concatenate([self.unit_offsets[:-1, np.newaxis], self.trial_bounds], axis=1)
        lengths = np.diff(edges, axis=1).reshape(-1)
        keep = np.zeros((n_units, n_trials + 1), dtype=bool)
        keep[units, trials + 1] = True
        shifts = np.zeros((n_units, n_trials + 1))
        shifts[:, 1:] = self.go_offsets[np.newaxis, :]
        flat_keep = keep.reshape(-1)
        times = self.unit_times[np.repeat(flat_keep, lengths)]
        times -= np.repeat(shifts.reshape(-1)[flat_keep], lengths[flat_keep])
        offsets = np.concatenate([[0], np.cumsum(lengths[flat_keep])])
        return units, trials, times, offsets

    def split_trial_spike_times(self) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """As :meth:`trial_spike_times`, the times split into one array per pair."""
        units, trials, times, offsets = self.trial_spike_times()
        return units, trials, np.split(times, offsets[1:-1])


def trial_starts(*, strig: np.ndarray | None = None, file_offsets: np.ndarray | None = None) -> np.ndarray:
    """Each recorded trial's window start (samples): ``sTrig - TRIAL_START_MARGIN`` when the
    bitcode file has sTrig (samples), else JRClust v3's ``viT_offset_file`` (where each
    per-trial file starts)."""
    if strig is not None:
        return np.rint(np.asarray(strig, dtype=np.float64)).astype(np.int64) - TRIAL_START_MARGIN
    if file_offsets is not None:
        return np.asarray(file_offsets, dtype=np.int64)
    raise AlignmentError("no trial starts: the bitcode file has no sTrig and the sorting no viT_offset_file")


def go_cues_from_bitcode(go_cue_samples: np.ndarray, sample_rate: float) -> np.ndarray:
    """The bitcode file's ``goCue`` (samples) -> go cues (s on the recording's clock)."""
    return np.asarray(go_cue_samples, dtype=np.float64) / sample_rate


def go_cues_from_behavior(trigger_samples: np.ndarray, go_event_times: np.ndarray, sample_rate: float) -> np.ndarray:
    """Go cues (s on the recording's clock) when the bitcode file has no goCue.

    ``trigger_samples``: each recorded trial's Bpod trial-start trigger in the
    recording (sTrig itself, not the window start; without sTrig, the per-trial
    file's start). ``go_event_times``: the matched behavior trial's ``go``
    event (s from the Bpod trial start; NaN when the trial has none).
    """
    return np.asarray(trigger_samples, dtype=np.float64) / sample_rate + np.asarray(go_event_times, dtype=np.float64)


def match_trials(recorded_codes: Sequence[str], behavior_codes: Mapping[int, str],
                 trial_nums: np.ndarray | Sequence[int] | None = None) -> TrialMatch:
    """Map each recorded trial to its Bpod trial number.

    ``recorded_codes``: the bitcode file's codes, in recording order.
    ``behavior_codes``: Bpod trial number -> bitcode of the session's ingested
    trials (numbers may have gaps: skipped trials have no code). Recorded trial
    ``i`` is Bpod trial ``first + i`` for the offset ``first`` with the most
    agreeing codes, provided none disagrees and at least MIN_AGREEING agree
    (the recording may start late or stop early; trials beyond either end map
    to numbers the session lacks, NO_TRIAL below 1). If no offset qualifies and
    ``trial_nums`` (the file's trialNum) is given, it is used as is; otherwise
    AlignmentError says how many codes matched at the best offset.
    """
    n = len(recorded_codes)
    if n == 0:
        raise AlignmentError("no recorded trials (the bitcode file lists no code)")
    numbers = np.fromiter(behavior_codes.keys(), dtype=np.int64, count=len(behavior_codes))
    vocabulary: dict[str, int] = {}
    behavior_ids = np.array([vocabulary.setdefault(code, len(vocabulary)) for code in behavior_codes.values()],
                            dtype=np.int64)
    recorded_ids = np.array([vocabulary.get(code, -1) for code in recorded_codes], dtype=np.int64)
    by_number = np.full(int(numbers.max(initial=0)) + 1, -1, dtype=np.int64)
    by_number[numbers] = behavior_ids
    best, tied = _best_offset(recorded_ids, numbers, behavior_ids)
    consistent = False
    if best is not None:
        agreeing, compared = _agreement(recorded_ids, by_number, best + np.arange(n))
        consistent = agreeing == compared and agreeing >= min(MIN_AGREEING, n)
        if consistent and not tied:
            trials = best + np.arange(n, dtype=np.int64)
            return TrialMatch(np.where(trials >= 1, trials, NO_TRIAL), "bitcode", int(best), agreeing, compared)
    if trial_nums is not None:
        return _from_trial_numbers(recorded_ids, by_number, trial_nums)
    raise AlignmentError(_no_match_message(recorded_ids, by_number, best, consistent and tied, len(behavior_codes)))


def _best_offset(recorded_ids: np.ndarray, numbers: np.ndarray, behavior_ids: np.ndarray) -> tuple[int | None, bool]:
    """(Bpod number of recorded trial 0 at which most codes agree, whether another offset
    ties with it); None when no code agrees anywhere. Every (recorded, behavior) pair of
    equal codes votes for its offset: one bincount, no scan of all offsets."""
    order = np.argsort(behavior_ids, kind="stable")
    sorted_ids = behavior_ids[order]
    low = np.searchsorted(sorted_ids, recorded_ids, side="left")
    high = np.where(recorded_ids >= 0, np.searchsorted(sorted_ids, recorded_ids, side="right"), low)
    lengths = high - low
    if not lengths.sum():
        return None, False
    recorded = np.repeat(np.arange(recorded_ids.size), lengths)
    position = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(low, lengths)
    offsets = numbers[order][position] - recorded
    votes = np.bincount(offsets - offsets.min())
    winners = np.flatnonzero(votes == votes.max())
    return int(winners[0] + offsets.min()), winners.size > 1


def _agreement(recorded_ids: np.ndarray, by_number: np.ndarray, trials: np.ndarray) -> tuple[int, int]:
    """(agreeing, compared) codes when recorded trial i is Bpod trial trials[i]."""
    inside = (trials >= 1) & (trials < by_number.size)
    behavior = np.where(inside, by_number[np.clip(trials, 0, by_number.size - 1)], -1)
    known = behavior >= 0
    return int(np.sum(known & (behavior == recorded_ids))), int(np.sum(known))


def _from_trial_numbers(recorded_ids: np.ndarray, by_number: np.ndarray, trial_nums) -> TrialMatch:
    trials = np.asarray(trial_nums).reshape(-1)
    if trials.size != recorded_ids.size:
        raise AlignmentError(f"trialNum has {trials.size} values for {recorded_ids.size} recorded trials")
    if not np.all(trials == np.rint(trials)) or np.any(trials < 1):
        raise AlignmentError("trialNum holds values that are not Bpod trial numbers (integers >= 1)")
    trials = trials.astype(np.int64)
    agreeing, compared = _agreement(recorded_ids, by_number, trials)
    return TrialMatch(trials, "trialNum", None, agreeing, compared)


def _no_match_message(recorded_ids: np.ndarray, by_number: np.ndarray, best: int | None, ambiguous: bool,
                      n_behavior: int) -> str:
    n = recorded_ids.size
    sizes = f"{n} recorded trials, {n_behavior} behavior trials with a bitcode; no trialNum to fall back on"
    if best is None:
        return f"bitcodes match at no offset: no recorded code is among the behavior session's ({sizes})"
    if ambiguous:
        return f"bitcodes match at several offsets equally well: the match is ambiguous ({sizes})"
    agreeing, compared = _agreement(recorded_ids, by_number, best + np.arange(n))
    return (f"bitcodes match at no offset: at the best one (recorded trial 1 = Bpod trial {best}) "
            f"{agreeing} of {compared} comparable codes agree ({sizes})")


def group_spikes(spike_times: np.ndarray, spike_clusters: np.ndarray, trial_starts: np.ndarray,
                 go_cues: np.ndarray, sample_rate: float, units: np.ndarray | None = None) -> SpikeGroups:
    """Group spikes by unit and recorded trial with array operations (see :class:`SpikeGroups`).

    ``spike_times``: samples; ``spike_clusters``: cluster per spike; ``units``:
    the clusters to keep (default every cluster present; spikes of others are
    dropped); ``trial_starts``: each recorded trial's window start (samples,
    increasing; see :func:`trial_starts`); ``go_cues``: each recorded trial's go
    cue (s on the recording's clock; NaN: the trial gets no TrialSpikes, e.g.
    no behavior trial matched). One in-place sort of a (unit, time) key and
    ``searchsorted``: no loop over spikes, units or trials.
    """
    starts = np.asarray(trial_starts, dtype=np.int64).reshape(-1)
    go = np.asarray(go_cues, dtype=np.float64).reshape(-1)
    if starts.size == 0 or go.size != starts.size:
        raise AlignmentError(f"{starts.size} trial starts and {go.size} go cues: need one go cue per trial")
    if np.any(np.diff(starts) <= 0):
        raise AlignmentError("trial starts are not increasing")
    if len(spike_times) != len(spike_clusters):
        raise AlignmentError(f"{len(spike_times)} spike times but {len(spike_clusters)} spike clusters")
    units = _units(spike_clusters, units)
    t_min = int(np.min(spike_times)) if len(spike_times) else 0
    span = (int(np.max(spike_times)) - t_min + 1) if len(spike_times) else 1
    key = _sorted_keys(spike_times, spike_clusters, units, t_min, span)
    first = int(np.searchsorted(key, 0))  # spikes of clusters not in units sort first (negative keys)
    unit_rows = np.arange(units.size, dtype=np.int64)[:, np.newaxis] * span
    unit_offsets = np.searchsorted(key, np.arange(units.size + 1, dtype=np.int64) * span) - first
    within = np.clip(starts - t_min, 0, span)[np.newaxis, :]
    bounds = np.empty((units.size, starts.size + 1), dtype=np.int64)
    bounds[:, :-1] = np.searchsorted(key, unit_rows + within) - first
    bounds[:, -1] = unit_offsets[1:]
    np.remainder(key, span, out=key)  # key -> sample - t_min, in place
    body = key[first:]
    unit_times = body.view(np.float64)  # the seconds overwrite the samples in the same buffer
    np.add(body, t_min - int(starts[0]), out=unit_times, casting="unsafe")
    unit_times /= sample_rate
    return SpikeGroups(units, unit_offsets, unit_times, bounds, go - starts[0] / sample_rate)


def _units(spike_clusters: np.ndarray, units: np.ndarray | None) -> np.ndarray:
    if units is not None:
        return np.unique(np.asarray(units, dtype=np.int64))
    clusters = np.asarray(spike_clusters)
    if clusters.size and clusters.min() >= 0:
        return np.flatnonzero(np.bincount(clusters.astype(np.int64, copy=False))).astype(np.int64)
    return np.unique(clusters).astype(np.int64)


def _sorted_keys(spike_times: np.ndarray, spike_clusters: np.ndarray, units: np.ndarray, t_min: int,
                 span: int) -> np.ndarray:
    """``unit index * span + (sample - t_min)`` per spike, sorted in place; -1 * span + ...
    (negative) for spikes of clusters not in ``units``."""
    clusters = np.asarray(spike_clusters)
    if clusters.size and clusters.min() >= 0 and clusters.max() < 1 << 24:
        lookup = np.full(int(max(clusters.max(), units.max(initial=0))) + 1, -1, dtype=np.int64)
        lookup[units[units >= 0]] = np.arange(units.size, dtype=np.int64)[units >= 0]
        key = lookup[clusters]
    else:
        position = np.clip(np.searchsorted(units, clusters), 0, max(units.size - 1, 0))
        key = np.where(units[position] == clusters, position, -1) if units.size else np.full(clusters.size, -1)
        key = key.astype(np.int64, copy=False)
    if units.size and (int(units.size) + 1) * span >= 1 << 62:
        raise AlignmentError("recording too long for the (unit, time) key")
    key *= span
    np.add(key, spike_times, out=key, casting="unsafe")  # uint64 samples (Kilosort) without a copy
    key -= t_min
    key.sort()
    return key
