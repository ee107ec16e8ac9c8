"""Ingest latency of ``mapd run``: from a file's last write to its session being committed.

For each watch mode (inotify events, then polling), a ``mapd run`` subprocess
watches a fresh rig tree; K generated 500-trial sessions are written, one at a
time, directly at their final path. Latency = the timestamp of the daemon's
"session ingested" log event - the time the file's last write returned. The
next file is written only after the previous session is committed.

Floor, measured in the same run on the same database: the single-file ingest
time, i.e. the in-process wall time of parsing and inserting one 500-trial file
the way the daemon does (ParsePool + triage + ingest_parsed),
median of 3 different files of another subject.

Target: p50(events) <= settle + 1.5 x single-file ingest time. Polling adds
about poll_interval / 2 on average (a file waits for the next listing).

    python bench/latency.py [--sessions 10] [--trials 500] [--settle 2.0] [--poll-interval 2.0]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
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
from harness import DaemonProcess, mapd, stop_leftover_server  # noqa: E402

PROTOCOL = "tw2"
FLOOR_FILES = 3
TARGET_FACTOR = 1.5
FIRST_DAY = datetime(2020, 3, 2, 10, 0, 0)
# Rig name, subject id and h2o per watch mode, and for the floor's files.
MODES = {"events": ("LatEvents", 801, "le1"), "poll": ("LatPoll", 802, "lp1")}
FLOOR_SUBJECT = (803, "lf1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=10, help="sessions per watch mode")
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--settle", type=float, default=2.0, help="daemon.settle_seconds")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="poll_interval of the polled rig")
    parser.add_argument("--floor", nargs="+", metavar="ARG", help=argparse.SUPPRESS)  # internal: CONFIG FILE...
    args = parser.parse_args()
    if args.floor:
        return floor_process(Path(args.floor[0]), [Path(p) for p in args.floor[1:]])

    work = Path(tempfile.mkdtemp(prefix="mapd-latency-", dir="/tmp"))
    try:
        return run(work, args.sessions, args.trials, args.settle, args.poll_interval)
    finally:
        stop_leftover_server(work / "state")
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, n_sessions: int, n_trials: int, settle: float, poll_interval: float) -> int:
    started = time.monotonic()
    configs = {mode: write_config(work, mode, settle, poll_interval) for mode in MODES}
    for rig, subject_id, h2o in MODES.values():
        mapd(configs["events"], "subject", "add", "--subject-id", str(subject_id), "--h2o", h2o)
        # The subject's folder exists on a real rig; creating it first keeps the
        # measurement about the file, not about watching a brand-new directory.
        session_dir(work, rig, h2o).mkdir(parents=True)

    single = measure_floor(work, configs["events"], n_trials)
    print(f"single-file ingest ({n_trials} trials, in-process parse + insert): "
          f"median {single:.3f} s of {FLOOR_FILES} files")

    latencies = {}
    for mode in MODES:
        latencies[mode] = measure_mode(work, mode, configs[mode], n_sessions, n_trials, poll_interval)

    print()
    reference = settle + single
    for mode, values in latencies.items():
        p50, p95 = percentile(values, 50), percentile(values, 95)
        extra = f", poll_interval {poll_interval} s" if mode == "poll" else ""
        print(f"{mode:6s}: p50 {p50:.3f} s, p95 {p95:.3f} s over {len(values)} sessions "
              f"(settle {settle} s + single-file {single:.3f} s = {reference:.3f} s{extra}); "
              f"ratio p50 / (settle + single) = {p50 / reference:.2f}")
    target = settle + TARGET_FACTOR * single
    p50_events = percentile(latencies["events"], 50)
    p50_poll = percentile(latencies["poll"], 50)
    print(f"polling: expected extra ~poll_interval/2 = {poll_interval / 2:.2f} s; "
          f"measured p50(poll) - p50(events) = {p50_poll - p50_events:+.3f} s")
    met = p50_events <= target
    print(f"target p50(events) <= settle + {TARGET_FACTOR} x single-file = {target:.3f} s: "
          f"{p50_events:.3f} s -> {'met' if met else 'NOT met'}")
    print(f"total wall time {time.monotonic() - started:.0f} s")
    return 0 if met else 1


# ---- configuration and the mapd command ----------------------------------


def write_config(work: Path, mode: str, settle: float, poll_interval: float) -> Path:
    """One config per mode, sharing one state_dir (one embedded database)."""
    rig = MODES[mode][0]
    body = {
        "state_dir": str(work / "state"),
        "session_user": "bench",
        "rig_data_paths": [{"rig": rig, "path": str(work / rig), "watch": mode, "poll_interval": poll_interval}],
        "ingest": {"min_behavior_file_bytes": 0},
        # The other duties stay at their defaults; only the settle time is the subject here.
        "daemon": {"settle_seconds": settle},
        "logging": {"level": "info"},
    }
    path = work / f"mapd-{mode}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def session_dir(root: Path, rig: str, h2o: str) -> Path:
    return root / rig / h2o / PROTOCOL / "Session Data"


def write_session(root: Path, h2o: str, day: int, n_trials: int, seed: int) -> Path:
    start = FIRST_DAY + timedelta(days=day)
    path = bpodgen.session_path(root, h2o, PROTOCOL, start)
    return bpodgen.write_session(path, n_trials=n_trials, h2o=h2o, protocol=PROTOCOL, start=start, seed=seed).path


# ---- the floor: one file parsed and inserted in-process --------------------


def measure_floor(work: Path, config: Path, n_trials: int) -> float:
    """Median single-file ingest time, measured in a child process on the same database.

    A child process, so that this one never holds the embedded server: the
    server stops cleanly when its last user (the last daemon) exits.
    """
    root = work / "floor-files"
    h2o = FLOOR_SUBJECT[1]
    files = [write_session(root, h2o, day, n_trials, seed=1000 + day) for day in range(FLOOR_FILES)]
    out = subprocess.run([sys.executable, __file__, "--floor", str(config), *map(str, files)], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"floor measurement failed:\n{out.stderr}")
    seconds = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"floor: single-file ingest times {', '.join(f'{s:.3f}' for s in seconds)} s")
    return statistics.median(seconds)


def floor_process(config_path: Path, files: list[Path]) -> int:
    """(child) Ingest each file as the daemon's behavior handler does; print the wall times as JSON."""
    from mapd.config import load_config
    from mapd.find.files import FileOnDisk
    from mapd.ingest.behavior import ingested_files
    from mapd.ingest.behavior_day import ingest_parsed, subjects_by_h2o, triage
    from mapd.parsing import ParsePool
    from mapd.runtime import open_database
    from mapd.subjects import SubjectEntry, add_subjects

    config = load_config(config_path)
    open_database(config)
    add_subjects([SubjectEntry(subject_id=FLOOR_SUBJECT[0], h2o=FLOOR_SUBJECT[1])])
    root = config_path.parent / "floor-files"
    rig = config.rig_data_paths[0].rig
    seconds = []
    # The daemon parses in one long-lived process whose memory is bounded: so does the floor.
    with ParsePool(1, max_inflated_bytes=config.ingest.max_inflated_bytes,
                   memory_limit_bytes=config.ingest.parse_memory_bytes) as parser:
        for path in files:
            h2o, session_date = session_key(path)
            stat = path.stat()
            file = FileOnDisk(path, root, rig, stat.st_size, stat.st_mtime)
            started = time.perf_counter()
            done = ingested_files([path.name])
            outcomes, unit = triage(config, h2o, session_date, [file], done, subjects_by_h2o())
            parsed = parser.parse([f.path for f in unit.files])
            outcomes += ingest_parsed(config, unit, parsed)[0]
            seconds.append(time.perf_counter() - started)
            states = {outcome.state.value for outcome, _ in outcomes}
            if states != {"ingested"}:
                raise RuntimeError(f"floor file {path} not ingested: {outcomes}")
    print(json.dumps(seconds))
    return 0


def session_key(path: Path):
    """(h2o, session date) from a behavior file name, parsed as the daemon parses it."""
    from mapd.formats.behavior import BehaviorFileName

    parsed = BehaviorFileName.parse(path.name)
    return parsed.h2o, parsed.session_date


def measure_mode(work: Path, mode: str, config: Path, n_sessions: int, n_trials: int,
                 poll_interval: float) -> list[float]:
    rig, _, h2o = MODES[mode]
    daemon = DaemonProcess(config, work / f"daemon-{mode}.log")
    try:
        daemon.wait_for(lambda e: e.get("event") == "scan complete", "the start-up scan", timeout=120)
        latencies = []
        pauses = random.Random(mode)  # the same pauses in every run
        for n in range(n_sessions):
            # A random pause puts each write at a random phase of the poll cycle (and
            # of the daemon's 0.25 s wake-ups): otherwise the rhythm of write, settle
            # and ingest would sample one phase only and bias the polling figure.
            time.sleep(pauses.uniform(0, poll_interval))
            path = write_session(work / rig, h2o, n, n_trials, seed=n)
            last_write = time.time()  # write_session returns after the file's one and only write
            event = daemon.wait_for(lambda e: e.get("event") == "session ingested" and path.name in e.get("files", ()),
                                    f"the ingest of {path.name}", timeout=300)
            committed = datetime.fromisoformat(event["timestamp"]).timestamp()  # local time, like time.time()
            latencies.append(committed - last_write)
            print(f"{mode:6s} session {n + 1:3d}: latency {latencies[-1]:.3f} s "
                  f"(insert {event['duration']:.3f} s, {event['trials']} trials)")
        return latencies
    finally:
        daemon.stop()


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), without needing numpy here."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


if __name__ == "__main__":
    sys.exit(main())
