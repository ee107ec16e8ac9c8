"""Backfill throughput: mapd rescan against a floor measured in the same run, on the same files.

mapd: ``rescan`` of N generated 500-trial sessions into a fresh embedded
PostgreSQL with two parsing workers (all of mapd: discovery, bookkeeping,
parsing, one transaction per session with its keys and constraints).

Floor: in one process, load each of the same files with scipy and COPY the
same rows mapd inserted into unconstrained copies of the tables, one COPY per
table and session: the least work any ingest of these files must do.

Target: mapd's wall time <= 2.0 x the floor's.

    python bench/backfill.py [--sessions 40] [--trials 500] [--workers 2]
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import scipy.io

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test_data"))

import bpodgen  # noqa: E402

from mapd import logs  # noqa: E402
from mapd.rescan import rescan  # noqa: E402
from mapd.config import parse_config  # noqa: E402
from mapd.runtime import open_database  # noqa: E402
from mapd.schemas import experiment, ingest  # noqa: E402
from mapd.subjects import SubjectEntry, add_subjects  # noqa: E402

SUBJECTS = 4
TARGET_RATIO = 2.0
# The tables a behavior session fills, and what mapd bookkeeps beside them.
SESSION_TABLES = (
    experiment.Session,
    ingest.BehaviorIngest,
    ingest.BehaviorIngest.BehaviorFile,
    experiment.SessionTrial,
    experiment.BehaviorTrial,
    experiment.TrialNote,
    experiment.TrialEvent,
    experiment.ActionEvent,
    ingest.BehaviorIngest.CorrectedTrialEvents,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mapd-bench-", dir="/tmp"))
    try:
        return run(work, args.sessions, args.trials, args.workers)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, n_sessions: int, n_trials: int, workers: int) -> int:
    rig = work / "rig"
    started = time.perf_counter()
    files = generate(rig, n_sessions, n_trials)
    size = sum(path.stat().st_size for path in files)
    print(f"generated {n_sessions} sessions x {n_trials} trials ({size / 1e6:.0f} MB) "
          f"in {time.perf_counter() - started:.1f} s")

    config = parse_config(
        f"state_dir: {work / 'state'}\nsession_user: bench\n"
        f"rig_data_paths: [{{rig: BenchRig, path: '{rig}'}}]\n"
        f"ingest: {{workers: {workers}, min_behavior_file_bytes: 0}}\nlogging: {{level: warning}}\n"
        "daemon: {settle_seconds: 0}\n",  # the files were just generated
        work / "mapd.yaml",
    )
    logs.configure(config.logging)
    db = open_database(config)
    add_subjects([SubjectEntry(subject_id=100 + n, h2o=f"bn{n}") for n in range(SUBJECTS)])

    started = time.perf_counter()
    summary = rescan(config)
    mapd_seconds = time.perf_counter() - started
    assert summary.ok and summary.sessions == n_sessions, summary
    rows = summary.rows

    floor_seconds, floor_rows = floor(db.connection, files)
    assert floor_rows == rows, (floor_rows, rows)

    print(f"mapd rescan ({workers} workers): {mapd_seconds:.2f} s, {n_sessions / mapd_seconds:.2f} sessions/s, "
          f"{rows / mapd_seconds:,.0f} rows/s")
    print(f"floor (scipy load + COPY, 1 process): {floor_seconds:.2f} s, {n_sessions / floor_seconds:.2f} sessions/s, "
          f"{rows / floor_seconds:,.0f} rows/s")
    ratio = mapd_seconds / floor_seconds
    print(f"ratio mapd/floor: {ratio:.2f} (target <= {TARGET_RATIO})")
    return 0 if ratio <= TARGET_RATIO else 1


def generate(root: Path, n_sessions: int, n_trials: int) -> list[Path]:
    files = []
    for n in range(n_sessions):
        subject, day = n % SUBJECTS, n // SUBJECTS
        start = datetime(2019, 1, 7, 10, 0, 0) + timedelta(days=day, minutes=subject)
        generated = bpodgen.write_session(bpodgen.session_path(root, f"bn{subject}", "tw2", start), h2o=f"bn{subject}",
                                          start=start, n_trials=n_trials, seed=n)
        files.append(generated.path)
    return files


def floor(connection, files: list[Path]) -> tuple[float, int]:
    """Load every file with scipy and COPY the rows mapd inserted, session by session."""
    by_session = rows_by_session()
    raw = connection._conn  # psycopg2: COPY is PostgreSQL's bulk path
    cursor = raw.cursor()
    cursor.execute("DROP SCHEMA IF EXISTS bench_floor CASCADE; CREATE SCHEMA bench_floor")
    for table in SESSION_TABLES:
        name = table.full_table_name.split(".")[-1]
        cursor.execute(f"CREATE TABLE bench_floor.{name} (LIKE {table.full_table_name} INCLUDING DEFAULTS)")
    file_session = {row["behavior_file"]: (row["subject_id"], row["session"])
                    for row in ingest.BehaviorIngest.BehaviorFile.to_dicts()}

    copied = 0
    started = time.perf_counter()
    for path in files:
        scipy.io.loadmat(path, simplify_cells=True)
        for table_name, (columns, rows) in by_session[file_session[path.name]].items():
            buffer = io.StringIO()
            csv.writer(buffer).writerows(rows)
            buffer.seek(0)
            cursor.copy_expert(f"COPY bench_floor.{table_name} ({', '.join(columns)}) FROM STDIN WITH CSV", buffer)
            copied += len(rows)
    raw.commit() if not raw.autocommit else None
    seconds = time.perf_counter() - started
    cursor.execute("DROP SCHEMA bench_floor CASCADE")
    return seconds, copied


def rows_by_session() -> dict[tuple[int, int], dict[str, tuple[list[str], list[tuple]]]]:
    """Every row mapd inserted, as CSV-ready tuples, grouped by session."""
    grouped: dict = defaultdict(dict)
    for table in SESSION_TABLES:
        name = table.full_table_name.split(".")[-1]
        columns = list(table.heading.names)
        for row in table.to_dicts():
            key = (row["subject_id"], row["session"])
            grouped[key].setdefault(name, (columns, []))[1].append(tuple(row[c] for c in columns))
    return grouped


if __name__ == "__main__":
    sys.exit(main())
