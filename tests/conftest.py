"""Shared fixtures: one real embedded PostgreSQL for the whole run, emptied between tests; no process leaks.

The run may be spread over several pytest processes (pytest-xdist's workers,
``-n``). They share the one server: each has its own schemas (a schema prefix
per worker) and its own state_dir, so their daemons and files never meet. The
first pytest process (xdist's controller, or the only one) names the run's
directory; the server runs from its ``pgdata`` and stops with its last user.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
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
# what this pytest process left behind is found, and nothing of another is touched.
RUN_MARK = "MAPD_TEST_RUN"
os.environ[RUN_MARK] = str(os.getpid())
# Short and outside pytest's 0700 tree: the embedded server runs as its own
# user when tests run as root, and its socket path must stay short. Inherited
# by xdist's workers (set before they start) and by every process of the run.
RUN_DIR_ENV = "MAPD_TEST_RUN_DIR"
RUN_DIR = Path(os.environ.setdefault(RUN_DIR_ENV, f"/tmp/mapd-test-{os.getpid()}"))
SERVER_PGDATA = RUN_DIR / "pgdata"
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
SESSION_STATE = RUN_DIR / WORKER
# The `database` section of every configuration the tests write: the shared server, this worker's schemas.
TEST_DATABASE = {"data_directory": str(SERVER_PGDATA), "schema_prefix": f"map_{WORKER}_"}


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config):
    if not _is_worker(config):
        RUN_DIR.mkdir(parents=True, exist_ok=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    """In the first pytest process, once every worker is done: the shared server has stopped, nothing of the run lives."""
    if _is_worker(session.config):
        return
    from mapd.database import embedded_server_alive, release_embedded

    running = embedded_server_alive(SERVER_PGDATA)
    release_embedded(SERVER_PGDATA)  # stops a server that no live process uses
    me = psutil.Process()
    workers = {child.pid for child in me.children()}  # xdist's, exiting; a worker checks its own children
    leftovers = _kill(_still_alive([p for p in _of_this_run() if p.pid not in workers], 10))
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    problems = (["the shared embedded server outlived its last user"] if running else []) + (
        [f"processes outlived the test run (killed): {_describe(leftovers)}"] if leftovers else [])
    if problems:
        print("\n" + "\n".join(problems), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def state_dir() -> Path:
    """This pytest process's state_dir (the shared server's data directory lies beside it)."""
    shutil.rmtree(SESSION_STATE, ignore_errors=True)
    SESSION_STATE.mkdir(parents=True)
    yield SESSION_STATE
    shutil.rmtree(SESSION_STATE, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def nothing_outlives_the_run():
    """At the end of this pytest process: no process it started is alive, and it no longer uses the server."""
    yield
    from mapd.database import release_embedded

    release_embedded(SERVER_PGDATA)  # the server stops with its last user, whichever process that is
    leftovers = _kill(_still_alive([p for p in _started_by_this_process() if not _in_session_server(p)], 5))
    release_embedded(SERVER_PGDATA)  # should those leftovers have been its last users
    if leftovers:
        pytest.fail("processes outlived the test run (killed): " + _describe(leftovers), pytrace=False)


@pytest.fixture(autouse=True)
def nothing_outlives_its_test(request):
    """After each test: no process it started is still alive (killed and named, so the culprit is found)."""
    before = {(p.pid, p.info["create_time"]) for p in psutil.process_iter(["create_time"])}
    yield
    new = [p for p in _started_by_this_process(before) if not _in_session_server(p)]
    leftovers = _kill(_still_alive(new, 2))
    if leftovers:
        pytest.fail(f"{request.node.nodeid} left processes running (killed): {_describe(leftovers)}",
                    pytrace=False)


@pytest.fixture
def own_server(tmp_path):
    """A state dir of the test's own, for servers the test starts, kills and stops (not the run's shared one).

    Returns (config path, state dir). Whatever the test did, its server is gone afterwards.
    """
    # Short (the socket lives in pgdata) and readable by the `pgserver` user postgres runs as under root.
    state = Path(tempfile.mkdtemp(prefix="mapd-srv-", dir="/tmp"))
    state.chmod(0o755)
    config = tmp_path / "mapd.yaml"
    config.write_text(f"state_dir: {state}\nsession_user: a\n")
    yield config, state
    from mapd.database import release_embedded

    release_embedded(state / "pgdata")  # stops it, if this process was its (last) user
    for pid in postmasters(state / "pgdata"):
        os.kill(pid, signal.SIGQUIT)  # a test that failed half-way: immediate shutdown
    wait_until_stopped(state / "pgdata", 10)
    subprocess.run(["rm", "-rf", str(state)])


def postmasters(pgdata: Path) -> list[int]:
    """The live postmasters of ``pgdata`` (zombies have no command line and are not listed)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if cmdline and cmdline[0].endswith(b"postgres") and str(pgdata).encode() in b" ".join(cmdline):
                found[int(proc.name)] = parent
    # A child forked a moment ago still has its postmaster's command line.
    return [pid for pid, parent in found.items() if parent not in found]


def wait_until_stopped(pgdata: Path, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while postmasters(pgdata) and time.time() < deadline:
        time.sleep(0.1)


@pytest.fixture
def write_config(tmp_path, state_dir):
    """Write a mapd.yaml in the test's directory and return its path."""

    def write(rigs: dict[str, Path] | None = None, **settings) -> Path:
        body = {
            "state_dir": str(state_dir),
            "database": TEST_DATABASE,
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

    body = {"state_dir": str(state_dir), "database": TEST_DATABASE, "session_user": "daveliu"}
    yield open_database(parse_config(yaml.safe_dump(body), state_dir / "mapd.yaml"))
    release_embedded(SERVER_PGDATA)  # its last user (subprocesses have exited) stops the server


@pytest.fixture
def db(database):
    """An empty database (but for lookup contents) for each test."""
    _empty(database)
    yield database


def _empty(database) -> None:
    """Every row the tests write, in one TRUNCATE (DataJoint's cascading delete reads ~400 headings: ~4 s a test)."""
    database.connection.query(f"TRUNCATE {', '.join(_written_tables())}")


@functools.cache
def _written_tables() -> tuple[str, ...]:
    """The tables below what tests enter (files, sessions, subjects, people, rigs...), not lookup contents."""
    from mapd.schemas import experiment, ingest, lab, publication

    roots = (ingest.SourceFile, ingest.TrialUidBlock, ingest.ArchiveFile, ingest.ArchiveBatch, ingest.Daemon,
             experiment.Session, publication.DataSet, publication.GlobusStorageLocation, lab.Subject, lab.Person,
             lab.Rig)
    return tuple(sorted({name for root in roots for name in root().descendants()}))


@pytest.fixture
def rig_root(tmp_path) -> Path:
    root = tmp_path / "rigs" / "RRig" / "Bpod Local" / "Data"
    root.mkdir(parents=True)
    return root


@contextmanager
def tmpfs(path: Path, size: str, mode: str = "0755"):
    """A real small disk at ``path``: a tmpfs of ``size`` (needs root, else the test is skipped), unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode={mode}", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], capture_output=True)


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


def mapd_here(*args: str, config: Path | None = None) -> subprocess.CompletedProcess:
    """The ``mapd`` command's ``main`` in this process, for tests about what a command does, not its process.

    Same arguments, exit status and output as ``run_mapd``, without ~1.5 s of
    Python start, imports and connecting per command. ``run_mapd`` stays for
    what only a process shows: signals, exit handlers, tracebacks, environment.
    """
    import contextlib
    import io

    from mapd import cli, logs

    argv = (["--config", str(config)] if config is not None else []) + list(args)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(argv)
            except SystemExit as exit:  # argparse's errors and --help
                code = exit.code if isinstance(exit.code, int) else 1
    finally:
        logs.configure()  # the command routed logging to its captured stderr
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


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


def _started_by_this_process(before: set = frozenset()) -> list[psutil.Process]:
    """Live processes not in ``before`` that descend from pytest or carry this process's mark (not Python's helpers)."""
    me = psutil.Process()
    children = {child.pid for child in me.children(recursive=True)}
    return _live_others(lambda process: (process.pid, process.info["create_time"]) not in before and (
        process.pid in children or process.environ().get(RUN_MARK) == str(me.pid)))


def _of_this_run() -> list[psutil.Process]:
    """Live processes of the whole run (any pytest process's, by the inherited run directory), but this one."""
    return _live_others(lambda process: process.environ().get(RUN_DIR_ENV) == str(RUN_DIR))


def _live_others(wanted) -> list[psutil.Process]:
    """Live processes but this one, not zombies (dead, their exit status waiting) nor Python's helpers, ``wanted``."""
    found = []
    for process in psutil.process_iter(["create_time", "cmdline", "name", "status"]):
        try:
            if (process.pid != os.getpid() and process.info["status"] != psutil.STATUS_ZOMBIE
                    and not _python_helper(process) and wanted(process)):
                found.append(process)
        except psutil.Error:
            continue
    return found


def _python_helper(process: psutil.Process) -> bool:
    """Python's semaphore janitor for spawned pools: it exits with its pytest process."""
    return "multiprocessing.resource_tracker" in " ".join(process.info["cmdline"] or ())


def _in_session_server(process: psutil.Process) -> bool:
    """The run's shared server (started by the first `database` fixture, stopped by its last user) and its backends."""
    try:
        postmaster = int((SERVER_PGDATA / "postmaster.pid").read_text().split()[0])
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
