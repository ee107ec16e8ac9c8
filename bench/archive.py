"""Local archive throughput: mapd's copy + verify of generated 1 GB files against cp + sha256sum, same run.

mapd, per file: the stage's checksum of the source (the one the archive is
verified against), then ``LocalTransport``: copy to a temporary name while
hashing what is read, fsync, read the copy back from the disk (its cached
pages dropped) and hash it, rename; then ``verify``. Floor, per file:
``cp SOURCE TARGET && sha256sum TARGET`` (coreutils), the way an operator
would copy and check by hand. Before every run of either, the sources' and
targets' cached pages are dropped (posix_fadvise), so both start from disk.

Target: mapd's throughput >= 0.8x the floor's. Globus: API calls and
transfer tasks per session with the mocked API are printed by
``bench/globus_calls.py`` (run here too, for the README's figures).

    python bench/archive.py [--files 2] [--gigabytes 1] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mapd.archive.local import LocalTransport  # noqa: E402
from mapd.archive.transport import ArchiveItem, Batch  # noqa: E402
from mapd.find.files import sha256_of  # noqa: E402

TARGET = 0.8
CHUNK = 64 << 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--gigabytes", type=float, default=1.0, help="size of each file")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where to write (a real disk)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mapd-bench-archive-", dir=args.dir))
    try:
        sources = generate(work / "rig", args.files, int(args.gigabytes * 1e9))
        total = sum(path.stat().st_size for path in sources)
        floor = min(run_floor(sources, work / f"floor{n}") for n in range(2))
        ours = min(run_mapd(sources, work / f"archive{n}") for n in range(2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.files} files, {total / 1e9:.2f} GB; best of 2 runs each, from disk")
    print(f"floor (cp + sha256sum): {floor:.2f} s = {total / floor / 1e6:.0f} MB/s")
    print(f"mapd (stage checksum + copy, fsync, read back, verify, rename): {ours:.2f} s = "
          f"{total / ours / 1e6:.0f} MB/s")
    ratio = floor / ours
    print(f"throughput ratio mapd/floor: {ratio:.2f} (target >= {TARGET})")
    subprocess.run([sys.executable, str(REPO / "bench" / "globus_calls.py"), "--files", "1", "100", "1000"],
                   check=True)
    return 0 if ratio >= TARGET else 1


def generate(folder: Path, files: int, size: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    block = os.urandom(CHUNK)  # random bytes: nothing below compresses or deduplicates them
    for n in range(files):
        path = folder / f"bench_g0_t{n}.imec0.ap.bin"
        with open(path, "wb") as out:
            written = 0
            while written < size:
                piece = block[: min(CHUNK, size - written)]
                out.write(bytes([n % 256]) + piece[1:])  # each file differs
                written += len(piece)
            out.flush()
            os.fsync(out.fileno())
        paths.append(path)
    return paths


def drop_cache(paths: list[Path]) -> None:
    for path in paths:
        if path.exists():
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def run_floor(sources: list[Path], target: Path) -> float:
    target.mkdir()
    drop_cache(sources)
    started = time.perf_counter()
    for source in sources:
        copy = target / source.name
        subprocess.run(["cp", str(source), str(copy)], check=True)
        subprocess.run(["sha256sum", str(copy)], check=True, capture_output=True)
    seconds = time.perf_counter() - started
    shutil.rmtree(target)
    return seconds


def run_mapd(sources: list[Path], archive: Path) -> float:
    archive.mkdir()
    drop_cache(sources)
    transport = LocalTransport(archive)
    started = time.perf_counter()
    items = []
    for source in sources:
        sha256, stat = sha256_of(source)  # the stage's read of record
        items.append(ArchiveItem(source, f"bn0/2019-01-07/ephys_raw/{source.name}", stat.st_size, sha256))
    batch = Batch("bench", "bench", tuple(items), transport.new_submission_id())
    task = transport.submit(batch)
    transport.verify(task, batch)
    seconds = time.perf_counter() - started
    shutil.rmtree(archive)
    return seconds


if __name__ == "__main__":
    sys.exit(main())
