"""The daemon's ingest handlers on their own (mapd.handlers): what they do with a queued file that is
gone, out of reach or still changing, on the real database and real files.

Both kinds (a behavior file, a probe folder) follow one rule: gone from a
reachable data path fails it; an unreachable data path (a share down for a
weekend) is waited for with backoff, never given up; a changed file waits to
settle again.
"""

from __future__ import annotations

import shutil
from datetime import date, datetime

import pytest

import bpodgen
import ephysgen
from mapd.find.scan import data_files, probe_folders
from mapd.handlers import BehaviorDays, ProbeDays, UnitKey
from mapd.parsing import ParsePool
from mapd.queue import files as queue
from mapd.queue.policy import Policy
from mapd.schemas import ingest

DAY = date(2018, 5, 14)
H2O = "hd3"
POLICY = Policy(settle_seconds=0, initial_seconds=60, max_seconds=600, max_attempts=3)


@pytest.fixture
def behavior(db, load, tmp_path):
    """A queued behavior file and the handler of behavior days."""
    root = tmp_path / "rig"
    start = datetime.combine(DAY, datetime.min.time()).replace(hour=9)
    session = bpodgen.write_session(bpodgen.session_path(root, H2O, "tw", start), h2o=H2O, start=start, n_trials=5)
    [file] = data_files("behavior", root, "RigA", root).files
    queue.register_found("behavior", [file], POLICY, {queue.file_id("behavior", file): (H2O, DAY)})
    with ParsePool(1, max_inflated_bytes=2**29, memory_limit_bytes=2**31) as parser:
        yield BehaviorDays(load({"RigA": root}), POLICY, parser), file, session.path


@pytest.fixture
def probe(db, load, tmp_path):
    """A queued probe folder and the handler of probe days."""
    root = tmp_path / "ephys"
    generated = ephysgen.write_probe(root, h2o=H2O, session_date=DAY, n_spikes=2000, n_units=3)
    [(key, folder)] = probe_folders(root, data_files("ephys", root, None, root).files)
    queue.register_found("probe", [folder], POLICY, {queue.file_id("probe", folder): (key.h2o, key.session_date)})
    return ProbeDays(load(), POLICY), folder, generated.folder


def row(kind: str, file) -> dict:
    [found] = (ingest.SourceFile & {"file_id": queue.file_id(kind, file)}).to_dicts()
    return found


@pytest.fixture(params=["behavior", "probe"])
def queued(request):
    """Either kind: (handler, its queued unit, the file as queued, the path on disk)."""
    handler, file, path = request.getfixturevalue(request.param)
    return handler, UnitKey(handler.kind, H2O, DAY), file, path


def test_a_file_gone_from_a_reachable_data_path_fails(queued):
    handler, unit, file, path = queued
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    handler.handle(unit)
    found = row(handler.kind, file)
    what = "probe folder" if handler.kind == "probe" else "file"
    assert (found["state"], found["reason"]) == ("failed", f"{what} no longer exists")


def test_an_unreachable_data_path_is_waited_for_with_backoff_and_never_given_up(queued):
    handler, unit, file, _ = queued
    away = file.data_root.with_name(file.data_root.name + "-unmounted")
    file.data_root.rename(away)  # as an unmounted share looks
    reason = f"data path {file.data_root} is not reachable"
    for attempt in range(1, POLICY.max_attempts + 3):  # beyond the attempts a file's own failure gets
        before = queue.now_ms()
        handler.handle(unit)
        found = row(handler.kind, file)
        assert (found["state"], found["reason"], found["attempts"]) == ("pending", reason, attempt)
        waited = (found["next_attempt"] - before).total_seconds()
        ceiling = min(POLICY.max_seconds, POLICY.initial_seconds * 2 ** (attempt - 1))
        assert ceiling / 2 - 1 <= waited <= ceiling + 1
        assert unit not in handler.ready()  # not before its backoff is over
    away.rename(file.data_root)  # back: the next look finds the file where it was
    handler.handle(unit)
    found = row(handler.kind, file)
    assert found["reason"] != reason and found["state"] != "failed"


def test_a_file_changed_since_it_settled_waits_to_settle_again(queued):
    handler, unit, file, path = queued
    written = next(p for p in sorted(path.rglob("*")) if p.is_file()) if path.is_dir() else path
    with written.open("ab") as grown:
        grown.write(b"\0" * 100)
    handler.handle(unit)
    found = row(handler.kind, file)
    assert (found["state"], found["reason"], found["attempts"]) == ("pending", "still being written", 0)
    assert found["file_size"] == file.size + 100  # compared with this size from now on
    assert unit in handler.ready()  # settle_seconds is 0 here: ready at once
