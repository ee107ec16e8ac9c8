"""The durable queue's rules on their own (mapd.queue): registering found files, and what status reads
back from it, on the real database (no daemon).
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

from mapd.find.files import FileOnDisk
from mapd.queue import files as queue
from mapd.queue import status
from mapd.queue.files import FileOutcome, FileState
from mapd.queue.policy import Policy

POLICY = Policy(settle_seconds=0, initial_seconds=1, max_seconds=10, max_attempts=3)
ROOT = Path("/data/rigs")  # rows only: the queue never looks at the disk


def found(rig: str, name: str, size: int = 1000, mtime: float = 1.5e9) -> FileOnDisk:
    return FileOnDisk(ROOT / rig / name, ROOT / rig, rig, size, mtime)


def register(*files: FileOnDisk) -> queue.Registration:
    return queue.register_found("behavior", list(files), POLICY,
                                {queue.file_id("behavior", f): ("dl7", date(2018, 5, 1)) for f in files})


def test_a_file_is_queued_once_and_again_only_when_it_changed(db):
    file = found("RigA", "dl7/tw/Session Data/dl7_tw_20180501_100000.mat")
    assert (register(file).new, register(file).new) == (1, 0)
    queue.record("behavior", [FileOutcome(file, FileState.INGESTED)])
    assert register(file).requeued == 0  # unchanged: left alone
    result = register(found("RigA", file.subpath, size=2000))
    assert (result.new, result.requeued) == (0, 1)
    [item] = queue.pending_files("behavior", "dl7", date(2018, 5, 1))
    assert (item.file.size, item.attempts) == (2000, 0)


def test_status_shows_each_rigs_newest_file_and_last_ingest(db):
    a_old, a_new = found("RigA", "dl7/tw/Session Data/a1.mat"), found("RigA", "dl7/tw/Session Data/a2.mat")
    b_only = found("RigB", "dl8/tw/Session Data/b1.mat")
    for file in (a_old, b_only, a_new):
        register(file)
        time.sleep(0.01)  # found_time is kept to the millisecond
    queue.record("behavior", [FileOutcome(a_old, FileState.INGESTED)])
    rigs = {rig.rig: rig for rig in status._rig_activity()}
    assert sorted(rigs) == ["RigA", "RigB"]
    assert (rigs["RigA"].last_file_seen, rigs["RigA"].last_ingested_file) == (a_new.subpath, a_old.subpath)
    assert rigs["RigA"].last_ingest_time is not None
    assert (rigs["RigB"].last_file_seen, rigs["RigB"].last_ingested_file, rigs["RigB"].last_ingest_time) == (
        b_only.subpath, None, None)
