"""Shared fixtures: one real embedded PostgreSQL for the whole run, emptied between tests; no process leaks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "test_data"
REAL_SESSION = TEST_DATA / "behavior" / "dl25" / "tw2" / "Session Data" / "dl25_tw2_20180225_102508.mat"
sys.path.insert(0, str(TEST_DATA))  # the Bpod file generator, bpodgen

# Every process the tests start inherits this mark, also those that leave the
# pytest process's tree (a daemonised postgres, an orphaned worker), so that
# what this run left behind is found, and nothing of a concurrent run is touched.
RUN_MARK = "MAPD_TEST_RUN"
os.environ[RUN_MARK] = str(os.getpid())
# Short and outside pytest's 0700 tree: the embedded server runs as its own
# user when tests run as root, and its socket path must stay short.
SESSION_STATE = Path(os.environ.get("MAPD_TEST_STATE", f"/tmp/mapd-test-{os.getpid()}"))


@pytest.fixture(scope="session")
def state_dir() -> Path:
    shutil.rmtree(SESSION_STATE, ignore_errors=True)
    SESSION_STATE.mkdir(parents=True)
    yield SESSION_STATE
    # Torn down after nothing_outlives_the_run: the server on it has stopped.
    shutil.rmtree(SESSION_STATE, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def nothing_outlives_the_run(state_dir):
    """At the end of the run: the embedded server is stopped, and no process the tests started is alive."""
    yield
    from mapd.database import release_embedded

    release_embedded(state_dir)  # the run's server, if no leftover user holds it
    leftovers = _kill(_still_alive([p for p in _started_by_this_run() if p.info["name"] != "postgres"], 5))
    release_embedded(state_dir)  # their server, now that they are gone
    leftovers += _kill(_still_alive(_started_by_this_run(), 5))
    if leftovers:
        pytest.fail("processes outlived the test run (killed): " + _describe(leftovers), pytrace=False)


@pytest.fixture(autouse=True)
def nothing_outlives_its_test(request):
    """After each test: no process it started is still alive (killed and named, so the culprit is found)."""
    before = {(p.pid, p.info["create_time"]) for p in psutil.process_iter(["create_time"])}
    yield
    new = [p for p in _started_by_this_run(before) if not _in_session_server(p)]
    leftovers = _kill(_still_alive(new, 2))
    if leftovers:
        pytest.fail(f"{request.node.nodeid} left processes running (killed): {_describe(leftovers)}",
                    pytrace=False)


@pytest.fixture
def write_config(tmp_path, state_dir):
    """Write a mapd.yaml in the test's directory and return its path."""

    def write(rigs: dict[str, Path] | None = None, **settings) -> Path:
        body = {
            "state_dir": str(state_dir),
            "session_user": "daveliu",
            "rig_data_paths": [{"rig": rig, "path": str(path), "order": n} for n, (rig, path) in enumerate((rigs or {}).items())],
            "ingest": {"min_behavior_file_bytes": 0, "workers": 2},
            # Files are written by the tests just before a rescan: no waiting for them to settle.
            "daemon": {"settle_seconds": 0},
        }
        body.update(settings)
        path = tmp_path / "mapd.yaml"
        path.write_text(yaml.safe_dump(body))
        return path

    return write


@pytest.fixture
def load(write_config):
    from mapd.config import load_config

    def load_(rigs=None, **settings):
        return load_config(write_config(rigs, **settings))

    return load_


@pytest.fixture(scope="session")
def database(state_dir):
    """The MAP schemas on a real embedded PostgreSQL, for the whole test run; stopped at its end."""
    from mapd.config import parse_config
    from mapd.database import release_embedded
    from mapd.runtime import open_database

    config = parse_config(f"state_dir: {state_dir}\nsession_user: daveliu\n", state_dir / "mapd.yaml")
    yield open_database(config)
    release_embedded(state_dir)  # the last user (subprocesses have exited): the server stops now


@pytest.fixture
def db(database):
    """An empty database (but for lookup contents) for each test."""
    _empty(database)
    yield database


def _empty(database) -> None:
    from mapd.schemas import experiment, ingest, lab, publication

    ingest.SourceFile.delete_quick()
    ingest.TrialUidBlock.delete_quick()
    ingest.ArchiveFile.delete_quick()
    ingest.ArchiveBatch.delete_quick()
    experiment.Session.delete()
    publication.DataSet.delete()
    publication.GlobusStorageLocation.delete()
    lab.Subject.delete()
    lab.Person.delete()
    lab.Rig.delete()


@pytest.fixture
def rig_root(tmp_path) -> Path:
    root = tmp_path / "rigs" / "RRig" / "Bpod Local" / "Data"
    root.mkdir(parents=True)
    return root


def place_real_session(root: Path, h2o: str = "dl25") -> Path:
    """Copy the real MAP session to where a rig writes it."""
    target = root / h2o / "tw2" / "Session Data" / REAL_SESSION.name.replace("dl25", h2o, 1)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REAL_SESSION, target)
    return target


def mapd_command(*args: str, config: Path | None = None) -> list[str]:
    """The installed ``mapd`` command line, as a user would type it."""
    command = [sys.executable, "-m", "mapd"]
    if config is not None:
        command += ["--config", str(config)]
    return command + list(args)


def run_mapd(*args: str, config: Path | None = None, timeout: float = 300, env: dict | None = None):
    """Run the installed ``mapd`` command in a subprocess (as a user would)."""
    return subprocess.run(mapd_command(*args, config=config), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=str(REPO))


def start_mapd(*args: str, config: Path | None = None, **popen) -> subprocess.Popen:
    """Start the installed ``mapd`` command in a subprocess and return at once (the caller waits for it)."""
    return subprocess.Popen(mapd_command(*args, config=config), cwd=str(REPO), text=True, **popen)


@pytest.fixture(scope="session", autouse=True)
def quiet_datajoint():
    """Route DataJoint's log through mapd's logging (errors only), as the mapd command does."""
    import logging

    from mapd import logs

    logs.configure()
    yield
    # Exit handlers may log after pytest has closed its capture.
    logging.getLogger().handlers[:] = []


# ---- processes the tests started -------------------------------------------------


def _started_by_this_run(before: set = frozenset()) -> list[psutil.Process]:
    """Live processes not in ``before`` that descend from pytest or carry this run's mark (not Python's helpers)."""
    me = psutil.Process()
    children = {child.pid for child in me.children(recursive=True)}
    found = []
    for process in psutil.process_iter(["create_time", "cmdline", "name", "status"]):
        try:
            if (process.pid, process.info["create_time"]) in before:
                continue
            if process.pid == me.pid or process.info["status"] == psutil.STATUS_ZOMBIE:
                continue  # a zombie is dead: nothing runs, only its exit status waits to be read
            if process.pid not in children and process.environ().get(RUN_MARK) != str(me.pid):
                continue
            if "multiprocessing.resource_tracker" in " ".join(process.info["cmdline"] or ()):
                continue  # Python's semaphore janitor for spawned pools: it exits with pytest
            found.append(process)
        except psutil.Error:
            continue
    return found


def _in_session_server(process: psutil.Process) -> bool:
    """The run's shared server (started by the `database` fixture, stopped at the end) and its backends."""
    try:
        postmaster = int((SESSION_STATE / "pgdata" / "postmaster.pid").read_text().split()[0])
        return process.pid == postmaster or process.ppid() == postmaster
    except (OSError, ValueError, IndexError, psutil.Error):
        return False


def _still_alive(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """Those still running after a grace period (a process may be a moment from its exit)."""
    deadline = time.monotonic() + seconds
    while True:
        alive = [p for p in processes if _running(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _kill(processes: list[psutil.Process]) -> list[psutil.Process]:
    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            pass
    _still_alive(processes, 5)  # not psutil.wait_procs: where nobody reaps, the dead stay zombies
    return processes


def _describe(processes: list[psutil.Process]) -> str:
    return "; ".join(f"pid {p.pid}: {' '.join(p.info['cmdline'] or ['?'])[:160]}" for p in processes)
