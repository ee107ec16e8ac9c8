"""Backfill of the real MAP session into the real embedded PostgreSQL."""

from __future__ import annotations

from datetime import date

import pytest
from structlog.testing import capture_logs

from conftest import place_real_session
from mapd.rescan import rescan
from mapd.runtime import open_database
from mapd.schemas import experiment, ingest
from mapd.subjects import SubjectEntry, add_subjects

COUNTED_TABLES = {
    "Session": experiment.Session,
    "SessionTrial": experiment.SessionTrial,
    "BehaviorTrial": experiment.BehaviorTrial,
    "TrialNote": experiment.TrialNote,
    "TrialEvent": experiment.TrialEvent,
    "ActionEvent": experiment.ActionEvent,
    "BehaviorFile": ingest.BehaviorIngest.BehaviorFile,
    "CorrectedTrialEvents": ingest.BehaviorIngest.CorrectedTrialEvents,
    "Photostim": experiment.Photostim,
    "PhotostimTrial": experiment.PhotostimTrial,
    "PhotostimEvent": experiment.PhotostimEvent,
}
STIM_WARNING = ("StimTrials code 2 is no photostim protocol (4, 5, 6): kept as trial note 'photostim code', "
                "no photostim recorded")


def counts() -> dict[str, int]:
    return {name: len(table()) for name, table in COUNTED_TABLES.items()}


@pytest.fixture
def config(db, load, rig_root):
    config = load({"RRig": rig_root})
    open_database(config)  # enters the rig and session user
    return config


def enter_dl25():
    add_subjects([SubjectEntry(subject_id=407513, h2o="dl25", sex="M")])


def test_real_session_is_ingested_with_every_row(config, rig_root):
    place_real_session(rig_root)
    enter_dl25()
    with capture_logs() as logs:
        summary = rescan(config)
    warned = [entry for entry in logs if entry["event"] == "trials ingested with a warning"]
    assert [(w["log_level"], w["reason"], w["trials"]) for w in warned] == [("warning", STIM_WARNING, 2)]
    assert summary.files["ingested"] == 1 and summary.ok
    assert summary.sessions == 1 and summary.trials == 11

    session = (experiment.Session & {"subject_id": 407513}).to_dicts()
    assert len(session) == 1
    assert session[0]["session"] == 1
    assert session[0]["session_date"] == date(2018, 2, 25)
    assert str(session[0]["session_time"]) == "11:23:28"
    assert session[0]["rig"] == "RRig" and session[0]["username"] == "daveliu"
    assert session[0]["bpod_trials"] == 11

    trials = experiment.SessionTrial.to_dicts(order_by="trial")
    assert [t["trial"] for t in trials] == list(range(1, 12))  # Bpod's numbers: none skipped
    assert float(trials[1]["start_time"]) == pytest.approx(7.241)
    assert float(trials[0]["stop_time"]) == pytest.approx(5.4076)
    assert len({t["trial_uid"] for t in trials}) == 11

    behavior = experiment.BehaviorTrial.to_dicts(order_by="trial")
    assert [b["outcome"] for b in behavior] == ["hit", "hit", "hit", "miss", "hit", "miss", "hit", "hit", "hit",
                                                "hit", "hit"]
    assert [b["trial_instruction"] for b in behavior][:5] == ["right", "right", "right", "left", "left"]
    assert {b["task"] for b in behavior} == {"audio delay"} and {b["task_protocol"] for b in behavior} == {1}
    assert [b["trial"] for b in behavior if b["early_lick"] == "early"] == [4, 8]

    notes = (experiment.TrialNote & {"trial": 1}).to_dicts()
    assert {n["trial_note_type"]: n["trial_note"] for n in notes} == {
        "protocol #": "7", "autolearn": "1", "bitcode": "1111100101111011"}
    # StimTrials code 2 (trials 2 and 9) is no photostim protocol: a note, no photostim rows.
    stim_notes = (experiment.TrialNote & {"trial_note_type": "photostim code"}).to_dicts(order_by="trial")
    assert [(n["trial"], n["trial_note"]) for n in stim_notes] == [(2, "2"), (9, "2")]

    events = (experiment.TrialEvent & {"trial": 1}).to_dicts(order_by="trial_event_id")
    assert [(e["trial_event_type"], float(e["trial_event_time"]), float(e["duration"])) for e in events] == [
        ("presample", 0.5, 0.43), ("sample", 0.93, 1.2), ("delay", 2.13, 1.2), ("go", 3.33, 1.5),
        ("trialend", 6.9076, 0.0)]
    ends = (experiment.TrialEvent & {"trial_event_type": "trialend"}).to_arrays("trial_event_time", order_by="trial")
    assert [float(end) for end in ends] == [6.9076, 6.4992, 6.554, 7.3659, 6.8765, 6.1565, 14.3892, 9.7589, 6.5217,
                                            6.661, 6.5241]
    licks = (experiment.ActionEvent & {"trial": 3}).to_dicts(order_by="action_event_id")
    assert [(a["action_event_type"], float(a["action_event_time"])) for a in licks][:2] == [
        ("right lick", 3.524), ("left lick", 3.7198)]
    assert counts() == {"Session": 1, "SessionTrial": 11, "BehaviorTrial": 11, "TrialNote": 33 + 2,
                        "TrialEvent": 5 * 11 + 6 + 6, "ActionEvent": 63, "BehaviorFile": 1,
                        "CorrectedTrialEvents": 0, "Photostim": 0, "PhotostimTrial": 0, "PhotostimEvent": 0}
    assert ingest.BehaviorIngest.BehaviorFile.to_dicts()[0]["trial_offset"] == 0
    source = (ingest.SourceFile & {"state": "ingested"}).to_dicts()[0]
    assert source["h2o"] == "dl25"
    assert source["detail"]["warnings"] == {STIM_WARNING: 2} and source["detail"]["trials"] == 11


def test_second_rescan_changes_nothing(config, rig_root):
    place_real_session(rig_root)
    enter_dl25()
    rescan(config)
    before = counts()
    summary = rescan(config)
    assert summary.files["already ingested"] == 1 and summary.files["ingested"] == 0
    assert counts() == before


def test_file_waits_for_its_subject_then_is_ingested(config, rig_root):
    place_real_session(rig_root)
    summary = rescan(config)
    assert summary.files["waiting for subject"] == 1 and summary.ok
    waiting = (ingest.SourceFile & {"state": "waiting"}).to_dicts()
    assert len(waiting) == 1 and "dl25" in waiting[0]["reason"]
    assert counts()["Session"] == 0

    enter_dl25()
    summary = rescan(config)
    assert summary.files["ingested"] == 1
    assert len(ingest.SourceFile & {"state": "waiting"}) == 0
    assert counts()["SessionTrial"] == 11


def test_small_files_are_skipped_as_aborted(db, load, rig_root):
    config = load({"RRig": rig_root}, ingest={"min_behavior_file_bytes": 1_000_000})
    open_database(config)
    place_real_session(rig_root)
    enter_dl25()
    summary = rescan(config)
    assert summary.files["skipped"] == 1 and summary.ok
    assert "min_behavior_file_bytes" in summary.problems[0].reason
    assert counts()["Session"] == 0
