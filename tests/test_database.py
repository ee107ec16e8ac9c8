"""The embedded PostgreSQL shared by several mapd processes, and the server backend."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (TEST_DATABASE, place_real_session, postmasters, run_mapd, start_mapd, tmpfs,
                      wait_until_stopped)
from mapd import __version__, database
from mapd.rescan import rescan
from mapd.config import load_config
from mapd.runtime import open_database
from mapd.schemas import SCHEMA_VERSION, experiment, ingest
from mapd.subjects import SubjectEntry, add_subjects

# A one-shot command that holds the database open until its stdin is closed.
HOLD = ("shell", "-c", "import sys; print('open', flush=True); sys.stdin.read()")


def hold_open(config: Path, count: int = 1) -> subprocess.Popen | list[subprocess.Popen]:
    """``mapd shell`` using the database until the test closes its stdin (``count`` of them, started together)."""
    processes = [start_mapd(*HOLD, config=config, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                 for _ in range(count)]
    assert all(process.stdout.readline().strip() == "open" for process in processes)
    return processes[0] if count == 1 else processes


def test_a_one_shot_command_stops_the_server_it_started(own_server):
    config, state = own_server
    result = run_mapd("status", config=config)  # a fresh state dir: it creates and starts the server
    assert result.returncode == 0, result.stderr
    # Stopped before the command exited, cleanly (a crash leaves postmaster.pid behind).
    assert postmasters(state / "pgdata") == []
    assert (state / "pgdata" / "PG_VERSION").exists() and not (state / "pgdata" / "postmaster.pid").exists()


def test_commands_share_one_server_which_stops_with_the_last(own_server):
    config, state = own_server
    holder = hold_open(config)
    try:
        assert len(postmasters(state / "pgdata")) == 1
        check = run_mapd("config", "check", config=config)  # another command, while the holder uses it
        assert check.returncode == 0, check.stderr
        assert len(postmasters(state / "pgdata")) == 1  # left running for the holder
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
        assert postmasters(state / "pgdata") == []  # the last user stopped it
        assert not (state / "pgdata" / "postmaster.pid").exists()
    finally:
        holder.kill()
        holder.wait()


def test_sigterm_of_a_one_shot_command_still_stops_the_server(own_server):
    config, state = own_server
    holder = hold_open(config)
    try:
        holder.send_signal(signal.SIGTERM)
        assert holder.wait(timeout=60) == 128 + signal.SIGTERM
        assert postmasters(state / "pgdata") == []
        assert not (state / "pgdata" / "postmaster.pid").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_command_does_not_keep_the_server_forever(own_server):
    config, state = own_server
    killed = hold_open(config)
    killed.kill()  # SIGKILL: it cannot clean up
    killed.wait()
    assert len(postmasters(state / "pgdata")) == 1
    # The next command forgets the dead user and, being the last one, stops the server on exit.
    assert run_mapd("status", config=config).returncode == 0
    assert postmasters(state / "pgdata") == []


def test_a_daemon_stops_the_server_it_found_when_it_stops_last(own_server):
    config, state = own_server
    starter, killed = hold_open(config, 2)
    daemon = start_mapd("run", config=config, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output = []
        for line in daemon.stdout:
            output.append(line)
            if '"mapd started"' in line:
                break
        killed.kill()  # a user that cannot say goodbye
        killed.wait()
        starter.stdin.close()
        assert starter.wait(timeout=60) == 0
        assert daemon.poll() is None, "the daemon exited early:\n" + "".join(output) + daemon.stdout.read()
        assert len(postmasters(state / "pgdata")) == 1  # the daemon's now
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
        assert postmasters(state / "pgdata") == []
    finally:
        for process in (starter, killed, daemon):
            process.kill()
            process.wait()


def test_a_killed_server_is_restarted_under_the_same_connection(own_server):
    config_path, state = own_server
    config = load_config(config_path)
    params = database.start(config)
    instance = database.connect(params)
    assert instance.connection.query("SELECT 1").fetchone()[0] == 1
    assert database.embedded_server_alive(state / "pgdata")
    os.kill(int((state / "pgdata" / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)
    deadline = time.time() + 5
    while database.embedded_server_alive(state / "pgdata") and time.time() < deadline:
        time.sleep(0.05)
    assert not database.embedded_server_alive(state / "pgdata")

    # Several processes restart it at once: one server comes up, and all of them use it.
    others = [start_mapd(*HOLD, config=config_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
              for _ in range(2)]
    try:
        assert database.restart_embedded(config) == params  # same socket and port
        assert all(other.stdout.readline().strip() == "open" for other in others)
        assert len(postmasters(state / "pgdata")) == 1 and database.embedded_server_alive(state / "pgdata")
        instance.connection.connect()  # DataJoint's own connection object, reconnected
        assert instance.connection.query("SELECT 1").fetchone()[0] == 1
    finally:
        for other in others:
            other.stdin.close()
            other.wait(timeout=60)
    assert len(postmasters(state / "pgdata")) == 1  # this process still uses it
    database.release_embedded(state / "pgdata")
    assert postmasters(state / "pgdata") == []


@pytest.fixture
def small_disk(own_server):
    """``own_server`` on a 64 MB tmpfs of its own (a real full disk), unmounted afterwards whatever happened."""
    config, state = own_server
    with tmpfs(state, "64m"):
        try:
            yield config, state
        finally:
            try:
                database.release_embedded(state / "pgdata")
            finally:
                for pid in postmasters(state / "pgdata"):
                    os.kill(pid, signal.SIGQUIT)
                wait_until_stopped(state / "pgdata", 10)


def test_errors_quote_the_server_log_without_row_data(small_disk):
    config_path, state = small_disk
    config = load_config(config_path)
    connection = database.connect(database.start(config)).connection
    connection.query("CREATE TABLE animal (id int PRIMARY KEY, name text)")
    connection.query("INSERT INTO animal VALUES (1, 'secret-row-data')")
    with pytest.raises(Exception):  # logged with its DETAIL and STATEMENT: the row's values
        connection.query("INSERT INTO animal VALUES (1, 'secret-row-data')")
    with pytest.raises(Exception):  # the insert fails, or the server dies of a WAL write first
        for start in range(2, 10**7, 20000):
            connection.query(f"INSERT INTO animal SELECT g, repeat('secret-row-data', 60) "
                             f"FROM generate_series({start}, {start + 19999}) g")
    log = (state / "pgdata" / "log").read_text()
    assert "STATEMENT:  INSERT INTO animal VALUES (1, 'secret-row-data')" in log
    assert "No space left on device" in log
    tail = database.server_log_tail(state / "pgdata")
    assert 0 < len(tail) <= 5 and all(len(line) <= 200 for line in tail)
    assert any("No space left on device" in line for line in tail)
    assert not any(word in line for line in tail for word in ("secret", "INSERT", "STATEMENT", "DETAIL"))

    # A server that cannot start on the full disk: the error quotes that tail, nothing more.
    for pid in postmasters(state / "pgdata"):
        os.kill(pid, signal.SIGQUIT)  # the crashed server, still recovering, stops at once
    wait_until_stopped(state / "pgdata")
    subprocess.run(["dd", "if=/dev/zero", f"of={state}/filler", "bs=1M"], capture_output=True)
    with pytest.raises(database.DatabaseError) as failure:
        database.restart_embedded(config)
    message = str(failure.value)
    assert "No space left on device" in message and str(state / "pgdata" / "log") in message
    assert "secret" not in message and "INSERT" not in message and "\n" not in message and len(message) < 1600


def test_config_check_passes_on_a_good_configuration(db, write_config, rig_root):
    result = run_mapd("config", "check", config=write_config({"RRig": rig_root}))
    assert result.returncode == 0, result.stderr
    assert f"rig RRig: {rig_root}: readable; watched by events" in result.stdout
    assert "database: embedded: connected" in result.stdout


def test_config_check_reports_a_missing_data_path(db, write_config, tmp_path):
    result = run_mapd("config", "check", config=write_config({"RRig": tmp_path / "absent"}))
    assert result.returncode == 1
    assert f"rig RRig: {tmp_path / 'absent'}" in result.stderr  # and why: the wording belongs to path health


def test_postgresql_backend_on_a_server(db, tmp_path, rig_root):
    # The embedded server, reached as a lab server would be: backend postgresql.
    place_real_session(rig_root)
    password = tmp_path / "password"
    password.write_text("unused-with-trust-auth\n")
    config = tmp_path / "mapd.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nsession_user: daveliu\n"
        f"database: {{backend: postgresql, host: '{db.params.host}', port: {db.params.port}, user: postgres, "
        f"password_file: {password}, schema_prefix: {TEST_DATABASE['schema_prefix']}}}\n"
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
        raise RuntimeError("value out of range")  # refused for good (a full disk would be retried)

    # The last table of the session fails: everything before it is rolled back,
    # and the file is recorded as failed with the reason.
    monkeypatch.setattr(experiment.ActionEvent, "insert", fail)
    summary = rescan(config)
    assert summary.files["failed"] == 1 and "RuntimeError: value out of range" in summary.problems[0].reason
    assert len(experiment.Session()) == 0 and len(experiment.SessionTrial()) == 0
    assert len(ingest.BehaviorIngest.BehaviorFile()) == 0

    monkeypatch.undo()
    assert rescan(config).files["ingested"] == 1
    assert len(experiment.SessionTrial()) == 11


def shell(config: Path, code: str) -> str:
    result = run_mapd("shell", "-c", code, config=config)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_database_of_newer_table_definitions_is_refused_with_what_to_do(own_server):
    config, _ = own_server
    created = shell(config, "print(ingest.SchemaVersion.to_dicts())")  # a new database gets this mapd's version
    assert f"'schema_version': {SCHEMA_VERSION}, 'mapd_version': '{__version__}'" in created
    shell(config, "ingest.SchemaVersion.delete_quick(); "
                  "ingest.SchemaVersion.insert1({'schema_version': 99, 'mapd_version': '9.1.0'})")
    why = (f"the database holds mapd's tables of version 99 (made by mapd 9.1.0); this mapd ({__version__}) knows "
           f"version {SCHEMA_VERSION}: upgrade mapd on this host")
    status = run_mapd("status", config=config)
    assert status.returncode == 3 and f"database: unavailable: {why}" in status.stdout.splitlines(), status.stdout
    for command in (("rescan", "--no-wait"), ("migrate",)):
        refused = run_mapd(*command, config=config)
        assert (refused.returncode, refused.stderr.strip()) == (3, f"mapd: {why}")


def test_a_database_made_before_schema_versions_is_refused_then_migrated(own_server, rig_root):
    config, state = own_server
    place_real_session(rig_root)
    config.write_text(config.read_text() + f"rig_data_paths: [{{rig: RRig, path: '{rig_root}'}}]\n"
                      "ingest: {min_behavior_file_bytes: 0}\ndaemon: {settle_seconds: 0}\n")
    assert run_mapd("subject", "add", "--subject-id", "407513", "--h2o", "dl25", config=config).returncode == 0
    assert run_mapd("rescan", config=config).returncode == 0
    # What mapd 0.1.0 left: no version row, SessionExport without behavior_files, a session exported.
    shell(config, "import datetime; key = experiment.Session.keys()[0]; ingest.SessionExport.insert1({**key, "
                  "'target': 'nwb', 'state': 'done', 'probes': 0, 'export_time': datetime.datetime.now()}); "
                  "ingest.SessionExport.connection.query("
                  "f'ALTER TABLE {ingest.SessionExport.full_table_name} DROP COLUMN behavior_files'); "
                  "ingest.SchemaVersion.delete_quick()")

    status = run_mapd("status", config=config)
    assert status.returncode == 3 and (
        f"needs version {SCHEMA_VERSION}: stop every `mapd run` on the database, then run `mapd migrate` once"
        in status.stdout), status.stdout
    planned = run_mapd("migrate", "--dry-run", config=config)
    assert planned.returncode == 0 and planned.stdout.startswith("would migrate to schema version 2: "), planned
    alive = ("import datetime; now = datetime.datetime.now(); ingest.Daemon.insert1({'daemon_id': 'd' * 32, "
             "'host': 'rig-pc', 'pid': 4242, 'started_time': now, 'heartbeat_time': now})")
    shell(config, alive)
    refused = run_mapd("migrate", config=config)
    assert (refused.returncode, refused.stderr.strip()) == (2, "mapd: a `mapd run` is alive on this database "
                                                               "(rig-pc, pid 4242): stop every daemon on the database "
                                                               "first (see `mapd status`)")
    shell(config, "ingest.Daemon.delete_quick()")

    migrated = run_mapd("migrate", config=config)
    assert migrated.returncode == 0 and migrated.stdout.startswith("migrated to schema version 2: "), migrated
    after = shell(config, "[v] = ingest.SchemaVersion.to_dicts(); [e] = ingest.SessionExport.to_dicts(); "
                          "print(v['schema_version'], v['mapd_version'], e['behavior_files'])")
    assert after.split() == ["2", __version__, "1"]  # the export counted as holding the session's one file: not redone
    assert run_mapd("status", config=config).returncode == 0
    again = run_mapd("migrate", config=config)
    assert (again.returncode, again.stdout.strip()) == (0, "the database is at schema version 2, this mapd's: "
                                                           "nothing to do")


def test_a_new_database_whose_first_user_was_killed_before_recording_its_version_is_this_mapds(own_server):
    config, _ = own_server
    killed = run_mapd("status", config=config, env={"MAPD_FAILPOINT": "schemas:activated"})
    assert killed.returncode == -signal.SIGKILL
    # The tables are there, the version row is not: the next process must not take them for mapd 0.1.0's.
    status = run_mapd("status", config=config)
    assert status.returncode == 0, status.stdout + status.stderr
    versions = shell(config, "print([(v['schema_version'], v['mapd_version']) for v in ingest.SchemaVersion.to_dicts()])")
    assert versions.strip() == str([(SCHEMA_VERSION, __version__)])
