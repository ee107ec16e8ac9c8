"""The parser on generated sessions, against the generator's independently derived expectations."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pytest

import bpodgen
from mapd.formats.behavior import BehaviorFileName, BehaviorFormatError, merge_session, parse_behavior_file

START = datetime(2018, 3, 1, 9, 30, 0)


def assert_matches(records, generated, session=None):
    """Every ingested trial of ``records`` equals the generator's expectation."""
    session = session or merge_session([records])
    expected = generated.ingested
    assert len(records.trials) == len(expected)
    assert sum(records.skipped.values()) == len(generated.skipped)
    by_index = {trial.source.index_in_file: trial for trial in session.trials}
    first_start = generated.trials[0].start_timestamp
    for want in expected:
        got = by_index[want.index + 1]
        assert got.source.instruction == want.instruction
        assert got.source.outcome == want.outcome
        assert got.source.early_lick == want.early_lick
        assert got.source.notes == {"protocol #": str(want.protocol_type), "autolearn": str(want.autolearn),
                                    "bitcode": want.bitcode}
        assert got.start_time == pytest.approx(want.start_timestamp - first_start, abs=1e-6)
        assert [(e.event_type, round(e.time, 4)) for e in got.events] == [(e.kind, round(e.time, 4))
                                                                          for e in want.events]
        assert [e.duration for e in got.events] == pytest.approx([e.duration for e in want.events])
        assert [e.corrected for e in got.events] == [e.corrected for e in want.events]
        left = [a.time for a in got.source.actions if a.action_event_type == "left lick"]
        right = [a.time for a in got.source.actions if a.action_event_type == "right lick"]
        assert left == pytest.approx(list(want.left_licks)) and right == pytest.approx(list(want.right_licks))


@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_a_500_trial_session(tmp_path, fmt):
    generated = bpodgen.write_session(bpodgen.session_path(tmp_path, "dl7", "TW_autoTrain", START), n_trials=500,
                                      seed=7, fmt=fmt)
    records = parse_behavior_file(generated.path)
    assert records.name == BehaviorFileName("dl7", "TW_autoTrain", START)
    assert len(records.trials) == 500
    assert_matches(records, generated)


@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_a_one_trial_session_survives_squeezing(tmp_path, fmt):
    generated = bpodgen.write_session(bpodgen.session_path(tmp_path, "dl7", "tw", START), n_trials=1, seed=3,
                                      fmt=fmt)
    records = parse_behavior_file(generated.path)
    assert len(records.trials) == 1
    assert_matches(records, generated)


def test_skipped_trials_are_counted_by_reason(tmp_path):
    protocol_types = [7] * 30
    protocol_types[4] = 2  # licking protocol
    protocol_types[5] = 1  # valve calibration
    generated = bpodgen.write_session(bpodgen.session_path(tmp_path, "dl7", "tw", START), n_trials=30, seed=5,
                                      protocol_type=protocol_types, missing_state_trials=[10, 11, 12])
    records = parse_behavior_file(generated.path)
    assert len(generated.skipped) == 5
    assert records.skipped["GUI.ProtocolType < 3"] == 2
    assert sum(count for reason, count in records.skipped.items() if reason.startswith("missing states")) == 3
    assert len(records.trials) == 25
    assert_matches(records, generated)


def test_nan_durations_take_the_last_good_one_and_are_marked(tmp_path):
    generated = bpodgen.write_session(bpodgen.session_path(tmp_path, "dl7", "tw", START), n_trials=20, seed=11,
                                      nan_duration_trials=[0, 6, 7])
    records = parse_behavior_file(generated.path)
    session = merge_session([records])
    corrected = [(t.trial, e.event_type) for t in session.trials for e in t.events if e.corrected]
    assert corrected and all(t in (1, 7, 8) for t, _ in corrected)
    # Trial 1 has no earlier good duration: 0.0.
    assert all(e.duration == 0.0 for e in session.trials[0].events if e.corrected)
    assert all(not math.isnan(e.duration) for t in session.trials for e in t.events)
    assert_matches(records, generated, session)


def test_another_labs_protocol_has_no_ingestible_trial(tmp_path):
    generated = bpodgen.write_session(bpodgen.session_path(tmp_path, "dl7", "other", START), n_trials=12,
                                      no_gui_fields=True)
    records = parse_behavior_file(generated.path)
    assert records.trials == ()
    assert records.skipped == {"no GUI.ProtocolType": 12}


def test_split_session_is_one_session_in_time_order(tmp_path):
    later = bpodgen.write_session(bpodgen.session_path(tmp_path, "dl7", "tw", START + timedelta(minutes=50)),
                                  n_trials=30, seed=2)
    first = bpodgen.write_session(bpodgen.session_path(tmp_path, "dl7", "tw", START), n_trials=40, seed=1)
    session = merge_session([parse_behavior_file(later.path), parse_behavior_file(first.path)])
    assert [f.path for f in session.files] == [first.path, later.path]
    assert session.file_trial_offsets == (0, 40)
    assert [t.trial for t in session.trials] == list(range(1, 71))
    # The second file's trials start 50 minutes (3000 s) after the first file's start.
    second_first = later.trials[0].start_timestamp
    assert session.trials[40].start_time == pytest.approx(3000.0)
    assert session.trials[41].start_time == pytest.approx(3000.0 + later.trials[1].start_timestamp - second_first)
    starts = [t.start_time for t in session.trials]
    assert starts == sorted(starts)


def test_files_of_different_days_are_not_merged(tmp_path):
    a = bpodgen.write_session(bpodgen.session_path(tmp_path, "dl7", "tw", START), n_trials=3)
    b = bpodgen.write_session(bpodgen.session_path(tmp_path, "dl7", "tw", START + timedelta(days=1)), n_trials=3)
    with pytest.raises(ValueError, match="different sessions"):
        merge_session([parse_behavior_file(a.path), parse_behavior_file(b.path)])


@pytest.mark.parametrize("kind, problem", [
    ("empty", "empty"),
    ("truncated", ""),
    ("not_mat", ""),
    ("no_sessiondata", "SessionData"),
    ("missing_fields", "SessionData lacks TrialSettings, RawData"),
])
@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_bad_files_raise_an_error_naming_the_file(tmp_path, kind, problem, fmt):
    path = bpodgen.write_bad_file(bpodgen.session_path(tmp_path, "dl7", "tw", START), kind, fmt=fmt)
    before = path.read_bytes()
    with pytest.raises(BehaviorFormatError) as error:
        parse_behavior_file(path)
    assert str(path) in str(error.value)
    assert problem in error.value.problem
    assert path.read_bytes() == before


@pytest.mark.parametrize("name", ["notes.mat", "dl7_20180301_093000.mat", "dl7_tw_2018031_093000.mat",
                                  "dl7_tw_20181301_093000.mat", "7d_tw_20180301_093000.mat"])
def test_names_that_do_not_parse(name):
    with pytest.raises(BehaviorFormatError):
        BehaviorFileName.parse(name)
