"""``mapd run`` under attack: odd files, a lost or killed database, a full disk, shares that vanish and return."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import mapd_here, run_mapd, tmpfs
from mapd.schemas import experiment, ingest
from test_daemon import DAY, daemons, file_states, session_count, setup, wait_for, write_session  # noqa: F401


def states() -> list[str]:
    return sorted(ingest.SourceFile.to_arrays("state").tolist())  # copies under two rigs share a subpath


def test_odd_names_fifos_and_copies_never_stop_the_daemon(setup, daemons, tmp_path):
    rig, write_config = setup
    tower = tmp_path / "rigs" / "Tower2"
    config = write_config(rigs={"RRig": rig, "Tower2": tower})
    good = write_session(rig, DAY)
    copy = tower / good.path.relative_to(rig)
    copy.parent.mkdir(parents=True)
    shutil.copyfile(good.path, copy)  # the same session under a second rig
    write_session(rig, DAY + timedelta(days=1), h2o="y" * 40)  # h2o longer than the column
    session_dir = good.path.parent
    os.mkfifo(session_dir / "dl7_tw_20180510_100000.mat")  # opening it would block
    (session_dir / "notes.mat").write_bytes(b"notes")

    daemon = daemons(config)
    wait_for(lambda: states() == ["failed", "ignored", "ingested", "skipped"], what="every verdict", daemon=daemon)
    assert session_count() == 1
    by_state = {row["state"]: row for row in ingest.SourceFile.to_dicts()}
    assert by_state["skipped"]["rig"] == "Tower2" and by_state["skipped"]["reason"].startswith("same file as RRig:")
    assert "longer than 16 characters" in by_state["failed"]["reason"]

    # Retrying a file whose name gives no day used to kill the daemon (a claim with a null date).
    before = (ingest.SourceFile & {"state": "failed"}).to_dicts()[0]["updated_time"]
    retried = mapd_here("retry", "--all", config=config)
    assert retried.returncode == 0 and "1 failed file queued again" in retried.stdout
    wait_for(lambda: states() == ["failed", "ignored", "ingested", "skipped"] and
             (ingest.SourceFile & {"state": "failed"}).to_dicts()[0]["updated_time"] > before, what="failed again",
             daemon=daemon)
    beats = [row["heartbeat_time"] for row in ingest.Daemon.to_dicts()]
    time.sleep(1.5)  # the heartbeat goes on: the FIFO stalls nothing
    assert [row["heartbeat_time"] for row in ingest.Daemon.to_dicts()] > beats
    assert daemon.process.poll() is None
    assert not any(e.get("event") == "unexpected error in the daemon loop" for e in daemon.events())
    assert daemon.stop() == 0


def test_a_missing_share_is_reported_and_watched_when_it_returns(setup, daemons, tmp_path):
    rig, write_config = setup
    share = tmp_path / "rigs" / "Share"
    config = write_config(rigs={"RRig": rig, "Share": share})
    daemon = daemons(config)
    wait_for(lambda: daemon.logged("data path unusable: not watched until it returns"), what="report",
             daemon=daemon)
    unusable = next(e for e in daemon.events() if e.get("event") == "data path unusable: not watched until it returns")
    assert unusable["health"] == "missing" and unusable["path"] == str(share)
    assert not any(e.get("event") == "watching" and e.get("path") == str(share) for e in daemon.events())
    report = json.loads(mapd_here("status", "--json", config=config).stdout)
    assert next(p for p in report["paths"] if p["rig"] == "Share")["health"] == "missing"

    share.mkdir()  # the share is mounted
    wait_for(lambda: daemon.logged("data path is back"), what="share back", daemon=daemon)
    write_session(share, DAY)
    wait_for(lambda: session_count() == 1, what="ingest from the returned share", daemon=daemon)
    assert any(e.get("event") == "watching" and e.get("path") == str(share) for e in daemon.events())
    assert daemon.stop() == 0


def test_connection_lost_during_an_ingest_is_retried(setup, daemons, database):
    rig, write_config = setup
    daemon = daemons(write_config())
    wait_for(lambda: daemon.logged("scan complete"), what="start", daemon=daemon)
    stop = threading.Event()

    def cut_inserts() -> None:
        # Terminate the daemon's backend whenever it is inserting: the connection is lost mid-transaction.
        while not stop.is_set():  # this worker's schemas only: the server is shared
            database.connection.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                "AND query ILIKE 'INSERT%%' AND query ILIKE %s", args=(f"%{experiment.schema.database}%session_trial%",))
            time.sleep(0.005)

    cutter = threading.Thread(target=cut_inserts)
    cutter.start()
    try:
        write_session(rig, DAY, n_trials=400)
        wait_for(lambda: daemon.logged("database cannot do the work now; retrying"), what="a cut", daemon=daemon)
    finally:
        stop.set()
        cutter.join()
    # The file's state is recorded just after its session commits: wait for both.
    wait_for(lambda: session_count() == 1 and states() == ["ingested"], what="ingest on a fresh connection",
             daemon=daemon, timeout=90)
    assert not any("Nested" in json.dumps(e) for e in daemon.events())
    assert daemon.stop() == 0


def test_embedded_server_killed_under_the_daemon_is_restarted(setup, daemons, own_server):
    from mapd.database import embedded_server_alive

    rig, write_config = setup
    config = write_config(own_state=own_server[1])  # a server this test may kill
    pgdata = own_server[1] / "pgdata"
    assert run_mapd("subject", "add", "--subject-id", "7007", "--h2o", "dl7", config=config).returncode == 0
    daemon = daemons(config)
    wait_for(lambda: daemon.logged("scan complete"), what="start", daemon=daemon)
    os.kill(int((pgdata / "postmaster.pid").read_text().split()[0]), 9)
    wait_for(lambda: not embedded_server_alive(pgdata), what="server gone", timeout=10)
    wait_for(lambda: daemon.logged("embedded database server restarted"), what="restart", daemon=daemon)
    write_session(rig, DAY)
    wait_for(lambda: daemon.logged("session ingested"), what="ingest after the restart", daemon=daemon)
    assert daemon.stop() == 0


def test_status_knows_a_live_daemon_while_the_database_is_down(setup, daemons, own_server):
    import yaml

    from mapd import database
    from mapd.config import load_config
    from test_daemon import start_server, stop_server

    rig, write_config = setup
    config = write_config(own_state=own_server[1])
    server = database.start(load_config(config))  # this process keeps it up (own_server stops it)
    body = yaml.safe_load(config.read_text())
    # A lab server (here: an embedded one, reached as a server): mapd does not restart it, so it stays down.
    body["database"] = {"backend": "postgresql", "host": server.host, "port": server.port, "user": "postgres"}
    config.write_text(yaml.safe_dump(body))
    daemon = daemons(config)
    wait_for(lambda: daemon.logged("scan complete"), what="start", daemon=daemon)
    stop_server(own_server[1] / "pgdata")
    try:
        wait_for(lambda: daemon.logged("database cannot do the work now; retrying"), what="outage", daemon=daemon)
        status = run_mapd("status", config=config)
        assert status.returncode == 3, status.stdout + status.stderr
        assert f"daemon here: alive (pid {daemon.process.pid})" in status.stdout, status.stdout
        assert "database: unavailable" in status.stdout
        report = json.loads(run_mapd("status", "--json", config=config).stdout)
        assert report["local_daemon"]["alive"] and report["database"] != "ok"
    finally:
        start_server(own_server[1] / "pgdata")
    assert daemon.stop() == 0
    assert "daemon here" not in run_mapd("status", config=config).stdout  # a clean stop removes the file


@pytest.fixture
def small_disk():
    """A 96 MB disk for a daemon's state directory (its embedded server is killed before the unmount)."""
    mount = Path(f"/tmp/mapd-disk-{os.getpid()}")
    with tmpfs(mount, "96m", mode="0777"):
        try:
            yield mount
        finally:
            subprocess.run(["pkill", "-9", "-f", f"postgres -D {mount}"], capture_output=True)
            time.sleep(0.5)
    mount.rmdir()


def test_full_disk_is_waited_out_not_failed(tmp_path, small_disk, daemons):
    import yaml

    rig = tmp_path / "rigs" / "RRig"
    rig.mkdir(parents=True)
    config = tmp_path / "mapd.yaml"
    config.write_text(yaml.safe_dump({
        "state_dir": str(small_disk / "state"), "session_user": "daveliu",
        "rig_data_paths": [{"rig": "RRig", "path": str(rig), "watch": "poll", "poll_interval": 0.3}],
        "ingest": {"min_behavior_file_bytes": 0},
        "daemon": {"settle_seconds": 0.5, "heartbeat_seconds": 0.5,
                   "retry": {"initial_seconds": 0.2, "max_seconds": 1.0, "max_attempts": 3}}}))
    assert run_mapd("subject", "add", "--subject-id", "7007", "--h2o", "dl7", config=config).returncode == 0
    daemon = daemons(config)
    wait_for(lambda: daemon.logged("scan complete"), what="start", daemon=daemon)
    filler = small_disk / "filler"
    with filler.open("wb") as out:  # leave the database no room
        try:
            while True:
                out.write(b"\0" * (1 << 20))
                out.flush()
        except OSError:
            pass
    for day in range(3):
        write_session(rig, DAY + timedelta(days=day), n_trials=300, seed=day)
    wait_for(lambda: daemon.logged("database cannot do the work now; retrying"), what="disk full", daemon=daemon,
             timeout=60)
    cause = next(e for e in daemon.events() if e.get("event") == "database cannot do the work now; retrying")
    assert "disk full" in cause["error"]
    time.sleep(2)  # more than max_attempts backoffs: still not failed for good
    assert daemon.process.poll() is None
    filler.unlink()
    query = ("import datajoint as dj; print(len(experiment.Session()), "
             "len(ingest.SourceFile & {'state': 'failed'}))")
    wait_for(lambda: run_mapd("shell", "-c", query, config=config).stdout.split() == ["3", "0"],
             what="every session after space is freed", timeout=60, daemon=daemon)
    assert daemon.stop() == 0


def test_an_unexpected_error_fails_its_unit_and_the_daemon_goes_on(setup, daemons):
    from mapd.find.files import FileOnDisk
    from mapd.queue.files import file_id, now_ms

    rig, write_config = setup
    daemon = daemons(write_config())
    wait_for(lambda: daemon.logged("scan complete"), what="start", daemon=daemon)
    # A queue row no scan would write (a 40-character h2o): claiming it fails in the database.
    now = now_ms()
    fid = file_id("behavior", FileOnDisk(rig / "odd.mat", rig, "RRig", 1, 1.0))
    ingest.SourceFile.insert1(dict(file_id=fid, kind="behavior", data_root=str(rig), rig="RRig",
                                   subpath="odd.mat", h2o="z" * 40, session_date=DAY.date(), file_size=1,
                                   file_mtime=1.0, state="pending", found_time=now, seen_time=now,
                                   next_attempt=now, updated_time=now))
    wait_for(lambda: (ingest.SourceFile & {"file_id": fid}).to_dicts()[0]["state"] == "failed",
             what="the unit failed", daemon=daemon)
    error = next(e for e in daemon.events() if e.get("event") == "unexpected error; the unit's files are marked failed")
    assert "Traceback" in error["traceback"] and error["h2o"] == "z" * 40
    assert "internal error" in (ingest.SourceFile & {"file_id": fid}).to_dicts()[0]["reason"]
    assert len(ingest.SourceFile()) == 1
    write_session(rig, DAY)
    wait_for(lambda: session_count() == 1, what="ingest goes on", daemon=daemon)
    assert daemon.stop() == 0


def test_repeated_errors_outside_any_unit_stop_the_daemon_with_status_1(setup, daemons, own_server):
    _, write_config = setup
    config = write_config(own_state=own_server[1])  # a database this test may break
    daemon = daemons(config)
    wait_for(lambda: daemon.logged("scan complete"), what="start", daemon=daemon)
    # The queue's table dropped under it (by hand, by mistake): every turn fails, and no unit is to blame,
    # so systemd should restart it (Restart=on-failure) rather than have it spin.
    assert run_mapd("shell", "-c", "ingest.SourceFile.drop_quick()", config=config).returncode == 0
    assert daemon.process.wait(timeout=60) == 1
    errors = [e for e in daemon.events() if e.get("event") == "unexpected error in the daemon loop"]
    assert [e["errors_in_a_row"] for e in errors] == [1, 2, 3, 4, 5]
    [stopping] = [e for e in daemon.events() if e.get("event") == "mapd stopping after repeated errors"]
    assert stopping["error"].startswith("5 unexpected errors in a row; last: ") and stopping["exit_status"] == 1
