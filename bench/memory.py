"""Memory of ``mapd run``: resident set size (VmRSS) of the daemon process itself.

The embedded PostgreSQL is a separate process and is not counted.

a) Idle daemon watching N existing files (default 10,000): one small real
   session written with bpodgen and hard-linked to every other name (no disk
   cost), with ``ingest.min_behavior_file_bytes`` above its size so that the
   daemon records every file as skipped and then idles. A first daemon
   (inotify events) records them all on a fresh database; then the daemon is
   restarted on the same, now known, files with polling (every 2 s), then with
   events again, so that both modes are compared with the same history. RSS is
   sampled after the start-up scan, once nothing is pending and the daemon has
   idled for a while; the max of the samples is reported.

b) Ingesting M small sessions (default 1,000 of 20 trials, 10 subjects x 100
   days) written in batches of 100 on a fresh tree and database: RSS after the
   first batch (baseline: libraries loaded, caches warm) and after the last.
   Target: growth = final / baseline - 1 <= 10 %.

Floor, measured in the same run: RSS of a plain Python process that imports
the libraries the daemon uses, opens the database with the same configuration
and sleeps. Each RSS figure is printed with its ratio to the floor.

    python bench/memory.py [--files 10000] [--sessions 1000] [--trials 20] [--batch 100] [--idle 10]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test_data"))

import bpodgen  # noqa: E402
from harness import DaemonProcess, mapd, rss_mb, stop_leftover_server  # noqa: E402

PROTOCOL = "tw2"
DAYS = 100  # sessions per subject, one per day
SESSION_SUBJECTS = 10  # part b
FIRST_DAY = datetime(2021, 1, 4, 10, 0, 0)
GROWTH_TARGET = 0.10
SAMPLES = 5  # RSS samples per figure, 1 s apart; the max is reported
# Events whose count tells how many files the daemon has dealt with (part a).
OUTCOME_EVENTS = frozenset({"file skipped", "file waiting", "file failed"})
FLOOR_CODE = """
import sys, time
import mapd.daemon, mapd.formats.matfile, scipy.io, h5py, datajoint
from mapd.config import load_config
from mapd.runtime import open_database
open_database(load_config(sys.argv[1]))
print("ready", flush=True)
sys.stdin.read()  # sleep until the benchmark closes stdin, then exit cleanly (the server keeps its users list)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000, help="existing files watched by the idle daemon (a)")
    parser.add_argument("--sessions", type=int, default=1_000, help="sessions ingested (b)")
    parser.add_argument("--trials", type=int, default=20, help="trials per session (b)")
    parser.add_argument("--batch", type=int, default=100, help="sessions written per batch (b)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idling before sampling (a)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mapd-memory-", dir="/tmp"))
    started = time.monotonic()
    try:
        floor_mb, idle = idle_daemons(work, args.files, args.idle)
        growth_ok = ingesting_daemon(work, args.sessions, args.trials, args.batch, floor_mb)
    finally:
        for state in work.glob("state-*"):
            stop_leftover_server(state)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nfloor (python + mapd.daemon, scipy.io, h5py, datajoint imported, database open): {floor_mb:.1f} MB")
    for label, mb in idle.items():
        print(f"idle daemon, {args.files:,} files, {label}: {mb:.1f} MB = {mb / floor_mb:.2f} x floor")
    print(f"total wall time {time.monotonic() - started:.0f} s")
    return 0 if growth_ok else 1


# ---- a) idle daemon watching many existing files --------------------------


# The runs of part a, in order: (label, watch mode, files new to the database).
IDLE_RUNS = (
    ("events, 1st run (recorded all files)", "events", True),
    ("poll, restart (files known)", "poll", False),
    ("events, restart (files known)", "events", False),
)


def idle_daemons(work: Path, n_files: int, idle_seconds: float) -> tuple[float, dict[str, float]]:
    """RSS of an idle daemon per run of IDLE_RUNS, and the floor; all in MB.

    Recording 10,000 new files takes the daemon minutes, so it is done once;
    both watch modes are then compared on restarts over the same known files
    (the same history), which is also what a daemon restarted by systemd sees.
    """
    tree = work / "tree-a"
    state = work / "state-a"
    started = time.monotonic()
    size, h2os = build_linked_tree(tree, n_files)
    print(f"a) tree: {n_files:,} files ({len(h2os)} subjects x up to {DAYS} days), one {size:,}-byte session "
          f"hard-linked, built in {time.monotonic() - started:.1f} s")
    configs = {mode: write_config(work, state, f"a-{mode}", "RigA", tree, mode, min_bytes=size + 1, settle=1.0)
               for mode in ("events", "poll")}
    # Files are checked for their subject before their size: with the subjects
    # entered they are recorded as skipped (too small), not as waiting.
    import_subjects(work, configs["events"], h2os, first_id=5000)
    floor_mb = 0.0
    idle = {}
    for n, (label, mode, new_files) in enumerate(IDLE_RUNS):
        daemon = DaemonProcess(configs[mode], work / f"daemon-a{n}-{mode}.log")
        try:
            wait_until_idle(daemon, configs[mode], n_files if new_files else 0, label)
            time.sleep(idle_seconds)
            idle[label] = sample_rss(daemon)
            if not floor_mb:
                floor_mb = measure_floor(configs[mode])
                print(f"   floor: {floor_mb:.1f} MB")
            print(f"   {label}: idle RSS {idle[label]:.1f} MB = {idle[label] / floor_mb:.2f} x floor")
        finally:
            daemon.stop()
    stop_leftover_server(state)
    shutil.rmtree(state, ignore_errors=True)
    return floor_mb, idle


def build_linked_tree(root: Path, n_files: int) -> tuple[int, list[str]]:
    """N behavior file names in the rig layout, all hard links to one small real session."""
    template = bpodgen.write_session(root.parent / "template.mat", n_trials=5, seed=0).path
    n_subjects = math.ceil(n_files / DAYS)
    h2os = [f"ms{s:03d}" for s in range(n_subjects)]
    for n in range(n_files):
        h2o, day = h2os[n // DAYS], n % DAYS
        path = bpodgen.session_path(root, h2o, PROTOCOL, FIRST_DAY + timedelta(days=day))
        if day == 0:
            path.parent.mkdir(parents=True)
        os.link(template, path)
    return template.stat().st_size, h2os


def wait_until_idle(daemon: DaemonProcess, config: Path, n_new: int, label: str) -> None:
    """Wait for the start-up scan and for ``n_new`` file outcomes; then nothing may be pending."""
    started = time.monotonic()
    peak = 0.0
    seen = {"outcomes": 0, "scanned": False}

    def all_recorded(event: dict) -> bool:
        seen["scanned"] |= event.get("event") == "scan complete"
        seen["outcomes"] += event.get("event") in OUTCOME_EVENTS
        return bool(seen["scanned"]) and seen["outcomes"] >= n_new

    while not any([all_recorded(event) for event in daemon.new_events()]):
        peak = max(peak, daemon.rss_mb())  # while it works, for comparison
        daemon.check_alive("all files to be recorded")
        if time.monotonic() - started > 3600:
            raise RuntimeError(f"timed out: {seen['outcomes']} of {n_new} files recorded")
        time.sleep(1.0)
    busy = time.monotonic() - started
    files = json.loads(mapd(config, "status", "--json"))["files"]
    work = f"{n_new:,} new files recorded" + (f" (peak RSS meanwhile {peak:.1f} MB)" if n_new else "")
    print(f"   {label}: start-up scan and {work} in {busy:.0f} s; "
          f"status: {', '.join(f'{k} {v}' for k, v in files.items() if v)}")
    if files.get("pending"):
        raise RuntimeError(f"files still pending: {files}")


# ---- b) RSS growth over many ingests ---------------------------------------


def ingesting_daemon(work: Path, n_sessions: int, n_trials: int, batch: int, floor_mb: float) -> bool:
    tree = work / "tree-b"
    state = work / "state-b"
    h2os = [f"mb{s}" for s in range(SESSION_SUBJECTS)]
    for h2o in h2os:
        (tree / h2o / PROTOCOL / "Session Data").mkdir(parents=True)  # a rig has its subjects' folders
    config = write_config(work, state, "b", "RigB", tree, "events", min_bytes=0, settle=1.0)
    import_subjects(work, config, h2os, first_id=6000)
    print(f"\nb) {n_sessions:,} sessions of {n_trials} trials ({len(h2os)} subjects), written {batch} at a time")
    daemon = DaemonProcess(config, work / "daemon-b.log")
    try:
        daemon.wait_for(lambda e: e.get("event") == "scan complete", "the start-up scan")
        rss = []
        for first in range(0, n_sessions, batch):
            last = min(first + batch, n_sessions)
            started = time.monotonic()
            write_sessions(tree, h2os, first, last, n_trials)
            written = time.monotonic() - started
            wait_for_ingests(daemon, last - first)
            rss.append(sample_rss(daemon))
            print(f"   after {last:5,} sessions: RSS {rss[-1]:.1f} MB = {rss[-1] / floor_mb:.2f} x floor "
                  f"(batch written in {written:.1f} s, committed {time.monotonic() - started:.1f} s after the "
                  f"first write)")
    finally:
        daemon.stop()
    stop_leftover_server(state)
    baseline, final = rss[0], rss[-1]
    growth = final / baseline - 1
    print(f"   baseline (after the first {min(batch, n_sessions)} sessions): {baseline:.1f} MB = "
          f"{baseline / floor_mb:.2f} x floor")
    print(f"   final (after {n_sessions:,} sessions): {final:.1f} MB = {final / floor_mb:.2f} x floor")
    print(f"   growth final / baseline - 1 = {growth:+.1%} (target <= {GROWTH_TARGET:.0%}): "
          f"{'met' if growth <= GROWTH_TARGET else 'NOT met'}")
    return growth <= GROWTH_TARGET


def write_sessions(tree: Path, h2os: list[str], first: int, last: int, n_trials: int) -> None:
    """Sessions first..last-1, day by day: each day one session per subject."""
    for n in range(first, last):
        h2o, day = h2os[n % len(h2os)], n // len(h2os)
        start = FIRST_DAY + timedelta(days=day)
        bpodgen.write_session(bpodgen.session_path(tree, h2o, PROTOCOL, start), n_trials=n_trials, h2o=h2o,
                              protocol=PROTOCOL, start=start, seed=n)


def wait_for_ingests(daemon: DaemonProcess, expected: int) -> None:
    seen = {"ingested": 0}

    def enough(event: dict) -> bool:
        seen["ingested"] += event.get("event") == "session ingested"
        return seen["ingested"] >= expected

    daemon.wait_for(enough, f"{expected} sessions to be ingested", timeout=600 + 2 * expected)


# ---- the floor ----------------------------------------------------------------


def measure_floor(config: Path) -> float:
    """Max RSS (MB) of a plain Python process with the daemon's libraries imported and the database open."""
    process = subprocess.Popen([sys.executable, "-c", FLOOR_CODE, str(config)], cwd=REPO, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        wait_for_ready(process)
        time.sleep(2.0)  # let it settle like the daemon did
        samples = []
        for _ in range(SAMPLES):
            samples.append(rss_mb(process.pid))
            time.sleep(0.2)
        return max(samples)
    finally:
        process.stdin.close()  # it exits normally, leaving the embedded server's users list right
        process.wait(timeout=60)


def wait_for_ready(process: subprocess.Popen) -> None:
    """Read the process's output until its "ready" line (libraries may print before it)."""
    printed = []
    for line in process.stdout:
        if line.strip() == "ready":
            return
        printed.append(line)
    raise RuntimeError(f"floor process failed ({process.wait()}):\n{''.join(printed)}")


# ---- the daemon, the mapd command, configuration ---------------------------


def sample_rss(daemon: DaemonProcess) -> float:
    """Max of a few samples, 1 s apart (the daemon wakes up at least once a second)."""
    samples = []
    for _ in range(SAMPLES):
        samples.append(daemon.rss_mb())
        time.sleep(1.0)
    return max(samples)


def write_config(work: Path, state: Path, name: str, rig: str, tree: Path, mode: str, *, min_bytes: int,
                 settle: float) -> Path:
    body = {
        "state_dir": str(state),
        "session_user": "bench",
        "rig_data_paths": [{"rig": rig, "path": str(tree), "watch": mode, "poll_interval": 2.0}],
        "ingest": {"min_behavior_file_bytes": min_bytes},
        "daemon": {"settle_seconds": settle},
        "logging": {"level": "info"},
    }
    path = work / f"mapd-{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def import_subjects(work: Path, config: Path, h2os: list[str], first_id: int) -> None:
    path = work / f"subjects-{config.stem}.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject_id", "h2o"])
        writer.writerows((first_id + n, h2o) for n, h2o in enumerate(h2os))
    mapd(config, "subject", "import", str(path))


if __name__ == "__main__":
    sys.exit(main())
