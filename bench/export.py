"""NWB export: a session with one large generated probe, against a floor measured in the same run.

mapd: a generated JRClust v3 probe (default 10 million spikes, 300 units, 400
recorded trials, its 405-trial behavior session ingested first) is ingested
into a fresh embedded PostgreSQL in a temporary state_dir; then the session
is exported with ``mapd.export`` (``read_session``: the database to arrays
on the session clock, then ``write_nwb``: pynwb to the file), REPEATS times.

Floor, in this process, on the very arrays the export wrote: h5py writing
them (spike times, their per-unit index, the per-unit and per-trial columns,
the licks) as datasets of one HDF5 file: the least any writer of these
arrays must do. The database read is measured and printed on its own, and
the ratio is given both for the whole export and for its writing part.

Target: the export's writing <= 3x the floor (the whole export's ratio is
printed beside it).

    python bench/export.py [--spikes 10000000] [--units 300] [--trials 400]
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test_data"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

REPEATS = 3
TIME_TARGET = 3.0
H2O = "bn0"
SESSION_START = datetime(2019, 1, 7, 10, 0, 0)
SKIP_FIRST, DROP_LAST = 3, 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spikes", type=int, default=10_000_000)
    parser.add_argument("--units", type=int, default=300)
    parser.add_argument("--trials", type=int, default=400, help="recorded trials")
    args = parser.parse_args()
    from harness import in_scratch_directory

    return in_scratch_directory("mapd-bench-export-", lambda work: run(work, args))


def run(work: Path, args) -> int:
    from ephys import write_config

    from mapd import logs
    from mapd.config import load_config
    from mapd.runtime import open_database

    config = load_config(write_config(work))
    logs.configure(config.logging)
    open_database(config)
    started = time.perf_counter()
    key = generate(work, config, args)
    print(f"generated and ingested the session and its probe ({args.spikes:,} spikes, {args.units} units, "
          f"{args.trials} recorded trials) in {time.perf_counter() - started:.1f} s")
    exports, floors = [], []
    for n in range(REPEATS):
        exports.append(export_once(key, work / f"nwb{n}"))
        floors.append(floor_once(exports[-1]["data"], work / f"floor{n}.h5"))
    return report(exports, floors)


def generate(work: Path, config, args):
    import bpodgen
    import ephysgen

    from mapd.backfill import rescan
    from mapd.export.session import SessionSelection, select_sessions
    from mapd.formats.probe_folders import inspect_probe_folder
    from mapd.ingest.probe import ingest_probe
    from mapd.subjects import SubjectEntry, add_subjects

    n_behavior = args.trials + SKIP_FIRST + DROP_LAST
    session = bpodgen.write_session(bpodgen.session_path(work / "rig", H2O, "tw2", SESSION_START), h2o=H2O,
                                    start=SESSION_START, n_trials=n_behavior, seed=1)
    add_subjects([SubjectEntry(subject_id=100, h2o=H2O, dob=datetime(2018, 9, 1).date())])
    summary = rescan(config)
    assert summary.ok and summary.sessions == 1, summary
    codes = {t.index + 1: t.bitcode for t in session.ingested}
    probe = ephysgen.write_probe(work / "ephys", h2o=H2O, session_date=SESSION_START.date(), behavior=codes,
                                 skip_first=SKIP_FIRST, drop_last=DROP_LAST, n_spikes=args.spikes,
                                 n_units=args.units, seed=1)
    ingest_probe(inspect_probe_folder(probe.folder))
    [key] = select_sessions(SessionSelection())
    return key


def export_once(key, out: Path) -> dict:
    from mapd.export.nwb import write_nwb
    from mapd.export.session import read_session

    started = time.perf_counter()
    data = read_session(key)
    read = time.perf_counter() - started
    path = write_nwb(data, out)
    done = time.perf_counter()
    return {"data": data, "read": read, "write": done - started - read, "total": done - started,
            "mb": path.stat().st_size / 1e6}


def floor_once(data, path: Path) -> float:
    """h5py writing the arrays of the NWB file (no pynwb, no table structure) into one HDF5 file."""
    import h5py
    import numpy as np

    trials, licks = data.trials, data.licks
    started = time.perf_counter()
    with h5py.File(path, "w") as f:
        for probe in data.probes:
            group = f.create_group(f"probe{probe.insertion_number}")
            for name in ("spike_times", "spike_offsets", "unit_uid", "unit", "site", "electrode", "x", "y",
                         "amplitude", "snr", "waveforms"):
                group[name] = getattr(probe, name)
            group["quality"] = probe.quality.astype("S")
            group["electrode_x"], group["electrode_y"] = probe.electrodes.x, probe.electrodes.y
        for name in ("trial", "start", "stop", "sample", "delay", "go", "photostim", "task_protocol"):
            f[f"trials/{name}"] = getattr(trials, name)
        for name in ("instruction", "outcome", "early_lick", "bitcode"):
            f[f"trials/{name}"] = getattr(trials, name).astype("S")
        f["licks/time"], f["licks/side"] = licks.time, licks.side.astype("S")
        f["licks/trial"] = np.asarray(licks.trial)
    return time.perf_counter() - started


def report(exports: list[dict], floors: list[float]) -> int:
    for n, (run, floor) in enumerate(zip(exports, floors), start=1):
        print(f"  export {n}: {run['total']:.2f} s ({run['read']:.2f} s read_session + {run['write']:.2f} s "
              f"write_nwb, {run['mb']:.0f} MB file); floor (h5py write of the same arrays) {floor:.2f} s")
    spikes = sum(p.spike_times.size for p in exports[0]["data"].probes)
    total, read, write = (median(r[k] for r in exports) for k in ("total", "read", "write"))
    floor = median(floors)
    print(f"mapd: {spikes:,} spikes exported; median {total:.2f} s ({read:.2f} s reading the database, "
          f"{write:.2f} s writing the NWB file)")
    print(f"floor: median {floor:.2f} s")
    print(f"ratio write_nwb/floor: {write / floor:.2f} (target <= {TIME_TARGET}); whole export/floor: "
          f"{total / floor:.2f}")
    return 0 if write <= TIME_TARGET * floor else 1


if __name__ == "__main__":
    sys.exit(main())
