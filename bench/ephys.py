"""Probe ingest: one large generated probe against a floor measured in the same run, on the same files.

mapd: one generated JRClust v3 probe (default 10 million spikes, 300 units,
400 recorded trials, with its 405-trial behavior session ingested first) is
put under the ephys data path (hard links, as probe N of the session) and
ingested by ``mapd rescan`` in a subprocess against a fresh embedded
PostgreSQL in a temporary state_dir: wall time of the command (Python start,
imports, connecting, scanning, reading, hashing, aligning, the transaction)
and the peak RSS of its process tree (the command and any child it waited for).

Floor, in this process: h5py read of the JRClust file's per-spike and
per-cluster arrays, plus a binary COPY of the very bytes mapd stored in
``ephys.Unit``, ``ephys.Unit.UnitTrial`` and ``ephys.TrialSpikes`` into
unconstrained copies of those tables (the payload is fetched beforehand,
untimed): the least work any ingest of this probe must do.

Targets: mapd's wall time <= 3x the floor's; peak RSS <= 3x the size of the
spike arrays (the file's per-spike datasets).

    python bench/ephys.py [--spikes 10000000] [--units 300] [--trials 400] [--sorter jrclust3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from statistics import median
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test_data"))
sys.path.insert(0, str(REPO / "bench"))

REPEATS = 3  # ingests of the same files (as probes 1..3) and floor runs; medians are compared
TIME_TARGET = 3.0
MEMORY_TARGET = 3.0
H2O = "bn0"
SESSION_START = datetime(2019, 1, 7, 10, 0, 0)
SKIP_FIRST, DROP_LAST = 3, 2  # the recording started 3 trials late and stopped 2 early
PER_SPIKE = ("viTime_spk", "viSite_spk", "mrPos_spk", "S_clu/viClu")
PER_CLUSTER = ("S_clu/trWav_raw_clu", "S_clu/vrPosX_clu", "S_clu/vrPosY_clu", "S_clu/vrVpp_uv_clu",
               "S_clu/vrSnr_clu", "S_clu/viSite_clu", "P/sRateHz", "viT_offset_file")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spikes", type=int, default=10_000_000)
    parser.add_argument("--units", type=int, default=300)
    parser.add_argument("--trials", type=int, default=400, help="recorded trials")
    parser.add_argument("--sorter", choices=("jrclust3", "jrclust4"), default="jrclust3")
    parser.add_argument("--rescan", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rescan:
        return rescan_measured(Path(args.rescan))
    from harness import in_scratch_directory

    return in_scratch_directory("mapd-bench-ephys-", lambda work: run(work, args))


def rescan_measured(config_path: Path) -> int:
    """The subprocess: ``mapd rescan`` by its command-line entry point, then its peak RSS as JSON.

    VmHWM is this process's own peak since exec; RUSAGE_CHILDREN covers the
    parse processes it started and waited for.
    """
    import resource

    from mapd.cli import main as mapd_main

    code = mapd_main(["--config", str(config_path), "rescan", "--workers", "1"])
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"exit_status": code, "peak_mb": max(peak_rss_mb(), children_mb)}))
    return code


def peak_rss_mb() -> float:
    """This process's peak RSS since its exec (VmHWM; ru_maxrss would count the parent's at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run(work: Path, args) -> int:
    from mapd import logs
    from mapd.config import load_config
    from mapd.runtime import open_database

    config_path = write_config(work)
    config = load_config(config_path)
    logs.configure(config.logging)
    db = open_database(config)
    started = time.perf_counter()
    folders, spike_bytes = generate(work, config, args)
    print(f"generated and ingested the behavior session; probe {args.sorter}: {args.spikes:,} spikes, "
          f"{args.units} units, {args.trials} recorded trials ({spike_bytes / 1e6:.0f} MB of spike arrays) "
          f"in {time.perf_counter() - started:.1f} s")
    runs = []
    for number, folder in enumerate(folders, start=1):  # the same files as probes 1, 2, 3: a fresh ingest each
        checkpoint(db.connection)  # each measurement starts with the server's dirty pages written out
        target = (work / "ephys" / folder.relative_to(work / "staged")).with_name(str(number))
        runs.append(rescan_in_subprocess(config_path, folder, target, number))
    floors = []
    for _ in folders:
        checkpoint(db.connection)
        floors.append((read_floor(folders[0]), *copy_floor(db.connection)))
    return report(runs, floors, spike_bytes)


def checkpoint(connection) -> None:
    connection.query("CHECKPOINT")


def write_config(work: Path) -> Path:
    path = work / "mapd.yaml"
    path.write_text(
        f"state_dir: {work / 'state'}\nsession_user: bench\n"
        f"rig_data_paths: [{{rig: BenchRig, path: '{work / 'rig'}'}}]\n"
        f"ephys_data_paths: [{{path: '{work / 'ephys'}'}}]\n"
        "ingest: {workers: 1, min_behavior_file_bytes: 0}\nlogging: {level: warning}\n"
        "daemon: {settle_seconds: 0}\n"  # the files were just generated
    )
    return path


def generate(work: Path, config, args) -> tuple[list[Path], int]:
    """The behavior session (generated and ingested) and REPEATS probe folders of the same files
    (hard links, outside the ephys data path until their run), whose bitcodes are its randomIDs."""
    import bpodgen
    import ephysgen
    import h5py

    from mapd.rescan import rescan
    from mapd.subjects import SubjectEntry, add_subjects

    n_behavior = args.trials + SKIP_FIRST + DROP_LAST
    session = bpodgen.write_session(bpodgen.session_path(work / "rig", H2O, "tw2", SESSION_START), h2o=H2O,
                                    start=SESSION_START, n_trials=n_behavior, seed=1)
    add_subjects([SubjectEntry(subject_id=100, h2o=H2O)])
    summary = rescan(config)
    assert summary.ok and summary.sessions == 1, summary
    codes = {t.index + 1: t.bitcode for t in session.ingested}
    probe = ephysgen.write_probe(work / "staged", sorter=args.sorter, h2o=H2O, session_date=SESSION_START.date(),
                                 behavior=codes, skip_first=SKIP_FIRST, drop_last=DROP_LAST, n_spikes=args.spikes,
                                 n_units=args.units, seed=1)
    folders = [probe.folder] * REPEATS
    names = PER_SPIKE if args.sorter == "jrclust3" else ("spikeTimes", "spikeSites", "spikePositions",
                                                         "spikeClusters")
    with h5py.File(probe.sorting, "r") as f:
        spike_bytes = sum(f[name].size * f[name].dtype.itemsize for name in names)
    return folders, spike_bytes


def rescan_in_subprocess(config_path: Path, staged: Path, folder: Path, number: int) -> dict:
    """Link the staged files into ``folder`` (probe ``number``); ``mapd rescan`` ingests it.

    Returns the command's wall time and peak RSS, and the probe's figures from ``ingest.EphysIngest``.
    """
    from mapd.schemas import ephys, ingest

    shutil.copytree(staged, folder, copy_function=os.link)
    started = time.perf_counter()
    process = subprocess.run([sys.executable, __file__, "--rescan", str(config_path)], cwd=REPO,
                             capture_output=True, text=True)
    wall = time.perf_counter() - started
    measured = json.loads(process.stdout.strip().splitlines()[-1]) if process.stdout.strip() else {}
    if process.returncode != 0 or measured.get("exit_status") != 0:
        raise RuntimeError(f"mapd rescan failed ({process.returncode}):\n{process.stderr}{process.stdout}")
    probe = (ingest.EphysIngest & {"insertion_number": number}).to_dicts()
    if len(probe) != 1:
        raise RuntimeError(f"mapd rescan did not ingest probe {number}:\n{process.stdout}")
    rows = sum(len(table & {"insertion_number": number})
               for table in (ephys.Unit, ephys.Unit.UnitTrial, ephys.TrialSpikes))
    return {"wall": wall, "peak_mb": measured["peak_mb"], "seconds": probe[0]["ingest_seconds"], "rows": rows,
            "units": probe[0]["units"], "spikes": probe[0]["spikes"], "trials": probe[0]["matched_trials"],
            "summary": [line.strip() for line in process.stdout.splitlines() if "probe" in line or "ingested  " in line
                        and "already" not in line][-2:]}


def read_floor(folder: Path) -> float:
    """h5py read of every array of the sorting file the ingest needs (the files are in the page cache)."""
    import h5py

    path = next(folder.glob("*_jrc.mat"), None) or next(folder.glob("*_res.mat"))
    started = time.perf_counter()
    with h5py.File(path, "r") as f:
        for name in (*PER_SPIKE, *PER_CLUSTER, "spikeTimes", "spikeSites", "spikePositions", "spikeClusters",
                     "meanWfLocalRaw", "clusterCentroids", "unitVppRaw", "unitSNR", "clusterSites"):
            if name in f:
                f[name][()]
    return time.perf_counter() - started


def copy_floor(connection) -> tuple[float, float]:
    """COPY the bytes mapd stored for probe 1 in the three large tables into fresh unconstrained
    copies of them; (seconds, MB)."""
    from mapd.schemas import ephys

    raw = connection._conn  # psycopg2: COPY is PostgreSQL's bulk path
    cursor = raw.cursor()
    payloads = {}
    cursor.execute("DROP SCHEMA IF EXISTS bench_floor CASCADE; CREATE SCHEMA bench_floor")
    for table in (ephys.Unit, ephys.Unit.UnitTrial, ephys.TrialSpikes):
        name = table.table_name
        cursor.execute(f"CREATE TABLE bench_floor.{name} (LIKE {table.full_table_name} INCLUDING DEFAULTS)")
        payloads[name] = io.BytesIO()
        cursor.copy_expert(f"COPY (SELECT * FROM {table.full_table_name} WHERE insertion_number = 1) "
                           "TO STDOUT WITH (FORMAT binary)", payloads[name])
    commit(raw)
    started = time.perf_counter()
    cursor.execute("BEGIN")
    for name, payload in payloads.items():
        payload.seek(0)
        cursor.copy_expert(f"COPY bench_floor.{name} FROM STDIN WITH (FORMAT binary)", payload)
    cursor.execute("COMMIT")
    seconds = time.perf_counter() - started
    cursor.execute("DROP SCHEMA bench_floor CASCADE")
    commit(raw)
    return seconds, sum(len(p.getbuffer()) for p in payloads.values()) / 1e6


def commit(raw) -> None:
    if not raw.autocommit:
        raw.commit()


def report(runs: list[dict], floors: list[tuple[float, float, float]], spike_bytes: int) -> int:
    """Print each run and the medians; 0 when the medians meet the targets."""
    for n, run in enumerate(runs, start=1):
        print(f"  mapd rescan {n}: {run['wall']:.2f} s wall ({run['seconds']:.2f} s of it ingesting the probe), "
              f"peak RSS {run['peak_mb']:.0f} MB; it said: {' / '.join(run['summary'])}")
    for n, (h5py_seconds, copy_seconds, copied_mb) in enumerate(floors, start=1):
        print(f"  floor run {n}: {h5py_seconds + copy_seconds:.2f} s (h5py read {h5py_seconds:.2f} s + COPY of "
              f"the same {copied_mb:.0f} MB {copy_seconds:.2f} s)")
    wall, inside = median(r["wall"] for r in runs), median(r["seconds"] for r in runs)
    peak_mb = max(r["peak_mb"] for r in runs)
    floor = median(h + c for h, c, _ in floors)
    run = runs[0]
    print(f"mapd: {run['rows']:,} rows, {run['units']} units, {run['spikes']:,} spikes, {run['trials']} trials; "
          f"median {wall:.2f} s wall of mapd rescan ({inside:.2f} s ingesting the probe); peak RSS {peak_mb:.0f} MB")
    print(f"floor: median {floor:.2f} s")
    print(f"ratio mapd rescan/floor: {wall / floor:.2f} (target <= {TIME_TARGET}); the probe's ingest alone: "
          f"{inside / floor:.2f}")
    print(f"peak RSS / spike arrays ({spike_bytes / 1e6:.0f} MB): {peak_mb * 1e6 / spike_bytes:.2f} "
          f"(target <= {MEMORY_TARGET})")
    return 0 if wall <= TIME_TARGET * floor and peak_mb * 1e6 <= MEMORY_TARGET * spike_bytes else 1


if __name__ == "__main__":
    sys.exit(main())
