"""The parser on the real MAP session, against values read by hand from the file.

The expected values were read from the file with scipy (RawData state and
event arrays, RawEvents by name, TrialSettings.GUI) and cross-checked against
the probe's bitcode file, whose ten bitcodes are the first ten trials' randomID.
"""

from __future__ import annotations

import hashlib
from datetime import date, time

import pytest
import scipy.io

from conftest import REAL_SESSION, TEST_DATA
from mapd.formats.behavior import merge_session, parse_behavior_file
from mapd.formats.matfile import load_mat

# Reversal is 1 throughout: TrialType 1 -> left, 0 -> right.
TRIAL_TYPES = [0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0]
# Trials 4 and 6 (1-based) visit TimeOut; every other trial visits Reward.
OUTCOMES = ["hit", "hit", "hit", "miss", "hit", "miss", "hit", "hit", "hit", "hit", "hit"]
# ProtocolType 7 > 5 and EarlyLickSample visited in trials 4 and 8 (1-based).
EARLY = {4, 8}
TRIAL_START_TIMESTAMPS = [3501.308, 3508.549, 3515.356, 3522.208, 3529.869, 3708.059, 3714.503, 3805.86,
                          3875.707, 3882.521, 3974.472]
# TrialEnd entries (s from trial start), from RawData and RawEvents.States.TrialEnd alike.
TRIAL_ENDS = [6.9076, 6.4992, 6.554, 7.3659, 6.8765, 6.1565, 14.3892, 9.7589, 6.5217, 6.661, 6.5241]
# StimTrials: code 2 in trials 2 and 9 (1-based), no other non-zero code; 2 is none of the
# photostim protocols (4, 5, 6) the original declared.
STIM_TRIALS = [0, 2, 0, 0, 0, 0, 0, 0, 2, 0, 0]
BITCODES = ["1111100101111011", "1010100010000101", "0000111111100101", "0110110110111101", "1100000110100010",
            "1011110001110101", "1000101101101011", "0111001110010110", "0101110110011101", "1111000001001100",
            "0110000000010101"]


@pytest.fixture(scope="module")
def records():
    return parse_behavior_file(REAL_SESSION)


def test_every_trial_is_ingestible(records):
    assert len(records.trials) == 11
    assert records.skipped == {}
    assert records.name.h2o == "dl25" and records.name.protocol == "tw2"
    assert records.session_date == date(2018, 2, 25)
    assert records.session_time == time(11, 23, 28)  # Info.SessionStartTime_UTC, as the original pipeline


def test_session_start_time_utc_is_the_rigs_local_clock():
    # Despite its name, Bpod fills SessionStartTime_UTC from MATLAB's `now` (local time): it agrees to the
    # second with SessionStartTime_MATLAB, a datenum of `now`. NWB export reads it in the configured timezone.
    info = scipy.io.loadmat(REAL_SESSION, squeeze_me=True, struct_as_record=False)["SessionData"].Info
    seconds_of_day = round((info.SessionStartTime_MATLAB % 1) * 86400)
    assert time(seconds_of_day // 3600, seconds_of_day // 60 % 60, seconds_of_day % 60) == time(11, 23, 28)
    assert info.SessionStartTime_UTC == "11:23:28"


def test_instructions_outcomes_and_early_licks(records):
    assert [t.instruction for t in records.trials] == ["left" if tt == 1 else "right" for tt in TRIAL_TYPES]
    assert [t.outcome for t in records.trials] == OUTCOMES
    assert [t.early_lick for t in records.trials] == ["early" if i in EARLY else "no early" for i in range(1, 12)]


def test_notes(records):
    for trial, bitcode, stim in zip(records.trials, BITCODES, STIM_TRIALS):
        stim_note = {"photostim code": str(stim)} if stim else {}
        assert trial.notes == {"protocol #": "7", "autolearn": "1", "bitcode": bitcode, **stim_note}


def test_trial_numbers_are_bpods(records):
    # Every trial is ingested, so Bpod's numbers have no gaps here.
    session = merge_session([records])
    assert [t.trial for t in session.trials] == [t.index_in_file for t in records.trials] == list(range(1, 12))
    assert records.trial_count == session.trial_count == 11 and session.file_trial_offsets == (0,)


def test_its_stim_codes_are_two_in_trials_2_and_9_and_no_photostim(records):
    data = load_mat(REAL_SESSION, ["SessionData"])["SessionData"]
    assert data["StimTrials"].tolist() == STIM_TRIALS
    assert all(t.photostim is None for t in records.trials)
    assert [t.index_in_file for t in records.trials if "photostim code" in t.notes] == [2, 9]
    assert records.warnings == {"StimTrials code 2 is no photostim protocol (4, 5, 6): kept as trial note "
                                "'photostim code', no photostim recorded": 2}
    assert merge_session([records]).photostim_protocols == ()


def test_trialend_is_the_trial_end_entry_a_point_event(records):
    ends = [[(e.time, e.duration) for e in t.events if e.event_type == "trialend"] for t in records.trials]
    assert ends == [[(pytest.approx(end), 0.0)] for end in TRIAL_ENDS]
    # The same times as RawEvents.States.TrialEnd's entries.
    raw = load_mat(REAL_SESSION, ["SessionData"])["SessionData"]["RawEvents"]["Trial"]
    assert [float(trial["States"]["TrialEnd"][0]) for trial in raw] == pytest.approx(TRIAL_ENDS)


def test_bitcodes_agree_with_the_probe_bitcode_file(records):
    probe = scipy.io.loadmat(TEST_DATA / "ephys" / "dl25" / "2018-02-25" / "1" / "dl25_bitcode.mat",
                             simplify_cells=True)
    assert [t.notes["bitcode"] for t in records.trials[:10]] == list(probe["bitCodeS"])


def test_trial_start_is_trial_start_timestamp_from_session_start(records):
    session = merge_session([records])
    expected = [round(ts - TRIAL_START_TIMESTAMPS[0], 4) for ts in TRIAL_START_TIMESTAMPS]
    assert [round(t.start_time, 4) for t in session.trials] == expected
    # stop: StopLicking entry (trial 1 enters it at 5.4076 s)
    assert session.trials[0].stop_time == pytest.approx(5.4076)
    assert session.trials[10].stop_time == pytest.approx(473.164 + 5.0241)


def test_events_of_a_plain_trial(records):
    events = [(e.event_type, round(e.time, 4), round(e.duration, 4)) for e in records.trials[0].events]
    assert events == [("presample", 0.5, 0.43), ("sample", 0.93, 1.2), ("delay", 2.13, 1.2), ("go", 3.33, 1.5),
                      ("trialend", 6.9076, 0.0)]


def test_events_of_a_trial_with_repeated_sample_periods(records):
    # Trial 4 re-enters SamplePeriod after each EarlyLickSample: one sample event per entry.
    events = [(e.event_type, round(e.time, 4)) for e in records.trials[3].events]
    samples = [0.93, 1.2767, 1.5202, 1.9912, 2.1288, 2.3034, 2.3292]
    assert events == [("presample", 0.5)] + [("sample", t) for t in samples] + [("delay", 3.5292), ("go", 4.7292),
                                                                                 ("trialend", 7.3659)]


def test_go_is_the_first_response_cue(records):
    # Trial 7 enters ResponseCue four times (NoResponse loops back to it): one go event.
    assert [round(e.time, 2) for e in records.trials[6].events if e.event_type == "go"] == [3.33]


def test_licks_by_port_name(records):
    # Trial 1: Port2In twice (codes 71). Trial 3: Port2In once, Port1In five times.
    def licks(trial):
        return [(a.action_event_type, round(a.time, 4)) for a in trial.actions]

    assert licks(records.trials[0]) == [("right lick", 3.8776), ("right lick", 4.2612)]
    assert licks(records.trials[2]) == [("right lick", 3.524)] + [
        ("left lick", t) for t in (3.7198, 3.9063, 4.1329, 4.3188, 4.5447)
    ]
    # Port1Out (code 70) is not a lick: the original pipeline's bug.
    assert sum(len(t.actions) for t in records.trials) == 2 + 3 + 6 + 11 + 5 + 1 + 3 + 26 + 2 + 2 + 2


def test_records_carry_what_was_read(records):
    status = REAL_SESSION.stat()
    assert records.sha256 == hashlib.sha256(REAL_SESSION.read_bytes()).hexdigest()
    assert (records.size, records.mtime) == (status.st_size, status.st_mtime)


def test_its_info_session_date_agrees_with_its_name(records):
    info = load_mat(REAL_SESSION, ["SessionData"])["SessionData"]["Info"]
    assert info["SessionDate"] == "25-Feb-2018" and records.name.session_date == date(2018, 2, 25)


def test_parsing_leaves_the_file_untouched(records):
    before = (REAL_SESSION.stat().st_mtime_ns, REAL_SESSION.read_bytes())
    parse_behavior_file(REAL_SESSION)
    assert (REAL_SESSION.stat().st_mtime_ns, REAL_SESSION.read_bytes()) == before
