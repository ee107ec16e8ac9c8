"""Configuration: discovery, validation messages, paths and secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapd.config import ConfigError, find_config_file, load_config

GOOD = """
state_dir: state
session_user: daveliu
rig_data_paths:
  - {rig: RRig, path: rigs/RRig, order: 1}
  - {rig: Tower-2, path: /mnt/tower2, order: 0}
ephys_data_paths:
  - {path: ephys}
"""


def write(tmp_path: Path, text: str, name: str = "mapd.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_file_resolves_relative_paths_against_its_directory(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert config.state_dir == tmp_path / "state"
    assert [entry.rig for entry in config.rig_data_paths] == ["Tower-2", "RRig"]  # by order
    assert config.rig_data_paths[1].path == tmp_path / "rigs" / "RRig"
    assert config.ephys_data_paths[0].path == tmp_path / "ephys"
    assert config.database.backend == "embedded" and config.database.schema_prefix == "map_"
    assert config.ingest.min_behavior_file_bytes == 100 * 1024
    assert config.pgdata == tmp_path / "state" / "pgdata"  # the embedded server's data directory
    moved = load_config(write(tmp_path, GOOD + "database: {data_directory: pg}\n"))
    assert moved.pgdata == tmp_path / "pg" and moved.state_dir == tmp_path / "state"


@pytest.mark.parametrize(
    "text, key, problem",
    [
        (GOOD + "rig_data_path: []\n", "rig_data_path", "unknown key"),
        ("state_dir: x\n", "session_user", "required key is missing"),
        (GOOD + "database: {backend: oracle}\n", "database.backend", "'embedded', 'postgresql' or 'mysql'"),
        (GOOD + "database: {backend: postgresql}\n", "database", "needs host and user"),
        (GOOD + "database: {backend: mysql, host: h, user: u, data_directory: /pg}\n", "database",
         "data_directory is the embedded server's; backend mysql has none"),
        (GOOD + "database: {schema_prefix: 'Bad-Prefix'}\n", "database.schema_prefix", "pattern"),
        (GOOD + "ingest: {workers: 0}\n", "ingest.workers", "greater than or equal to 1"),
        ("session_user: a\nrig_data_paths:\n  - {rig: R, path: /x, speed: 3}\n", "rig_data_paths.0.speed",
         "unknown key"),
        ("session_user: a\nrig_data_paths:\n  - {rig: A, path: /x}\n  - {rig: B, path: /x}\n", "rig_data_paths",
         "listed twice"),
        (GOOD + "metrics: {listen: 9464}\n", "metrics.listen", "Input should be a valid string"),
        (GOOD + "metrics: {listen: localhost}\n", "metrics.listen", "expected host:port, e.g. 127.0.0.1:9464"),
        (GOOD + "metrics: {listen: ':9464'}\n", "metrics.listen", "expected host:port"),
        (GOOD + "metrics: {listen: '127.0.0.1:99999'}\n", "metrics.listen", "expected host:port"),
    ],
)
def test_errors_name_the_file_the_key_and_the_problem(tmp_path, text, key, problem):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message
    assert f"  {key}: " in message
    assert problem in message


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "state_dir: [unclosed\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- a list\n"))


def test_discovery_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAPD_CONFIG", raising=False)
    if not Path("/etc/mapd/mapd.yaml").exists():
        with pytest.raises(ConfigError, match="no configuration file"):
            find_config_file()
    local = write(tmp_path, GOOD)
    assert find_config_file() == Path("mapd.yaml")
    env = write(tmp_path, GOOD, "env.yaml")
    monkeypatch.setenv("MAPD_CONFIG", str(env))
    assert find_config_file() == env
    assert find_config_file(str(local)) == local


def test_password_from_file_or_environment_and_never_shown(tmp_path, monkeypatch):
    monkeypatch.delenv("MAPD_DB_PASSWORD", raising=False)
    secret = write(tmp_path, "s3cret-from-file\n", "db-password")
    path = write(tmp_path, GOOD + "database: {backend: postgresql, host: db, user: mapd, password_file: db-password}\n")
    config = load_config(path)
    assert config.database.password.get_secret_value() == "s3cret-from-file"
    assert config.database.password_file == secret
    assert "s3cret" not in repr(config) and "s3cret" not in str(config.model_dump())

    monkeypatch.setenv("MAPD_DB_PASSWORD", "s3cret-from-env")
    assert load_config(path).database.password.get_secret_value() == "s3cret-from-env"

    monkeypatch.delenv("MAPD_DB_PASSWORD")
    secret.unlink()
    with pytest.raises(ConfigError, match="database.password_file: cannot read"):
        load_config(path)


def test_metrics_are_off_by_default_and_listen_is_host_and_port(tmp_path):
    assert load_config(write(tmp_path, GOOD)).metrics.address is None
    assert load_config(write(tmp_path, GOOD + "metrics: {listen: '127.0.0.1:9464'}\n")).metrics.address == (
        "127.0.0.1", 9464)
    assert load_config(write(tmp_path, GOOD + "metrics: {listen: '[::1]:9464'}\n")).metrics.address == ("::1", 9464)
