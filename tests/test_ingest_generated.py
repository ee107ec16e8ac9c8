"""Backfill of generated sessions: split sessions, bad input, filters, concurrency."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta

import pytest

import bpodgen
from conftest import REPO
from mapd.rescan import rescan
from mapd.find.scan import ScanScope
from mapd.runtime import open_database
from mapd.schemas import experiment, ingest
from mapd.subjects import SubjectEntry, add_subjects

DAY = datetime(2018, 3, 1, 9, 30, 0)


@pytest.fixture
def config(db, load, rig_root):
    config = load({"RRig": rig_root})
    open_database(config)
    add_subjects([SubjectEntry(subject_id=1001, h2o="dl7"), SubjectEntry(subject_id=1002, h2o="dl8")])
    return config


def write(root, start, h2o="dl7", **kwargs):
    kwargs.setdefault("n_trials", 20)
    return bpodgen.write_session(bpodgen.session_path(root, h2o, "tw", start), h2o=h2o, start=start, **kwargs)


def sessions(subject_id=1001):
    return (experiment.Session & {"subject_id": subject_id}).to_dicts(order_by="session")


def write_split_day(root, *, later: bool = True):
    """A split day: 40 trials whose 6th and last two are skipped, then 30 whose first is skipped.

    Returns the files and the Bpod trial numbers a correct ingest gives the day's trials.
    """
    first = write(root, DAY, n_trials=40, seed=1, missing_state_trials=[5, 38], protocol_type=[7] * 39 + [1],
                  stim_codes=[4 if i in (2, 20) else 0 for i in range(40)])
    second = None
    if later:
        second = write(root, DAY + timedelta(minutes=50), n_trials=30, seed=2, missing_state_trials=[0],
                       stim_codes=[{3: 6, 4: 5, 29: 4}.get(i, 0) for i in range(30)])
    numbers = [n for n in range(1, 41) if n not in (6, 39, 40)] + [40 + n for n in range(2, 31)]
    return first, second, numbers


def session_trials(subject_id=1001):
    return (experiment.SessionTrial & {"subject_id": subject_id}).to_dicts(order_by="trial")


def assert_split_day_rows(numbers):
    """The split day's rows, whether its files came together or one after the other."""
    assert len(sessions()) == 1 and sessions()[0]["bpod_trials"] == 70
    trials = session_trials()
    assert [t["trial"] for t in trials] == numbers  # Bpod's numbers: gaps where trials were skipped
    assert float(trials[numbers.index(42)]["start_time"]) > 3000.0  # the second file starts 50 min in
    assert len({t["trial_uid"] for t in trials}) == len(numbers)
    files = ingest.BehaviorIngest.BehaviorFile.to_dicts(order_by="behavior_file")
    assert [(f["trial_offset"], f["rig"]) for f in files] == [(0, "RRig"), (40, "RRig")]
    # Photostim: protocol 4 in both files, 6 and 5 in the second; one Photostim row per protocol.
    events = experiment.PhotostimEvent.to_dicts(order_by="trial")
    assert [(e["trial"], e["photo_stim"], float(e["power"])) for e in events] == [
        (3, 4, 5.5), (21, 4, 5.5), (44, 6, 5.5), (45, 5, 5.5), (70, 4, 5.5)]
    assert experiment.PhotostimTrial.to_arrays("trial", order_by="trial").tolist() == [3, 21, 44, 45, 70]
    photostims = experiment.Photostim.to_dicts(order_by="photo_stim")
    assert [(p["photo_stim"], p["photostim_device"], float(p["duration"])) for p in photostims] == [
        (4, "OBIS470", 0.5), (5, "OBIS470", 0.5), (6, "OBIS470", 0.5)]
    locations = experiment.Photostim.PhotostimLocation.to_dicts(order_by=("photo_stim", "ml_location"))
    assert [(p["photo_stim"], p["brain_area"], p["skull_reference"], float(p["ap_location"]),
             float(p["ml_location"]), float(p["depth"]), float(p["theta"]), float(p["phi"])) for p in locations] == [
        (4, "ALM", "Bregma", 2500.0, -1500.0, 0.0, 15.0, 15.0), (5, "ALM", "Bregma", 2500.0, 1500.0, 0.0, 15.0, 15.0),
        (6, "ALM", "Bregma", 2500.0, -1500.0, 0.0, 15.0, 15.0), (6, "ALM", "Bregma", 2500.0, 1500.0, 0.0, 15.0, 15.0)]


def test_split_session_is_ingested_as_one(config, rig_root):
    first, second, numbers = write_split_day(rig_root)
    summary = rescan(config)
    assert summary.files["ingested"] == 2 and summary.sessions == 1
    assert_split_day_rows(numbers)
    # Photostim at the first DelayPeriod entry, trialend at the TrialEnd entry (s from trial start).
    delay = first.trials[2].events[[e.kind for e in first.trials[2].events].index("delay")].time
    assert float((experiment.PhotostimEvent & {"trial": 3}).fetch1("photostim_event_time")) == pytest.approx(
        delay, abs=5e-4)
    end = (experiment.TrialEvent & {"trial": 41 + 1, "trial_event_type": "trialend"}).fetch1("trial_event_time")
    assert float(end) == pytest.approx(second.trials[1].trial_end)


def test_a_later_file_of_an_ingested_day_is_appended_continuing_bpods_count(config, rig_root):
    _, _, numbers = write_split_day(rig_root, later=False)
    rescan(config)
    assert sessions()[0]["bpod_trials"] == 40 and session_trials()[-1]["trial"] == 38
    write_split_day(rig_root)  # the same first file, and now the later one
    summary = rescan(config)
    assert summary.files == {"ingested": 1, "already ingested": 1}
    # The same rows as when both files came at once: the second file's trials start at 41,
    # after the first file's 40 Bpod trials, though its last ingested trial is 38.
    assert_split_day_rows(numbers)


def test_photostim_codes_that_are_no_protocol_are_notes_and_warnings(config, rig_root):
    generated = write(rig_root, DAY, n_trials=10, seed=3, stim_codes=[0, 2, 3, 0, 2, 0, 0, 0, 0, 0])
    rescan(config)
    notes = (experiment.TrialNote & {"trial_note_type": "photostim code"}).to_dicts(order_by="trial")
    assert [(n["trial"], n["trial_note"]) for n in notes] == [(2, "2"), (3, "3"), (5, "2")]
    assert len(experiment.PhotostimTrial()) == 0 and len(experiment.Photostim()) == 0
    warnings = (ingest.SourceFile & {"state": "ingested"}).fetch1("detail")["warnings"]
    assert {reason.split(" is ")[0]: count for reason, count in warnings.items()} == {
        "StimTrials code 2": 2, "StimTrials code 3": 1}
    assert len(generated.ingested) == 10


def test_an_earlier_file_of_an_ingested_day_is_a_recorded_conflict(config, rig_root):
    write(rig_root, DAY + timedelta(minutes=50), n_trials=10, seed=2)
    rescan(config)
    early = write(rig_root, DAY, n_trials=10, seed=1)
    summary = rescan(config)
    assert summary.files["failed"] == 1 and not summary.ok
    assert "starts before the last of them" in summary.problems[0].reason
    assert len(experiment.SessionTrial()) == 10
    assert early.path.exists()


def test_nan_durations_are_recorded_as_corrected(config, rig_root):
    generated = write(rig_root, DAY, n_trials=10, seed=4, nan_duration_trials=[3])
    rescan(config)
    corrected = ingest.BehaviorIngest.CorrectedTrialEvents.to_dicts()
    expected = sum(e.corrected for t in generated.ingested for e in t.events)
    assert expected > 0 and len(corrected) == expected
    assert {c["trial"] for c in corrected} == {4}


def test_bad_files_are_recorded_and_do_not_stop_the_others(config, rig_root):
    good = write(rig_root, DAY, n_trials=10)
    bad = {kind: bpodgen.write_bad_file(bpodgen.session_path(rig_root, "dl7", "tw", DAY + timedelta(days=n + 1)),
                                        kind)
           for n, kind in enumerate(bpodgen.BAD_KINDS)}
    misnamed = rig_root / "dl7" / "tw" / "Session Data" / "dl7_session.mat"
    misnamed.write_bytes(good.path.read_bytes())
    snapshots = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in [*bad.values(), misnamed]}

    summary = rescan(config)
    # A name off the session pattern is not a session: ignored, not a failure.
    assert summary.files["ingested"] == 1 and summary.files["failed"] == len(bad)
    assert summary.files["ignored"] == 1
    problems = {p.file.path: p.reason for p in summary.problems}
    assert set(problems) == {*bad.values(), misnamed}
    assert problems[misnamed].startswith("not a session file") and "does not match" in problems[misnamed]
    assert all(reason for reason in problems.values())
    assert len(ingest.SourceFile & {"state": "failed"}) == len(bad)
    assert len(ingest.SourceFile & {"state": "ignored"}) == 1
    assert all((path.read_bytes(), path.stat().st_mtime_ns) == before for path, before in snapshots.items())


def test_a_file_with_no_ingestible_trial_creates_no_session(config, rig_root):
    write(rig_root, DAY, n_trials=12, no_gui_fields=True)
    summary = rescan(config)
    assert summary.files["skipped"] == 1 and summary.ok
    assert summary.problems[0].reason == "no ingestible trial (12 no GUI.ProtocolType)"
    assert sessions() == []
    row = (ingest.SourceFile & {"state": "skipped"}).to_dicts()[0]
    assert row["detail"] == {"skipped_trials": {"no GUI.ProtocolType": 12}}


def test_sessions_are_numbered_by_date_with_parallel_workers(config, rig_root):
    days = [DAY + timedelta(days=d) for d in (4, 0, 2, 1, 3)]
    for n, day in enumerate(days):
        write(rig_root, day, n_trials=15, seed=n)
        write(rig_root, day, h2o="dl8", n_trials=15, seed=10 + n)
    summary = rescan(config, workers=2)
    assert summary.sessions == 10 and summary.ok
    for subject_id in (1001, 1002):
        numbered = [(s["session"], s["session_date"]) for s in sessions(subject_id)]
        assert [n for n, _ in numbered] == [1, 2, 3, 4, 5]
        assert [d for _, d in numbered] == sorted(d for _, d in numbered)


def test_a_v73_session_is_ingested(config, rig_root):
    generated = write(rig_root, DAY, n_trials=25, fmt="v7.3", seed=9)
    summary = rescan(config)
    assert summary.files["ingested"] == 1
    assert len(experiment.BehaviorTrial()) == len(generated.ingested)
    outcomes = experiment.BehaviorTrial.to_arrays("outcome", order_by="trial").tolist()
    assert outcomes == [t.outcome for t in generated.ingested]


def test_rig_date_and_path_filters(db, load, tmp_path):
    rig_a, rig_b = tmp_path / "A", tmp_path / "B"
    config = load({"RigA": rig_a, "RigB": rig_b})
    open_database(config)
    add_subjects([SubjectEntry(subject_id=1001, h2o="dl7"), SubjectEntry(subject_id=1002, h2o="dl8")])
    write(rig_a, DAY)
    write(rig_a, DAY + timedelta(days=3))
    write(rig_b, DAY, h2o="dl8")

    assert rescan(config, ScanScope(rigs=frozenset({"RigB"}))).files["ingested"] == 1
    assert len(sessions(1002)) == 1 and sessions() == []
    since = (DAY + timedelta(days=1)).date()
    assert rescan(config, ScanScope(rigs=frozenset({"RigA"}), since=since)).files["ingested"] == 1
    assert [s["session_date"] for s in sessions()] == [(DAY + timedelta(days=3)).date()]
    assert rescan(config, ScanScope(paths=(rig_a / "dl7",))).files == {"ingested": 1, "already ingested": 1}
    assert sessions(1002)[0]["rig"] == "RigB"


def test_two_concurrent_rescans_ingest_each_session_once(config, rig_root, write_config):
    for day in range(6):
        write(rig_root, DAY + timedelta(days=day), n_trials=30, seed=day)
    config_path = write_config({"RRig": rig_root})
    command = [sys.executable, "-m", "mapd", "--config", str(config_path), "rescan", "--workers", "1"]
    runs = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert len(sessions()) == 6
    assert len(experiment.SessionTrial()) == 6 * 30
    assert len(ingest.BehaviorIngest.BehaviorFile()) == 6


def test_rescan_waits_for_a_file_being_written_then_ingests_it(db, load, rig_root):
    config = load({"RRig": rig_root}, daemon={"settle_seconds": 1.5})
    open_database(config)
    add_subjects([SubjectEntry(subject_id=1001, h2o="dl7")])
    generated = write(rig_root, DAY)  # written just now: a rig may still be writing it
    waits = []
    started = time.monotonic()
    summary = rescan(config, on_wait=lambda files, seconds: waits.append((files, seconds)))
    assert summary.files == {"ingested": 1} and summary.ok
    assert time.monotonic() - started >= 1.5
    assert len(waits) == 1 and waits[0][0] == 1 and 1.0 < waits[0][1] <= 1.6
    assert len(sessions()) == 1
    assert (ingest.SourceFile & {"state": "ingested"}).to_dicts()[0]["file_mtime"] == generated.path.stat().st_mtime


def test_rescan_no_wait_leaves_a_file_being_written_for_later(db, load, rig_root):
    config = load({"RRig": rig_root}, daemon={"settle_seconds": 30})
    open_database(config)
    add_subjects([SubjectEntry(subject_id=1001, h2o="dl7")])
    generated = write(rig_root, DAY)  # written just now: a rig may still be writing it
    summary = rescan(config, wait=False)
    assert summary.files == {"skipped": 1} and summary.ok
    assert "still being written" in summary.problems[0].reason
    assert sessions() == [] and (ingest.SourceFile & {"state": "pending"})
    past = generated.path.stat().st_mtime - 60
    os.utime(generated.path, (past, past))
    assert rescan(config).files == {"ingested": 1}


def test_rescan_gives_up_waiting_on_a_file_that_keeps_changing(tmp_path):
    from mapd.rescan import _Settling
    from mapd.find.files import FileOnDisk
    from mapd.queue.policy import Policy

    path = tmp_path / "live.mat"
    path.write_bytes(b"x")

    def scan():  # a rig appending a trial before every look
        with path.open("ab") as out:
            out.write(b"trial")
        stat = path.stat()
        return [FileOnDisk(path, tmp_path, "RRig", stat.st_size, stat.st_mtime)]

    waits = []
    waiter = _Settling(Policy(0.2, 1, 1, 1), True, lambda files, seconds: waits.append(seconds))
    waiter.limit = 1.0  # the real one is at least a minute
    started = time.monotonic()
    files, writing = waiter.look(scan, lambda found: found)
    assert writing == {path} and files[0].size == path.stat().st_size
    assert 1.0 <= time.monotonic() - started < 3 and len(waits) >= 4
