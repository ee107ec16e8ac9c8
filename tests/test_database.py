"""The embedded PostgreSQL shared by several mapd processes, and the server backend."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


from conftest import REPO, place_real_session, run_mapd
from mapd.backfill import rescan
from mapd.runtime import open_database
from mapd.schemas import experiment, ingest
from mapd.subjects import SubjectEntry, add_subjects

HOLD_OPEN = """
import sys, time
from mapd import logs
from mapd.config import load_config
logs.configure()
from mapd.runtime import open_database
open_database(load_config(sys.argv[1]))
print("open", flush=True)
time.sleep(float(sys.argv[2]))
"""


def postmasters(pgdata: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"postgres") and str(pgdata).encode() in b" ".join(cmdline):
                pids.append(int(proc.name))
    return pids


def hold_open(config: Path, seconds: float) -> subprocess.Popen:
    """A process that opens the database, says "open", and holds it for ``seconds``."""
    return subprocess.Popen([sys.executable, "-c", HOLD_OPEN, str(config), str(seconds)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)


def wait_until_stopped(pgdata: Path, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while postmasters(pgdata) and time.time() < deadline:
        time.sleep(0.2)


def test_commands_share_one_server_which_stops_with_the_last(tmp_path):
    state = Path(f"/tmp/mapd-share-{os.getpid()}")
    config = tmp_path / "mapd.yaml"
    config.write_text(f"state_dir: {state}\nsession_user: a\n")
    long, short = hold_open(config, 8), hold_open(config, 1)
    try:
        assert long.stdout.readline().strip() == "open" and short.stdout.readline().strip() == "open"
        assert len(postmasters(state / "pgdata")) == 1
        short.wait(timeout=60)
        assert short.returncode == 0
        # The other command still works on the same server after one exits.
        check = run_mapd("config", "check", config=config)
        assert check.returncode == 0, check.stderr
        assert len(postmasters(state / "pgdata")) == 1
        long.wait(timeout=60)
        wait_until_stopped(state / "pgdata")
        assert postmasters(state / "pgdata") == []
        assert not (state / "pgdata" / "postmaster.pid").exists()  # a clean shutdown
    finally:
        for process in (long, short):
            process.kill()
        subprocess.run(["rm", "-rf", str(state)])


def test_a_killed_command_does_not_keep_the_server_forever(tmp_path):
    state = Path(f"/tmp/mapd-kill-{os.getpid()}")
    config = tmp_path / "mapd.yaml"
    config.write_text(f"state_dir: {state}\nsession_user: a\n")
    killed = hold_open(config, 60)
    try:
        assert killed.stdout.readline().strip() == "open"
        killed.kill()
        killed.wait()
        # The next command forgets the dead one and, being the last user, stops the server on exit.
        assert run_mapd("config", "check", config=config).returncode == 0
        wait_until_stopped(state / "pgdata")
        assert postmasters(state / "pgdata") == []
    finally:
        subprocess.run(["rm", "-rf", str(state)])


def test_config_check_passes_on_a_good_configuration(db, write_config, rig_root):
    result = run_mapd("config", "check", config=write_config({"RRig": rig_root}))
    assert result.returncode == 0, result.stderr
    assert f"rig RRig: {rig_root}: readable; watched by events" in result.stdout
    assert "database: embedded: connected" in result.stdout


def test_config_check_reports_a_missing_data_path(db, write_config, tmp_path):
    result = run_mapd("config", "check", config=write_config({"RRig": tmp_path / "absent"}))
    assert result.returncode == 1
    assert f"rig RRig: {tmp_path / 'absent'}: not a directory" in result.stderr


def test_postgresql_backend_on_a_server(db, tmp_path, rig_root):
    # The embedded server, reached as a lab server would be: backend postgresql.
    place_real_session(rig_root)
    password = tmp_path / "password"
    password.write_text("unused-with-trust-auth\n")
    config = tmp_path / "mapd.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nsession_user: daveliu\n"
        f"database: {{backend: postgresql, host: '{db.params.host}', port: {db.params.port}, user: postgres, "
        f"password_file: {password}}}\n"
        f"rig_data_paths: [{{rig: RRig, path: '{rig_root}'}}]\ningest: {{min_behavior_file_bytes: 0}}\n"
        "daemon: {settle_seconds: 0}\n"
    )
    assert run_mapd("subject", "add", "--subject-id", "407513", "--h2o", "dl25", config=config).returncode == 0
    result = run_mapd("rescan", config=config)
    assert result.returncode == 0, result.stderr
    assert len(experiment.SessionTrial()) == 11
    assert not (tmp_path / "state" / "pgdata").exists()  # no embedded server was started


def test_a_session_is_all_rows_or_none(db, load, rig_root, monkeypatch):
    config = load({"RRig": rig_root})
    open_database(config)
    place_real_session(rig_root)
    add_subjects([SubjectEntry(subject_id=407513, h2o="dl25")])

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    # The last table of the session fails: everything before it is rolled back,
    # and the file is recorded as failed with the reason.
    monkeypatch.setattr(experiment.ActionEvent, "insert", fail)
    summary = rescan(config)
    assert summary.files["failed"] == 1 and "RuntimeError: disk full" in summary.problems[0].reason
    assert len(experiment.Session()) == 0 and len(experiment.SessionTrial()) == 0
    assert len(ingest.BehaviorIngest.BehaviorFile()) == 0

    monkeypatch.undo()
    assert rescan(config).files["ingested"] == 1
    assert len(experiment.SessionTrial()) == 11
