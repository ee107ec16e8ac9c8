"""The parser on generated sessions, against the generator's independently derived expectations."""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timedelta

import pytest

import bpodgen
from mapd.formats.behavior import BehaviorFileName, BehaviorFormatError, merge_session, parse_behavior_file

START = datetime(2018, 3, 1, 9, 30, 0)


def generate(root, protocol, start, **options):
    """A generated session named for ``start``, which its Info.SessionDate agrees with."""
    return bpodgen.write_session(bpodgen.session_path(root, "dl7", protocol, start), start=start, **options)


def assert_matches(records, generated, session=None):
    """Every ingested trial of ``records`` (the session's only file) equals the generator's expectation."""
    session = session or merge_session([records])
    expected = generated.ingested
    assert len(records.trials) == len(expected)
    assert sum(records.skipped.values()) == len(generated.skipped)
    assert records.trial_count == session.trial_count == generated.n_trials
    # Bpod's trial numbers: skipped trials keep theirs.
    assert [trial.trial for trial in session.trials] == [want.trial_number for want in expected]
    by_index = {trial.source.index_in_file: trial for trial in session.trials}
    first_start = generated.trials[0].start_timestamp
    for want in expected:
        got = by_index[want.index + 1]
        assert got.source.instruction == want.instruction
        assert got.source.outcome == want.outcome
        assert got.source.early_lick == want.early_lick
        assert got.source.notes == want.notes
        photostim = got.source.photostim
        if want.photostim_time is None:
            assert photostim is None
        else:
            assert (photostim.photo_stim, photostim.time, photostim.power) == (
                want.photostim_protocol, pytest.approx(want.photostim_time), 5.5)
        assert got.start_time == pytest.approx(want.start_timestamp - first_start, abs=1e-6)
        assert [(e.event_type, round(e.time, 4)) for e in got.events] == [(e.kind, round(e.time, 4))
                                                                          for e in want.trial_events]
        assert [e.duration for e in got.events] == pytest.approx([e.duration for e in want.trial_events])
        assert [e.corrected for e in got.events] == [e.corrected for e in want.trial_events]
        left = [a.time for a in got.source.actions if a.action_event_type == "left lick"]
        right = [a.time for a in got.source.actions if a.action_event_type == "right lick"]
        assert left == pytest.approx(list(want.left_licks)) and right == pytest.approx(list(want.right_licks))


# v7.3 (HDF5) reads one dataset at a time: ~15 ms a trial here, so its long session is shorter.
@pytest.mark.parametrize("fmt, n_trials", [("v5", 500), ("v7.3", 150)])
def test_a_long_session(tmp_path, fmt, n_trials):
    generated = generate(tmp_path, "TW_autoTrain", START, n_trials=n_trials, seed=7, fmt=fmt)
    records = parse_behavior_file(generated.path)
    assert records.name == BehaviorFileName("dl7", "TW_autoTrain", START)
    assert len(records.trials) == n_trials
    assert_matches(records, generated)


@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_a_one_trial_session_survives_squeezing(tmp_path, fmt):
    generated = generate(tmp_path, "tw", START, n_trials=1, seed=3, fmt=fmt)
    records = parse_behavior_file(generated.path)
    assert len(records.trials) == 1
    assert_matches(records, generated)


def test_skipped_trials_are_counted_by_reason(tmp_path):
    protocol_types = [7] * 30
    protocol_types[4] = 2  # licking protocol
    protocol_types[5] = 1  # valve calibration
    generated = generate(tmp_path, "tw", START, n_trials=30, seed=5,
                         protocol_type=protocol_types, missing_state_trials=[10, 11, 12])
    records = parse_behavior_file(generated.path)
    assert len(generated.skipped) == 5
    assert records.skipped["GUI.ProtocolType < 3"] == 2
    assert sum(count for reason, count in records.skipped.items() if reason.startswith("missing states")) == 3
    assert len(records.trials) == 25
    assert_matches(records, generated)


def test_skipped_trials_leave_gaps_in_bpods_trial_numbers(tmp_path):
    protocol_types = [7] * 12
    protocol_types[0] = 2  # the first trial, too
    generated = generate(tmp_path, "tw", START, n_trials=12, seed=6, protocol_type=protocol_types,
                         missing_state_trials=[4, 5, 11])  # ... and the last one
    session = merge_session([parse_behavior_file(generated.path)])
    assert [t.trial for t in session.trials] == [2, 3, 4, 7, 8, 9, 10, 11]
    assert session.trial_count == 12 and len(session.trials) == 8
    assert_matches(session.files[0], generated, session)


def test_nan_durations_take_the_last_good_one_and_are_marked(tmp_path):
    generated = generate(tmp_path, "tw", START, n_trials=20, seed=11, nan_duration_trials=[0, 6, 7])
    records = parse_behavior_file(generated.path)
    session = merge_session([records])
    corrected = [(t.trial, e.event_type) for t in session.trials for e in t.events if e.corrected]
    assert corrected and all(t in (1, 7, 8) for t, _ in corrected)
    # Trial 1 has no earlier good duration: 0.0.
    assert all(e.duration == 0.0 for e in session.trials[0].events if e.corrected)
    assert all(not math.isnan(e.duration) for t in session.trials for e in t.events)
    assert_matches(records, generated, session)


def test_another_labs_protocol_has_no_ingestible_trial(tmp_path):
    generated = generate(tmp_path, "other", START, n_trials=12, no_gui_fields=True)
    records = parse_behavior_file(generated.path)
    assert records.trials == ()
    assert records.skipped == {"no GUI.ProtocolType": 12}


def test_split_session_is_one_session_in_time_order(tmp_path):
    later = generate(tmp_path, "tw", START + timedelta(minutes=50), n_trials=30, seed=2)
    first = generate(tmp_path, "tw", START, n_trials=40, seed=1)
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


def test_a_split_sessions_later_file_continues_bpods_count_skipped_trials_included(tmp_path):
    # The first file's last two trials are skipped (one lacks a state, one is a licking trial):
    # the second file's trials still start at 13, after all 12 of the first.
    first = generate(tmp_path, "tw", START, n_trials=12, seed=1, missing_state_trials=[3, 10],
                     protocol_type=[7] * 11 + [2])
    later = generate(tmp_path, "tw", START + timedelta(minutes=50), n_trials=8, seed=2, missing_state_trials=[0])
    session = merge_session([parse_behavior_file(first.path), parse_behavior_file(later.path)])
    assert session.file_trial_offsets == (0, 12) and session.trial_count == 20
    assert [t.trial for t in session.trials] == [1, 2, 3, 5, 6, 7, 8, 9, 10, 14, 15, 16, 17, 18, 19, 20]
    assert [t.trial - 12 for t in session.trials[9:]] == [t.trial_number for t in later.ingested]


# StimTrials: 0 none; 4, 5, 6 the photostim protocols; 2 and 3.5 no protocol. Trial 8 (index 7)
# is skipped (a missing state): its code 4 gives nothing.
STIM_CODES = [0, 4, 5, 6, 2, 0, 4, 4, 3.5, 2, 6, 0]


@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_photostim_protocols_4_5_6_and_other_codes_as_notes_and_warnings(tmp_path, fmt):
    generated = generate(tmp_path, "tw", START, n_trials=12, seed=8, fmt=fmt, stim_codes=STIM_CODES,
                         missing_state_trials=[7])
    records = parse_behavior_file(generated.path)
    assert_matches(records, generated)
    stims = {t.index_in_file: t.photostim for t in records.trials if t.photostim}
    assert {index: stim.photo_stim for index, stim in stims.items()} == {2: 4, 3: 5, 4: 6, 7: 4, 11: 6}
    for index, stim in stims.items():  # at the first DelayPeriod entry, 5.5 mW
        delays = [e.time for e in records.trials[index - 1].events if e.event_type == "delay"]
        assert (stim.time, stim.power) == (delays[0], 5.5)
    assert {t.index_in_file: t.notes["photostim code"] for t in records.trials if "photostim code" in t.notes} == {
        5: "2", 9: "3.5", 10: "2"}
    assert records.warnings == {
        "StimTrials code 2 is no photostim protocol (4, 5, 6): kept as trial note 'photostim code', "
        "no photostim recorded": 2,
        "StimTrials code 3.5 is no photostim protocol (4, 5, 6): kept as trial note 'photostim code', "
        "no photostim recorded": 1}
    protocols = merge_session([records]).photostim_protocols
    assert [(p.photo_stim, p.device, p.duration) for p in protocols] == [(4, "OBIS470", 0.5), (5, "OBIS470", 0.5),
                                                                         (6, "OBIS470", 0.5)]
    assert [[(s.brain_area, s.ap_location, s.ml_location) for s in p.sites] for p in protocols] == [
        [("ALM", 2500.0, -1500.0)], [("ALM", 2500.0, 1500.0)], [("ALM", 2500.0, -1500.0), ("ALM", 2500.0, 1500.0)]]


def test_a_file_without_stim_trials_has_no_photostim(tmp_path):
    built = bpodgen.build_session(n_trials=5, start=START, stim_codes=4)
    del built.session_data["StimTrials"]
    path = bpodgen.session_path(tmp_path, "dl7", "tw", START)
    path.parent.mkdir(parents=True)
    bpodgen.write_mat(path, {"SessionData": built.session_data}, start=START)
    records = parse_behavior_file(path)
    assert len(records.trials) == 5 and records.warnings == {}
    assert all(t.photostim is None and "photostim code" not in t.notes for t in records.trials)


def test_files_of_different_days_are_not_merged(tmp_path):
    a = generate(tmp_path, "tw", START, n_trials=3)
    b = generate(tmp_path, "tw", START + timedelta(days=1), n_trials=3)
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


# --------------------------------------------------------------------------
# What was read; files that are not MAP sessions of the day their name says.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_records_carry_the_checksum_size_and_mtime_of_the_bytes_parsed(tmp_path, fmt):
    generated = generate(tmp_path, "tw", START, n_trials=5, fmt=fmt)
    records = parse_behavior_file(generated.path)
    status = generated.path.stat()
    assert records.sha256 == hashlib.sha256(generated.path.read_bytes()).hexdigest()
    assert (records.size, records.mtime) == (status.st_size, status.st_mtime)


def write_with_info(root, start, info_changes):
    """A session named for ``start`` whose SessionData.Info is changed (None removes a key)."""
    built = bpodgen.build_session(n_trials=4, start=start)
    info = built.session_data["Info"]
    for key, value in info_changes.items():
        if value is None:
            info.pop(key)
        else:
            info[key] = value
    path = bpodgen.session_path(root, "dl7", "tw", start)
    path.parent.mkdir(parents=True, exist_ok=True)
    bpodgen.write_mat(path, {"SessionData": built.session_data}, start=start)
    return path


@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_a_renamed_copy_of_another_days_session_is_refused_naming_both_dates(tmp_path, fmt):
    # Written on 25 Feb 2018, then copied under the name of 1 March.
    generated = bpodgen.write_session(bpodgen.session_path(tmp_path, "dl7", "tw", START), n_trials=4, fmt=fmt,
                                      start=datetime(2018, 2, 25, 10, 25, 8))
    with pytest.raises(BehaviorFormatError) as error:
        parse_behavior_file(generated.path)
    assert str(generated.path) in str(error.value)
    assert error.value.problem == ("the file name's date 2018-03-01 disagrees with SessionData.Info.SessionDate "
                                   "25-Feb-2018 (2018-02-25): a renamed copy of another session?")
    assert not error.value.transient


@pytest.mark.parametrize("session_date", [None, "", "sometime in March", "31-Foo-2018", "31-Feb-2018"])
def test_a_missing_or_unreadable_session_date_is_not_an_error(tmp_path, session_date):
    path = write_with_info(tmp_path, START, {"SessionDate": session_date})
    records = parse_behavior_file(path)
    assert records.session_date == START.date() and len(records.trials) == 4


def test_the_session_date_may_differ_from_the_name_only_in_case_and_spaces(tmp_path):
    path = write_with_info(tmp_path, START, {"SessionDate": " 01-MAR-2018 "})
    assert len(parse_behavior_file(path).trials) == 4


@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_a_bpod_session_of_another_protocol_is_skipped_not_failed(tmp_path, fmt):
    path = bpodgen.write_other_protocol(bpodgen.session_path(tmp_path, "dl7", "Olfaction", START), n_trials=15,
                                        fmt=fmt, start=START)
    records = parse_behavior_file(path)
    assert records.trials == ()
    assert records.skipped == {"not a MAP delay-response session (no TrialTypes, TrialSettings)": 15}
    assert records.trial_count == 15 and records.session_date == START.date()
    assert records.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_session_lacking_one_map_field_is_another_protocol_too(tmp_path):
    built = bpodgen.build_session(n_trials=6, start=START)
    del built.session_data["TrialSettings"]
    path = bpodgen.session_path(tmp_path, "dl7", "tw", START)
    path.parent.mkdir(parents=True)
    bpodgen.write_mat(path, {"SessionData": built.session_data}, start=START)
    assert parse_behavior_file(path).skipped == {"not a MAP delay-response session (no TrialSettings)": 6}


@pytest.mark.parametrize("missing", [("RawData",), ("TrialStartTimestamp", "TrialTypes")])
def test_a_file_without_the_bpod_core_stays_a_bad_file(tmp_path, missing):
    built = bpodgen.build_session(n_trials=6, start=START)
    for key in missing:
        del built.session_data[key]
    path = bpodgen.session_path(tmp_path, "dl7", "tw", START)
    path.parent.mkdir(parents=True)
    bpodgen.write_mat(path, {"SessionData": built.session_data}, start=START)
    with pytest.raises(BehaviorFormatError, match=f"SessionData lacks {', '.join(missing)}$"):
        parse_behavior_file(path)


@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_a_file_declaring_more_than_the_bound_is_refused(tmp_path, fmt):
    path = bpodgen.session_path(tmp_path, "dl7", "tw", START)
    write = bpodgen.write_v5_bomb if fmt == "v5" else bpodgen.write_v73_bomb
    write(path, 20 * 2**20)
    with pytest.raises(BehaviorFormatError) as error:
        parse_behavior_file(path, max_inflated_bytes=16 * 2**20)
    assert "of content, over ingest.max_inflated_bytes (16 MiB)" in error.value.problem
    assert str(path) in str(error.value) and not error.value.transient
