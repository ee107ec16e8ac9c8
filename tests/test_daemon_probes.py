"""Probes in ``mapd run`` and ``mapd rescan``: queued per folder, waiting for their behavior session, exactly once."""

from __future__ import annotations

import signal
from datetime import timedelta

import yaml

import bpodgen
import ephysgen
from conftest import mapd_here, run_mapd
from mapd.schemas import ephys, ingest
from test_daemon import DAY, daemons, session_count, setup, wait_for, write_session  # noqa: F401


def probe_states() -> list[str]:
    return sorted((ingest.SourceFile & {"kind": "probe"}).to_arrays("state").tolist())


def with_ephys(config, ephys_root):
    body = yaml.safe_load(config.read_text())
    body["ephys_data_paths"] = [{"path": str(ephys_root), "watch": "poll", "poll_interval": 0.3}]
    config.write_text(yaml.safe_dump(body))
    return config


def test_a_probe_waits_for_its_behavior_session_then_is_ingested(setup, daemons, tmp_path):
    rig, write_config = setup
    ephys_root = tmp_path / "ephys"
    config = with_ephys(write_config(), ephys_root)
    behavior_path = bpodgen.session_path(rig, "dl7", "tw", DAY)
    staging = tmp_path / "staging"
    generated = write_session(staging, DAY, n_trials=25)
    probe = ephysgen.write_probe(ephys_root, h2o="dl7", session_date=DAY.date(), n_spikes=5000, n_units=5,
                                 behavior=ephysgen.behavior_bitcodes(generated.path), skip_first=2)
    daemon = daemons(config)
    wait_for(lambda: probe_states() == ["waiting"], what="probe waiting", daemon=daemon)
    waiting = (ingest.SourceFile & {"kind": "probe"}).to_dicts()[0]
    assert "behavior session" in waiting["reason"] and waiting["subpath"] == probe.folder.relative_to(
        ephys_root).as_posix()
    status = mapd_here("status", config=config)
    assert "probes: waiting 1" in status.stdout and "(for " in status.stdout

    behavior_path.parent.mkdir(parents=True)
    behavior_path.write_bytes(generated.path.read_bytes())  # the behavior session arrives
    wait_for(lambda: probe_states() == ["ingested"], what="probe ingested", daemon=daemon)
    assert session_count() == 1
    assert len(ephys.Unit()) == len(probe.truth.units)
    assert daemon.stop() == 0


def test_kill_during_a_probe_ingest_then_exactly_once(setup, daemons, tmp_path):
    rig, write_config = setup
    ephys_root = tmp_path / "ephys"
    config = with_ephys(write_config(), ephys_root)
    days = [DAY + timedelta(days=n) for n in range(3)]
    for n, day in enumerate(days):
        generated = write_session(rig, day, n_trials=40, seed=n)
        ephysgen.write_probe(ephys_root, h2o="dl7", session_date=day.date(), n_spikes=300_000, n_units=40, seed=n,
                             behavior=ephysgen.behavior_bitcodes(generated.path))
    daemon = daemons(config)
    wait_for(lambda: len(ingest.SessionClaim & {"kind": "probe"}) > 0, what="a probe ingest", daemon=daemon,
             timeout=60)
    daemon.stop(signal.SIGKILL)
    again = daemons(config)
    wait_for(lambda: probe_states() == ["ingested"] * 3, what="every probe", daemon=again, timeout=90)
    assert len(ephys.ProbeInsertion()) == 3 and len(ingest.EphysIngest()) == 3
    units_per_probe = [len(ephys.Unit & key) for key in ephys.ProbeInsertion.keys()]
    assert all(units_per_probe)
    assert again.stop() == 0


def test_rescan_takes_probes_and_reports_changes_and_bad_folders(setup, tmp_path):
    import os

    rig, write_config = setup
    ephys_root = tmp_path / "ephys"
    config = with_ephys(write_config(), ephys_root)
    good_day, bad_day = DAY, DAY + timedelta(days=1)
    generated = write_session(rig, good_day, n_trials=25)
    probe = ephysgen.write_probe(ephys_root, h2o="dl7", session_date=good_day.date(), n_spikes=4000, n_units=4,
                                 behavior=ephysgen.behavior_bitcodes(generated.path), layout="compact")
    write_session(rig, bad_day, n_trials=25, seed=9)
    ephysgen.write_probe(ephys_root, h2o="dl7", session_date=bad_day.date(), n_spikes=4000, n_units=4,
                         behavior=ephysgen.random_codes(25, 99), trial_num=False)  # codes of another session
    first = run_mapd("rescan", config=config)
    assert first.returncode == 1, first.stdout + first.stderr  # the mismatched probe failed
    assert "probes: 2 folders" in first.stdout and "  ingested                  1" in first.stdout
    failed = (ingest.SourceFile & {"kind": "probe", "state": "failed"}).to_dicts()
    assert len(failed) == 1 and "bitcodes match" in failed[0]["reason"], failed

    os.utime(probe.bitcode, (1e9, 1e9))  # touched: same bytes
    again = run_mapd("rescan", config=config)
    assert "  already ingested          1" in again.stdout.split("probes:")[1], again.stdout
    data = bytearray(probe.bitcode.read_bytes())
    data[-1] ^= 0xFF
    probe.bitcode.write_bytes(bytes(data))
    changed = run_mapd("rescan", config=config)
    assert "  changed                   1" in changed.stdout.split("probes:")[1], changed.stdout
    assert "dl7_bitcode.mat" in (ingest.SourceFile & {"kind": "probe", "state": "changed"}).to_dicts()[0]["reason"]
    assert len(ephys.ProbeInsertion()) == 1

    retried = mapd_here("retry", "--all", config=config)
    assert "1 failed file queued again" in retried.stdout
