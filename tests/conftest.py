"""Shared fixtures: one real embedded PostgreSQL for the whole run, emptied between tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "test_data"
REAL_SESSION = TEST_DATA / "behavior" / "dl25" / "tw2" / "Session Data" / "dl25_tw2_20180225_102508.mat"
sys.path.insert(0, str(TEST_DATA))  # the Bpod file generator, bpodgen


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory) -> Path:
    # Short and outside pytest's 0700 tree: the embedded server runs as its own
    # user when tests run as root, and its socket path must stay short.
    path = Path(os.environ.get("MAPD_TEST_STATE", f"/tmp/mapd-test-{os.getpid()}"))
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    yield path
    from mapd.database import release_embedded

    release_embedded(path)  # whoever started a server on it: gone before its data directory is
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def write_config(tmp_path, state_dir):
    """Write a mapd.yaml in the test's directory and return its path."""

    def write(rigs: dict[str, Path] | None = None, **settings) -> Path:
        body = {
            "state_dir": str(state_dir),
            "session_user": "daveliu",
            "rig_data_paths": [{"rig": rig, "path": str(path), "order": n} for n, (rig, path) in enumerate((rigs or {}).items())],
            "ingest": {"min_behavior_file_bytes": 0, "workers": 2},
            # Files are written by the tests just before a rescan: no waiting for them to settle.
            "daemon": {"settle_seconds": 0},
        }
        body.update(settings)
        path = tmp_path / "mapd.yaml"
        path.write_text(yaml.safe_dump(body))
        return path

    return write


@pytest.fixture
def load(write_config):
    from mapd.config import load_config

    def load_(rigs=None, **settings):
        return load_config(write_config(rigs, **settings))

    return load_


@pytest.fixture(scope="session")
def database(state_dir):
    """The MAP schemas on a real embedded PostgreSQL, for the whole test run; stopped at its end."""
    from mapd.config import parse_config
    from mapd.database import release_embedded
    from mapd.runtime import open_database

    config = parse_config(f"state_dir: {state_dir}\nsession_user: daveliu\n", state_dir / "mapd.yaml")
    yield open_database(config)
    release_embedded(state_dir)  # the last user (subprocesses have exited): the server stops now


@pytest.fixture
def db(database):
    """An empty database (but for lookup contents) for each test."""
    _empty(database)
    yield database


def _empty(database) -> None:
    from mapd.schemas import experiment, ingest, lab

    ingest.SourceFile.delete_quick()
    ingest.TrialUidBlock.delete_quick()
    experiment.Session.delete()
    lab.Subject.delete()
    lab.Person.delete()
    lab.Rig.delete()


@pytest.fixture
def rig_root(tmp_path) -> Path:
    root = tmp_path / "rigs" / "RRig" / "Bpod Local" / "Data"
    root.mkdir(parents=True)
    return root


def place_real_session(root: Path, h2o: str = "dl25") -> Path:
    """Copy the real MAP session to where a rig writes it."""
    target = root / h2o / "tw2" / "Session Data" / REAL_SESSION.name.replace("dl25", h2o, 1)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REAL_SESSION, target)
    return target


def mapd_command(*args: str, config: Path | None = None) -> list[str]:
    """The installed ``mapd`` command line, as a user would type it."""
    command = [sys.executable, "-m", "mapd"]
    if config is not None:
        command += ["--config", str(config)]
    return command + list(args)


def run_mapd(*args: str, config: Path | None = None, timeout: float = 300, env: dict | None = None):
    """Run the installed ``mapd`` command in a subprocess (as a user would)."""
    return subprocess.run(mapd_command(*args, config=config), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=str(REPO))


def start_mapd(*args: str, config: Path | None = None, **popen) -> subprocess.Popen:
    """Start the installed ``mapd`` command in a subprocess and return at once (the caller waits for it)."""
    return subprocess.Popen(mapd_command(*args, config=config), cwd=str(REPO), text=True, **popen)


@pytest.fixture(scope="session", autouse=True)
def quiet_datajoint():
    """Route DataJoint's log through mapd's logging (errors only), as the mapd command does."""
    import logging

    from mapd import logs

    logs.configure()
    yield
    # Exit handlers may log after pytest has closed its capture.
    logging.getLogger().handlers[:] = []
