"""mapd.parsing.ParsePool and the parse processes of ``mapd rescan``: real files, real processes, real signals.

A file fails alone whatever it does to its parser: a MemoryError under the
pool's memory limit, a segfault (a deeply nested file crashes scipy's
reader), a worker killed from outside. Workers die with their parent.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import psutil
import pytest

import bpodgen
from conftest import REPO, run_mapd
from mapd.parsing import ParsePool

START = datetime(2018, 3, 1, 9, 30, 0)
LIMITS = dict(max_inflated_bytes=512 * 2**20, memory_limit_bytes=2 * 2**30)  # the config's defaults


def session(root: Path, day: int = 0, h2o: str = "dl7", **options) -> Path:
    start = START + timedelta(days=day)
    options.setdefault("n_trials", 10)
    return bpodgen.write_session(bpodgen.session_path(root, h2o, "tw", start), h2o=h2o, start=start, seed=day,
                                 **options).path


def named(root: Path, day: int, h2o: str = "dl7") -> Path:
    """Where the session of ``day`` goes, for files written by other means."""
    path = bpodgen.session_path(root, h2o, "tw", START + timedelta(days=day))
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def parse_processes(parent: int | None = None) -> list[psutil.Process]:
    """The spawned parse processes below ``parent`` (default: this process), pool workers and lone parsers."""
    found = []
    for process in psutil.Process(parent or os.getpid()).children(recursive=True):
        try:
            command = " ".join(process.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in command:
            found.append(process)
    return found


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def all_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of ``processes`` still alive (zombies count as dead) after ``timeout`` seconds."""
    def alive() -> list[psutil.Process]:
        living = []
        for process in processes:
            try:
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    living.append(process)
            except psutil.NoSuchProcess:
                pass
        return living

    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive()


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """A legitimate 500-trial session (8.7 MB; about 35 MiB to parse)."""
    return session(tmp_path_factory.mktemp("big"), day=30, n_trials=500)


# --------------------------------------------------------------------------
# The pool.
# --------------------------------------------------------------------------


def test_results_come_in_order_and_a_bad_file_is_an_error_not_an_exception(tmp_path):
    good_v5, good_v73 = session(tmp_path, 0, n_trials=5), session(tmp_path, 1, n_trials=3, fmt="v7.3")
    not_mat = bpodgen.write_bad_file(named(tmp_path, 2), "not_mat")
    fifo = named(tmp_path, 3)
    os.mkfifo(fifo)  # no writer: a blocking open would hang its worker forever
    missing, notes = named(tmp_path, 4), tmp_path / "notes.mat"
    notes.write_bytes(good_v5.read_bytes())
    paths = [good_v5, not_mat, good_v73, fifo, missing, notes]
    with ParsePool(2, **LIMITS) as pool:
        results = pool.submit(paths).result(timeout=120)
        assert len(parse_processes()) == 2
        again = pool.parse([good_v73])
    assert [r.path for r in results] == paths
    assert [len(r.records.trials) if r.records else r.error for r in results] == [
        5, "not a MAT-file (only 49 bytes, no MATLAB header)", 3, "not a regular file (a FIFO)", "file not found",
        "file name does not match {h2o}_{protocol}_{YYYYMMDD}_{HHMMSS}.mat"]
    assert [r.transient for r in results] == [False, False, False, False, True, False]
    assert again[0].records.sha256 == results[2].records.sha256
    assert all_gone(parse_processes(), 5) == []


def test_closing_the_pool_lets_its_workers_exit_on_their_own(tmp_path):
    # The waiting threads that spawned the workers must outlive them: a thread's end fires its
    # children's parent-death signal, which SIGKILLed the workers in the middle of their orderly exit.
    paths = [session(tmp_path, day, n_trials=3) for day in range(4)]
    pool = ParsePool(2, **LIMITS)
    results = [future.result(timeout=120) for future in [pool.submit([path]) for path in paths]]
    workers = list(pool._executor._processes.values())  # CPython's pool keeps its processes here
    pool.close()
    assert [len(r.records.trials) for [r] in results] == [3] * 4
    assert len(workers) == 2 and [w.exitcode for w in workers] == [0, 0]
    assert all_gone(parse_processes(), 5) == []


@pytest.mark.parametrize("workers", [1, 0])
def test_one_worker_is_still_a_limited_process_and_a_memory_error_fails_only_its_file(tmp_path, big, workers):
    small = session(tmp_path, 0, n_trials=20)
    with ParsePool(workers, max_inflated_bytes=LIMITS["max_inflated_bytes"], memory_limit_bytes=16 * 2**20) as pool:
        results = pool.parse([big, small])
        assert len(parse_processes()) == 1
        after = pool.parse([small])  # the worker lives on after its MemoryError
    assert results[0].error == "needs more memory than ingest.parse_memory_bytes (16 MiB) allows"
    assert not results[0].transient
    assert len(results[1].records.trials) == 20 and len(after[0].records.trials) == 20


def test_a_file_that_kills_its_parser_fails_alone(tmp_path, caplog):
    goods = [session(tmp_path, day) for day in range(3)]
    deadly = bpodgen.write_deep_nesting(named(tmp_path, 5))  # scipy's reader overflows the C stack: SIGSEGV
    with caplog.at_level(logging.WARNING, logger="mapd.parsing"), ParsePool(2, **LIMITS) as pool:
        unit = pool.submit([goods[0], deadly, goods[1]])
        other = pool.submit([goods[2]])
        results, other_results = unit.result(timeout=120), other.result(timeout=120)
        later = pool.parse([goods[0]])  # a fresh pool took over
    assert results[1].error == "parser process died: killed by SIGSEGV, also when parsing this file alone"
    assert [len(r.records.trials) for r in (results[0], results[2], *other_results, *later)] == [10, 10, 10, 10]
    assert "a parser process died" in caplog.text
    assert all_gone(parse_processes(), 5) == []


def test_a_worker_killed_from_outside_fails_no_file(tmp_path, big, caplog):
    small = session(tmp_path, 0, n_trials=5)
    with caplog.at_level(logging.WARNING, logger="mapd.parsing"), ParsePool(2, **LIMITS) as pool:
        slow, quick = pool.submit([big]), pool.submit([small])
        quick.result(timeout=120)
        assert not slow.done(), "the 500-trial file was parsed before the kill: make it bigger"
        workers = parse_processes()
        os.kill(workers[0].pid, signal.SIGKILL)  # as the OOM killer would
        result = slow.result(timeout=120)
        after = pool.parse([small])
    assert result[0].error is None and len(result[0].records.trials) == 500
    assert len(after[0].records.trials) == 5
    assert "a parser process died" in caplog.text
    assert all_gone(workers, 5) == []


def test_leaving_the_pool_on_an_error_kills_its_parses_at_once(big):
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="the ingest stopped"):
        with ParsePool(2, **LIMITS) as pool:
            pending = [pool.submit([big]), pool.submit([big])]
            workers = wait_for(lambda: len(parse_processes()) == 2 and parse_processes(), 60, "two workers")
            raise RuntimeError("the ingest stopped")
    assert time.monotonic() - started < 10
    assert all_gone(workers, 5) == []
    results = [future.result(timeout=0)[0] for future in pending]  # abandoned, not parsed to the end
    assert [(r.error, r.transient) for r in results] == [("not parsed: the parser pool was closed", True)] * 2


def test_a_worker_whose_parent_died_before_it_started_exits_at_once():
    # The parent-death signal is armed in the worker: a parent gone before that is checked by pid.
    code = ("from mapd.parsing import _Limits, _init_worker; "
            "_init_worker(_Limits(2**29, 2**31, parent_pid=1)); print('still running')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 1 and "still running" not in result.stdout


# --------------------------------------------------------------------------
# mapd rescan, as an operator runs it.
# --------------------------------------------------------------------------


def _hostile_tree(root: Path) -> dict[str, Path]:
    files = {f"good{day}": session(root, day) for day in range(3)}
    files["v5 bomb"] = named(root, 3)
    bpodgen.write_v5_bomb(files["v5 bomb"], 600 * 10**6)
    files["v7.3 bomb"] = named(root, 4)
    bpodgen.write_v73_bomb(files["v7.3 bomb"], 3_200_000_000)
    files["segfault"] = bpodgen.write_deep_nesting(named(root, 5))
    files["other protocol"] = bpodgen.write_other_protocol(named(root, 6), n_trials=15, start=START + timedelta(days=6))
    # A session of day 0 (its Info.SessionDate), copied under the name of day 7.
    files["renamed"] = bpodgen.write_session(named(root, 7), n_trials=10, seed=70, start=START).path
    return files


def _line(output: str, path: Path) -> str:
    lines = [line for line in output.splitlines() if str(path) in line]
    assert len(lines) == 1, f"{path} in {output}"
    return lines[0]


def test_rescan_fails_bombs_and_crashes_alone_and_prints_its_summary(db, write_config, rig_root):
    from mapd.schemas import experiment

    files = _hostile_tree(rig_root)
    config = write_config({"RRig": rig_root})
    assert run_mapd("subject", "add", "--subject-id", "7001", "--h2o", "dl7", config=config).returncode == 0
    result = run_mapd("rescan", config=config, timeout=240)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "  ingested                  3  (3 sessions, 30 trials" in result.stdout
    assert "  skipped                   1" in result.stdout and "  failed                    4" in result.stdout
    assert "failed" in _line(result.stdout, files["v5 bomb"]) and _line(result.stdout, files["v5 bomb"]).endswith(
        "declares 572.2 MiB of content, over ingest.max_inflated_bytes (512 MiB)")
    assert _line(result.stdout, files["v7.3 bomb"]).endswith(
        "declares at least 3 GiB of content, over ingest.max_inflated_bytes (512 MiB)")
    assert _line(result.stdout, files["segfault"]).endswith(
        "parser process died: killed by SIGSEGV, also when parsing this file alone")
    assert "disagrees with SessionData.Info.SessionDate 01-Mar-2018" in _line(result.stdout, files["renamed"])
    assert "not a MAP delay-response session (no TrialTypes, TrialSettings)" in _line(result.stdout,
                                                                                     files["other protocol"])
    assert len(experiment.Session & {"subject_id": 7001}) == 3


def _address_space_limit(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


def test_rescan_under_an_address_space_limit_fails_the_bomb_that_slips_past_alone(db, write_config, rig_root):
    # The declared-size bound set out of the way: the bomb is inflated, and meets the memory limit.
    files = {f"good{day}": session(rig_root, day) for day in range(2)}
    files["bomb"] = named(rig_root, 2)
    bpodgen.write_v5_bomb(files["bomb"], 1_500_000_000)
    config = write_config({"RRig": rig_root}, ingest={"min_behavior_file_bytes": 0, "workers": 2,
                                                      "max_inflated_bytes": 8 * 2**30})
    assert run_mapd("subject", "add", "--subject-id", "7001", "--h2o", "dl7", config=config).returncode == 0
    command = [sys.executable, "-m", "mapd", "--config", str(config), "rescan"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=REPO,
                            preexec_fn=_address_space_limit(1536 * 2**20))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "  ingested                  2  (2 sessions, 20 trials" in result.stdout
    line = _line(result.stdout, files["bomb"])
    assert "failed" in line and "needs more memory than ingest.parse_memory_bytes (2048 MiB) allows" in line
    assert "mapd itself runs under an address-space limit of 1536 MiB" in line


@pytest.fixture(scope="module")
def many_sessions(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("many") / "rigs" / "RRig"
    for day in range(12):
        session(root, day, n_trials=60)
    return root


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_no_worker_outlives_a_killed_rescan(db, write_config, many_sessions, signum):
    config = write_config({"RRig": many_sessions})
    assert run_mapd("subject", "add", "--subject-id", "7001", "--h2o", "dl7", config=config).returncode == 0
    rescan = subprocess.Popen([sys.executable, "-m", "mapd", "--config", str(config), "rescan", "--workers", "2"],
                              cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        workers = wait_for(lambda: len(parse_processes(rescan.pid)) >= 2 and parse_processes(rescan.pid), 60,
                           "the rescan's two parse processes")
        descendants = psutil.Process(rescan.pid).children(recursive=True)  # the workers and their helpers
        assert rescan.poll() is None, "the rescan ended before it could be killed"
        rescan.send_signal(signum)
        rescan.wait(timeout=30)
    finally:
        if rescan.poll() is None:
            rescan.kill()
    assert rescan.returncode != 0
    assert {p.pid for p in workers} <= {p.pid for p in descendants}
    assert all_gone(descendants, 5) == []
