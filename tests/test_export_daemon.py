"""``mapd run`` with ``export:``: each session's NWB file and report after it commits, again with its probe
and with a file appended to it;
a failed export shows in ``mapd status`` and never fails the ingest."""

from __future__ import annotations

from datetime import timedelta

import yaml
from pynwb import NWBHDF5IO

import ephysgen
from conftest import run_mapd
from mapd.config import load_config
from mapd.export_handler import SessionExports
from mapd.queue.policy import Policy
from mapd.schemas import experiment, ingest
from mapd.subjects import SubjectEntry, add_subjects
from test_daemon import DAY, daemons, setup, wait_for, write_session  # noqa: F401
from test_daemon_probes import probe_states, with_ephys


def exports() -> dict[tuple[int, str], dict]:
    return {(r["subject_id"], r["target"]): r for r in ingest.SessionExport.to_dicts()}


def test_sessions_are_exported_after_commit_and_again_with_their_probe(setup, daemons, tmp_path):
    rig, write_config = setup
    add_subjects([SubjectEntry(subject_id=7008, h2o="dl8")])
    nwb, reports = tmp_path / "nwb", tmp_path / "reports"
    config = with_ephys(write_config(), tmp_path / "ephys")
    body = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**body, "export": {"nwb": str(nwb), "reports": str(reports)}}))
    (nwb / "sub-7008").parent.mkdir(parents=True)
    (nwb / "sub-7008").write_text("in the way")  # dl8's NWB export fails, its report does not
    daemon = daemons(config)
    generated = write_session(rig, DAY, n_trials=25)
    write_session(rig, DAY, h2o="dl8", n_trials=10)
    wait_for(lambda: len(exports()) == 4, what="both sessions exported", daemon=daemon, timeout=90)
    done = exports()
    behavior_only = nwb / "sub-7007" / "sub-7007_ses-20180502_behavior.nwb"
    assert done[7007, "nwb"]["state"] == "done" and done[7007, "nwb"]["path"] == str(behavior_only)
    assert behavior_only.is_file() and done[7007, "nwb"]["probes"] == 0
    assert done[7008, "reports"]["state"] == "done"
    assert (reports / "sub-7008" / "ses-20180502" / "index.html").is_file()
    assert done[7008, "nwb"]["state"] == "failed" and "sub-7008" in done[7008, "nwb"]["reason"]
    assert set(ingest.SourceFile.to_arrays("state").tolist()) == {"ingested"}  # the ingest did not fail
    loaded = load_config(config)
    assert SessionExports(loaded, Policy.from_config(loaded.daemon)).ready() == []  # nothing to redo, every turn

    ephysgen.write_probe(tmp_path / "ephys", h2o="dl7", session_date=DAY.date(), n_spikes=3000, n_units=4,
                         behavior=ephysgen.behavior_bitcodes(generated.path), skip_first=2)
    wait_for(lambda: probe_states() == ["ingested"] and exports()[7007, "nwb"]["probes"] == 1
             and exports()[7007, "reports"]["probes"] == 1, what="exported again with the probe", daemon=daemon,
             timeout=90)
    with_probe = nwb / "sub-7007" / "sub-7007_ses-20180502_behavior+ecephys.nwb"
    assert exports()[7007, "nwb"]["path"] == str(with_probe) and with_probe.is_file()
    assert not behavior_only.exists()  # replaced by the file with the probe
    assert (reports / "sub-7007" / "ses-20180502" / "probe1_raster_psth.png").is_file()

    # A file appended to the exported session (Bpod restarted that afternoon): exported again, with its trials.
    write_session(rig, DAY + timedelta(hours=4), n_trials=6, seed=3)
    wait_for(lambda: exports()[7007, "nwb"]["behavior_files"] == 2 and exports()[7007, "reports"]["behavior_files"]
             == 2, what="exported again with the appended file", daemon=daemon, timeout=90)
    with NWBHDF5IO(str(with_probe), "r") as io:
        exported_trials = len(io.read().trials)
    assert exported_trials == len(experiment.SessionTrial & {"subject_id": 7007}) > 25
    status = run_mapd("status", config=config)
    assert "exports nwb: done 1, failed 1" in status.stdout and "exports reports: done 2" in status.stdout
    assert "exports failed (showing 1 of 1):" in status.stdout and "nwb dl8 2018-05-02 (subject 7008)" in status.stdout

    (nwb / "sub-7008").unlink()  # the obstacle removed, the failure retried by hand
    retried = run_mapd("retry", "--all", config=config)
    assert retried.returncode == 0 and "1 failed export queued again" in retried.stdout, retried.stdout
    wait_for(lambda: exports().get((7008, "nwb"), {}).get("state") == "done", what="the failed export written",
             daemon=daemon)
    assert (nwb / "sub-7008" / "sub-7008_ses-20180502_behavior.nwb").is_file()
    assert daemon.stop() == 0
