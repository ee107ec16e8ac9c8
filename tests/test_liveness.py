"""state_dir/daemon.json and the verdict of ``mapd status --check`` drawn from it alone."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_mapd
from mapd import liveness
from mapd.find.health import MISSING, OK, DataPath, PathHealth


@pytest.fixture
def mapd_like_process():
    """A live process whose command line names mapd, as the daemon's does."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "mapd"])
    yield process.pid
    process.kill()
    process.wait()


def beat_as(pid: int, state_dir: Path, paths: list[PathHealth] | None, heartbeat_seconds: float = 5.0) -> None:
    """The daemon's heartbeat, written as if by process ``pid``."""
    file = liveness.LivenessFile(state_dir, heartbeat_seconds)
    file.beat("idle", paths=paths)
    record = json.loads((state_dir / liveness.FILE_NAME).read_text())
    (state_dir / liveness.FILE_NAME).write_text(json.dumps(dict(record, pid=pid)))


def path(rig: str, health: str) -> PathHealth:
    return PathHealth(DataPath("behavior", Path(f"/mnt/rigs/{rig}"), rig), health)


def check(state_dir: Path) -> tuple[bool, str]:
    return liveness.health_check(liveness.read(state_dir), state_dir)


def test_healthy_with_a_live_daemon_and_usable_paths(tmp_path, mapd_like_process):
    beat_as(mapd_like_process, tmp_path, [path("RRig", OK), path("Tower2", OK)])
    healthy, why = check(tmp_path)
    assert healthy, why
    assert why.startswith(f"daemon pid {mapd_like_process} alive, heartbeat 0 s ago, 2 data paths ok")


def test_unhealthy_when_a_data_path_is_missing(tmp_path, mapd_like_process):
    beat_as(mapd_like_process, tmp_path, [path("RRig", OK), path("Tower2", MISSING)])
    assert check(tmp_path) == (False, "data paths not usable: rig Tower2: /mnt/rigs/Tower2: missing")


def test_unhealthy_without_a_daemon_or_with_a_dead_or_silent_one(tmp_path, mapd_like_process):
    healthy, why = check(tmp_path)
    assert not healthy and why == f"no daemon running here (no {tmp_path / 'daemon.json'})"

    beat_as(mapd_like_process, tmp_path, [], heartbeat_seconds=0.1)
    time.sleep(0.4)  # more than 3 heartbeats without one
    healthy, why = check(tmp_path)
    assert not healthy and why.startswith(f"daemon pid {mapd_like_process} is stuck: last heartbeat")

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    beat_as(int(dead.stdout), tmp_path, [])
    healthy, why = check(tmp_path)
    assert not healthy and why.startswith(f"daemon pid {int(dead.stdout)} is not running")


def test_many_unusable_paths_still_fit_the_fixed_size_file(tmp_path, mapd_like_process):
    paths = [path(f"Rig{n:03d}-{'x' * 60}", MISSING) for n in range(200)]
    beat_as(mapd_like_process, tmp_path, paths)
    local = liveness.read(tmp_path)
    assert local is not None and local.paths_checked == 200
    assert 0 < len(local.unhealthy_paths) < 200 and local.unhealthy_paths[-1].startswith("and ")
    assert local.unhealthy_paths[-1] == f"and {200 - len(local.unhealthy_paths) + 1} more"


def test_status_check_command_exit_status(tmp_path):
    config = tmp_path / "mapd.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\nsession_user: a\n")
    result = run_mapd("status", "--check", config=config)
    assert result.returncode == 1
    assert result.stdout == f"unhealthy: no daemon running here (no {tmp_path / 'state' / 'daemon.json'})\n"
