"""Hostile rig trees and odd files, through the real ``mapd rescan`` and ``mapd status``: nothing stops ingest."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

import bpodgen
from conftest import REAL_SESSION, REPO, mapd_here, place_real_session, run_mapd
from mapd.schemas import experiment, ingest
from mapd.subjects import SubjectEntry, add_subjects

DAY = datetime(2018, 5, 2, 10, 0, 0)


@pytest.fixture
def rigs(tmp_path, db, write_config):
    """Two rig data paths, subject dl25 (the real session's), and their config."""
    roots = {name: tmp_path / "rigs" / name for name in ("RRig", "Tower2")}
    for root in roots.values():
        root.mkdir(parents=True)
    add_subjects([SubjectEntry(subject_id=407513, h2o="dl25")])
    return roots, write_config(roots)


def rows(state: str) -> list[dict]:
    return (ingest.SourceFile & {"state": state}).to_dicts()


def status_json(config) -> dict:
    result = mapd_here("status", "--json", config=config)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_too_long_h2o_and_a_very_long_path_fail_alone(rigs):
    (roots, config) = rigs
    place_real_session(roots["RRig"])
    long_h2o = "x" * 40
    bpodgen.write_session(bpodgen.session_path(roots["RRig"], long_h2o, "tw", DAY), start=DAY, n_trials=3)
    deep = roots["RRig"] / "dl25" / "/".join(["d" * 200] * 6) / "Session Data"
    deep.mkdir(parents=True)
    long_path = bpodgen.write_session(deep / "dl25_tw_20180502_100000.mat", start=DAY, n_trials=3).path
    assert len(str(long_path.relative_to(roots["RRig"]))) > 1024

    result = run_mapd("rescan", config=config)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1  # one file failed
    assert "  ingested                  2  (2 sessions" in result.stdout  # the real session and its long-path copy
    failed = rows("failed")
    assert len(failed) == 1 and long_h2o in failed[0]["subpath"]
    assert "longer than 16 characters" in failed[0]["reason"]
    assert len((ingest.SourceFile & "LENGTH(subpath) > 1024").to_dicts()) == 1


def test_the_same_relative_path_under_two_rigs(rigs):
    roots, config = rigs
    first = place_real_session(roots["RRig"])
    copy = place_real_session(roots["Tower2"])  # byte-identical copy

    result = run_mapd("rescan", config=config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(experiment.Session()) == 1
    skipped = rows("skipped")
    assert [row["rig"] for row in skipped] == ["Tower2"]
    assert skipped[0]["reason"] == "same file as RRig: dl25/tw2/Session Data/dl25_tw2_20180225_102508.mat"

    # Another file at the same relative path under the other rig: its own file, a conflict; the first stays ingested.
    copy.write_bytes(copy.read_bytes() + b"\0" * 16)
    again = run_mapd("rescan", config=config)
    assert again.returncode == 1
    assert [row["rig"] for row in rows("failed")] == ["Tower2"]
    assert "RRig: dl25/tw2/Session Data/dl25_tw2_20180225_102508.mat of the same name is ingested" in again.stdout
    assert [row["rig"] for row in rows("ingested")] == ["RRig"] and not rows("changed")
    assert first.read_bytes() == REAL_SESSION.read_bytes()


def test_touch_is_not_a_change_but_new_bytes_are(rigs):
    roots, config = rigs
    path = place_real_session(roots["RRig"])
    assert run_mapd("rescan", config=config).returncode == 0
    recorded = rows("ingested")[0]
    assert recorded["sha256"] == __import__("hashlib").sha256(path.read_bytes()).hexdigest()

    os.utime(path, (1e9, 1e9))  # touch: same bytes, new mtime
    touched = run_mapd("rescan", config=config)
    assert touched.returncode == 0 and "  already ingested          1" in touched.stdout, touched.stdout
    assert rows("ingested")[0]["file_mtime"] == 1e9 and not rows("changed")

    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    changed = run_mapd("rescan", config=config)
    assert "  changed                   1" in changed.stdout, changed.stdout
    assert changed.returncode == 0  # reported, not a failure
    assert "content differs from the ingested file" in rows("changed")[0]["reason"]
    assert len(experiment.SessionTrial()) == 11  # not ingested again


def test_fifo_socket_and_notes_in_session_data(rigs, tmp_path):
    roots, config = rigs
    place_real_session(roots["RRig"])
    session_dir = roots["RRig"] / "dl25" / "tw2" / "Session Data"
    os.mkfifo(session_dir / "dl25_tw2_20180226_101010.mat")  # nobody writes: opening it would block forever
    server = socket.socket(socket.AF_UNIX)
    short = f"/tmp/mapd-sock-{os.getpid()}"  # a socket path must be short; the socket file can then move
    server.bind(short)
    os.rename(short, session_dir / "dl25_tw2_20180227_101010.mat")
    (session_dir / "notes.mat").write_bytes(b"MATLAB notes")
    try:
        result = run_mapd("rescan", config=config, timeout=60)
    finally:
        server.close()
    assert result.returncode == 0, result.stdout + result.stderr  # nothing failed: ignored and listed
    assert "  ingested                  1" in result.stdout and "  ignored                   1" in result.stdout
    assert "dl25_tw2_20180226_101010.mat: not a regular file (a FIFO): not read" in result.stdout
    assert "dl25_tw2_20180227_101010.mat: not a regular file (a socket): not read" in result.stdout
    ignored = rows("ignored")
    assert [row["subpath"].rsplit("/", 1)[1] for row in ignored] == ["notes.mat"]
    assert ignored[0]["reason"].startswith("not a session file")

    report = status_json(config)
    assert [problem["path"] for problem in report["ignored"]] == [str(session_dir / "notes.mat")]
    rig_path = next(path for path in report["paths"] if path["rig"] == "RRig")
    assert rig_path["health"] == "ok" and rig_path["scan_problem_count"] == 2


def test_status_lists_skipped_files_with_reasons(rigs):
    roots, config = rigs
    path = bpodgen.write_session(bpodgen.session_path(roots["RRig"], "dl25", "tw", DAY), start=DAY, n_trials=5,
                                 protocol_type=2).path
    assert run_mapd("rescan", config=config).returncode == 0
    report = status_json(config)
    assert [problem["path"] for problem in report["skipped"]] == [str(path)]
    assert "no ingestible trial (5 GUI.ProtocolType < 3)" in report["skipped"][0]["reason"]
    text = mapd_here("status", config=config).stdout
    assert "skipped (showing 1 of 1):" in text and "GUI.ProtocolType < 3" in text


def test_missing_data_path_is_loud(rigs, write_config, tmp_path):
    roots, _ = rigs
    missing = tmp_path / "unmounted-share"
    config = write_config({"RRig": roots["RRig"], "Gone": missing})
    place_real_session(roots["RRig"])

    result = run_mapd("rescan", config=config)
    assert result.returncode == 1
    assert f"warning: rig Gone: {missing} does not exist (share not mounted?)" in result.stderr
    assert "  ingested                  1" in result.stdout  # the other rig is not held up

    report = status_json(config)
    gone = next(path for path in report["paths"] if path["rig"] == "Gone")
    assert gone["health"] == "missing" and gone["since"]
    text = mapd_here("status", config=config).stdout
    assert f"rig Gone: {missing}: missing since" in text

    missing.write_text("a file where the share should be")
    report = status_json(config)
    assert next(p for p in report["paths"] if p["rig"] == "Gone")["health"] == "not a directory"


def test_unreadable_directory_and_bad_links_are_listed():
    # Root reads every directory: run mapd as an unprivileged user (as the service runs), on its own state.
    import yaml

    base = Path(f"/tmp/mapd-unreadable-{os.getpid()}")
    rig = base / "rigs" / "RRig"
    place_real_session(rig)
    locked = rig / "dl25" / "locked" / "Session Data"
    locked.mkdir(parents=True)
    bpodgen.write_session(locked / "dl25_tw_20180502_100000.mat", start=DAY, n_trials=3)
    session_dir = rig / "dl25" / "tw2" / "Session Data"
    (session_dir / "dl25_tw2_20180228_101010.mat").symlink_to(session_dir / "nowhere.mat")
    loop = session_dir / "dl25_tw2_20180301_101010.mat"
    loop.symlink_to(loop)
    config = base / "mapd.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(base / "state"), "session_user": "daveliu",
                                      "rig_data_paths": [{"rig": "RRig", "path": str(rig)}],
                                      "ingest": {"min_behavior_file_bytes": 0}, "daemon": {"settle_seconds": 0}}))
    shutil.chown(base, "nobody", "nogroup")
    for path in base.rglob("*"):
        os.chown(path, 65534, 65534, follow_symlinks=False)
    locked.chmod(0)

    def as_nobody(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable,
                               "-m", "mapd", "--config", str(config), *args],
                              capture_output=True, text=True, timeout=120, cwd=REPO)

    try:
        assert as_nobody("subject", "add", "--subject-id", "407513", "--h2o", "dl25").returncode == 0
        result = as_nobody("rescan")
        assert "  ingested                  1" in result.stdout, result.stdout + result.stderr
        assert f"not scanned: {locked}: directory not readable: Permission denied" in result.stdout
        assert "dl25_tw2_20180228_101010.mat: dangling symbolic link" in result.stdout
        assert "dl25_tw2_20180301_101010.mat: symbolic link loop" in result.stdout
        status = as_nobody("status", "--json")
        rig_path = json.loads(status.stdout)["paths"][0]
        assert rig_path["scan_problem_count"] == 3
        assert {problem["reason"] for problem in rig_path["scan_problems"]} == {
            "directory not readable: Permission denied", "dangling symbolic link", "symbolic link loop"}
    finally:
        locked.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_control_characters_are_escaped_and_a_closed_pipe_is_quiet(rigs):
    roots, config = rigs
    odd = roots["RRig"] / "dl25" / "tw\n2\x1b[31m" / "Session Data"
    odd.mkdir(parents=True)
    (odd / "dl25_tw2_20180225_1025.mat").write_bytes(b"not a session name")
    result = run_mapd("rescan", config=config)
    assert "tw\\n2\\x1b[31m/Session Data/dl25_tw2_20180225_1025.mat" in result.stdout
    assert "\x1b" not in result.stdout
    text = mapd_here("status", config=config).stdout
    assert "tw\\n2\\x1b[31m" in text and "\x1b" not in text

    # `| true` closes the pipe before mapd writes, as `| head` does after its lines.
    pipeline = subprocess.run(f"{sys.executable} -m mapd --config {config} status | true", shell=True,
                              capture_output=True, text=True, cwd=REPO, timeout=120)
    assert pipeline.stderr == "", pipeline.stderr
