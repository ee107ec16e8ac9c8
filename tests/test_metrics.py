"""``mapd run``'s Prometheus endpoint scraped over real HTTP on localhost, and ``status --check`` of the same daemon."""

from __future__ import annotations

import socket
import time
import urllib.request
from datetime import timedelta

import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import TEST_DATABASE, run_mapd
from test_daemon import DAY, FAST, DaemonProcess, session_count, setup, wait_for, write_session  # noqa: F401 (setup)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, from http://127.0.0.1:port/metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_endpoint_and_health_check_of_a_running_daemon(setup, state_dir, tmp_path):
    rig, _ = setup
    gone = tmp_path / "rigs" / "Tower2"  # not there yet: an unmounted share
    port = free_port()
    config = tmp_path / "mapd.yaml"
    config.write_text(yaml.safe_dump({
        "state_dir": str(state_dir), "database": TEST_DATABASE, "session_user": "daveliu",
        "rig_data_paths": [{"rig": "RRig", "path": str(rig)}, {"rig": "Tower2", "path": str(gone)}],
        "ingest": {"min_behavior_file_bytes": 0}, "daemon": FAST, "metrics": {"listen": f"127.0.0.1:{port}"},
    }))
    write_session(rig, DAY)
    write_session(rig, DAY + timedelta(days=1), h2o="zz9")  # no such subject: waits
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        wait_for(lambda: session_count() == 1, what="ingest", daemon=daemon)
        wait_for(lambda: value(scrape(port), "mapd_files", kind="behavior", state="waiting") == 1,
                 what="gauges of the next heartbeat", daemon=daemon)
        samples = scrape(port)
        assert value(samples, "mapd_files", kind="behavior", state="ingested") == 1
        assert value(samples, "mapd_files", kind="behavior", state="failed") == 0
        assert value(samples, "mapd_ingested_total", kind="behavior") == 1
        assert value(samples, "mapd_ingest_duration_seconds_count", kind="behavior") == 1
        assert 0 < value(samples, "mapd_ingest_duration_seconds_sum", kind="behavior") < 30
        assert value(samples, "mapd_retries_total", kind="behavior") == 0
        assert value(samples, "mapd_oldest_waiting_seconds", kind="behavior") > 0
        assert value(samples, "mapd_oldest_waiting_seconds", kind="probe") == 0
        health = dict(kind="behavior", rig="Tower2", path=str(gone))
        assert value(samples, "mapd_data_path_health", **health, health="missing") == 1
        assert value(samples, "mapd_data_path_health", **health, health="ok") == 0
        assert value(samples, "mapd_data_path_health", kind="behavior", rig="RRig", path=str(rig), health="ok") == 1
        assert abs(time.time() - value(samples, "mapd_last_heartbeat_timestamp_seconds")) < 10
        assert value(samples, "mapd_database_ok") == 1
        assert value(samples, "mapd_archive_bytes_archived") == 0 and value(samples, "mapd_cleanup_bytes_freed") == 0

        check = run_mapd("status", "--check", config=config)
        assert check.returncode == 1
        assert check.stdout == f"unhealthy: data paths not usable: rig Tower2: {gone}: missing\n"
        gone.mkdir()  # the share is back
        wait_for(lambda: value(scrape(port), "mapd_data_path_health", **health, health="ok") == 1,
                 what="the path's return", daemon=daemon)
        wait_for(lambda: run_mapd("status", "--check", config=config).returncode == 0, what="healthy",
                 daemon=daemon)
        check = run_mapd("status", "--check", config=config)
        assert check.stdout.startswith(f"healthy: daemon pid {daemon.process.pid} alive, heartbeat ")
        assert check.stdout.endswith(", 2 data paths ok\n")
    finally:
        exit_status = daemon.stop()
    assert exit_status == 0
    try:
        scrape(port)
        raise AssertionError("the endpoint outlived the daemon")
    except OSError:
        pass

