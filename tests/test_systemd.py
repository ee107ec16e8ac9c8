"""The systemd notify protocol against real datagram sockets, and the shipped unit file."""

from __future__ import annotations

import configparser
import logging
import os
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mapd.systemd import Notifier

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "mapd.service"


# -- the notify protocol ---------------------------------------------------------


@pytest.fixture
def listener(tmp_path) -> Iterator[tuple[socket.socket, str]]:
    """A notify socket bound in the test's directory, as systemd would: (socket, NOTIFY_SOCKET)."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        yield sock, str(path)


@pytest.fixture
def abstract_listener() -> Iterator[tuple[socket.socket, str]]:
    """A notify socket in Linux's abstract namespace: NOTIFY_SOCKET=@name."""
    name = f"mapd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        yield sock, "@" + name


def received(sock: socket.socket) -> list[dict[str, str]]:
    """Every datagram waiting on ``sock``, each as its assignments."""
    messages = []
    sock.setblocking(False)
    try:
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                return messages
            messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))
    finally:
        sock.settimeout(2)


def next_message(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096)
    return dict(line.split("=", 1) for line in data.decode().splitlines())


@pytest.mark.parametrize("fixture", ["listener", "abstract_listener"])
def test_ready_sends_ready_and_status(fixture, request):
    sock, address = request.getfixturevalue(fixture)
    with Notifier.from_environment({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"}) as notifier:
        assert notifier.enabled
        assert notifier.watchdog_interval == 1.0
        notifier.ready("watching 2 rigs")
        assert next_message(sock) == {"READY": "1", "STATUS": "watching 2 rigs"}


def test_each_message(listener):
    sock, address = listener
    with Notifier.from_environment({"NOTIFY_SOCKET": address}) as notifier:
        notifier.status("ingesting dl25 2018-02-25\nsecond line")
        assert next_message(sock) == {"STATUS": "ingesting dl25 2018-02-25 second line"}
        notifier.stopping()
        assert next_message(sock) == {"STOPPING": "1"}
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notifier.reloading()
        message = next_message(sock)
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert message["RELOADING"] == "1"
        assert before <= int(message["MONOTONIC_USEC"]) <= after
        notifier.reloaded()
        assert next_message(sock) == {"READY": "1"}


def test_watchdog_pings_once_per_interval(listener):
    sock, address = listener
    with Notifier.from_environment({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}) as notifier:
        assert notifier.watchdog_interval == pytest.approx(0.1)
        assert notifier.watchdog_due()
        pings = [notifier.maybe_ping_watchdog() for _ in range(50)]
        assert pings.count(True) == 1 and pings[0]
        assert not notifier.watchdog_due()
        assert received(sock) == [{"WATCHDOG": "1"}]

        time.sleep(notifier.watchdog_interval + 0.02)
        assert notifier.watchdog_due()
        assert notifier.maybe_ping_watchdog()
        assert not notifier.maybe_ping_watchdog()
        assert received(sock) == [{"WATCHDOG": "1"}]


def test_watchdog_of_another_process_is_not_ours(listener):
    sock, address = listener
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid() + 1)}
    with Notifier.from_environment(env) as notifier:
        assert notifier.watchdog_interval is None
        assert not notifier.watchdog_due()
        assert not notifier.maybe_ping_watchdog()
        notifier.watchdog()
        notifier.status("still here")  # the socket itself is ours to use
    assert received(sock) == [{"STATUS": "still here"}]


def test_watchdog_pid_of_this_process(listener):
    _, address = listener
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}
    with Notifier.from_environment(env) as notifier:
        assert notifier.watchdog_interval == pytest.approx(0.1)


def test_no_watchdog_without_watchdog_usec(listener):
    _, address = listener
    for env in ({"NOTIFY_SOCKET": address}, {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "0"},
                {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "soon"}):
        with Notifier.from_environment(env) as notifier:
            assert notifier.watchdog_interval is None
            assert not notifier.maybe_ping_watchdog()


def test_outside_systemd_everything_is_a_no_op(caplog):
    caplog.set_level(logging.DEBUG, logger="mapd.systemd")
    notifier = Notifier.from_environment({"WATCHDOG_USEC": "2000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert not notifier.watchdog_due()
    notifier.ready("up")
    notifier.status("x")
    notifier.watchdog()
    assert not notifier.maybe_ping_watchdog()
    notifier.reloading()
    notifier.reloaded()
    notifier.stopping()
    notifier.close()
    assert caplog.records == []


def test_missing_socket_warns_once_and_never_raises(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="mapd.systemd")
    missing = tmp_path / "gone" / "notify"
    with Notifier.from_environment({"NOTIFY_SOCKET": str(missing), "WATCHDOG_USEC": "200000"}) as notifier:
        notifier.ready("up")
        notifier.watchdog()
        notifier.status("still up")
        notifier.stopping()
    warnings = [r for r in caplog.records if r.name == "mapd.systemd" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(missing) in warnings[0].getMessage()


def test_socket_lost_and_back_warns_again(tmp_path, caplog):
    path = tmp_path / "notify"
    notifier = Notifier(str(path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        notifier.status("one")
        assert sock.recv(4096) == b"STATUS=one"
    path.unlink()
    notifier.status("lost")
    notifier.status("still lost")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))  # re-created at the same path: found again without a new Notifier
        notifier.status("back")
        assert sock.recv(4096) == b"STATUS=back"
    path.unlink()
    notifier.status("lost again")
    notifier.close()
    warnings = [r for r in caplog.records if r.name == "mapd.systemd" and r.levelno == logging.WARNING]
    assert len(warnings) == 2


def test_unset_removes_the_variables_for_child_processes(listener):
    _, address = listener
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid()), "OTHER": "x"}
    with Notifier.from_environment(env, unset=True) as notifier:
        assert notifier.enabled and notifier.watchdog_interval == 1.0
    assert env == {"OTHER": "x"}


def test_closed_notifier_is_a_no_op(listener):
    sock, address = listener
    notifier = Notifier(address)
    notifier.close()
    notifier.close()
    notifier.ready()
    assert received(sock) == []


# -- the unit file -----------------------------------------------------------------


class _MultiDict(dict):
    """configparser storage that keeps every value of a repeated key (systemd allows them)."""

    def __setitem__(self, key, value):
        if key in self and isinstance(value, list):
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Each section's keys, each with all of its values in order."""
    parser = configparser.RawConfigParser(strict=False, interpolation=None, dict_type=_MultiDict,
                                          delimiters=("=",), empty_lines_in_values=False)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    # configparser stores raw values as lists while reading and joins them with
    # newlines afterwards: split them back into one entry per occurrence.
    return {section: {key: value.split("\n") for key, value in parser.items(section, raw=True)}
            for section in parser.sections()}


@pytest.fixture(scope="module")
def unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit(UNIT)


def one(unit, section: str, key: str) -> str:
    values = unit[section].get(key)
    assert values, f"[{section}] {key}= missing"
    return values[-1]  # systemd: the last assignment wins


def test_parse_unit_keeps_repeated_keys(tmp_path):
    path = tmp_path / "x.service"
    path.write_text("[Service]\nEnvironment=A=1\nEnvironment=B=2\nCapabilityBoundingSet=\n")
    parsed = parse_unit(path)
    assert parsed["Service"]["Environment"] == ["A=1", "B=2"]
    assert parsed["Service"]["CapabilityBoundingSet"] == [""]


def test_unit_file(unit):
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "Restart": "on-failure",
        "User": "mapd",
        "Group": "mapd",
        "StateDirectory": "mapd",
        "LogsDirectory": "mapd",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "PrivateTmp": "yes",
        "ProtectHome": "read-only",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "UMask": "0027",
    }
    assert {key: one(unit, "Service", key) for key in expected} == expected
    assert float(one(unit, "Service", "WatchdogSec")) > 0
    assert "network-online.target" in one(unit, "Unit", "After").split()
    assert "network-online.target" in one(unit, "Unit", "Wants").split()
    assert "PYTHONUNBUFFERED=1" in unit["Service"]["Environment"]
    assert "MemoryDenyWriteExecute" not in unit["Service"]  # PostgreSQL's JIT needs it off
    writable = {path for line in unit["Service"].get("ReadWritePaths", []) for path in line.split()}
    assert writable <= {"/var/lib/mapd", "/var/log/mapd"}

    command = shlex.split(one(unit, "Service", "ExecStart"))
    assert Path(command[0]).name == "mapd"
    assert command[-1] == "run"
    assert "--config" in command


def test_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart exists: point it at a real executable; the
    # rest of the unit is checked as shipped.
    executable = shutil.which("mapd") or shutil.which("true")
    text = UNIT.read_text().replace("ExecStart=/usr/local/bin/mapd ", f"ExecStart={executable} ", 1)
    copy = tmp_path / "mapd.service"
    copy.write_text(text)
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=120)
    problems = [line for line in result.stderr.splitlines() if "mapd.service" in line]
    assert result.returncode == 0 and not problems, result.stderr
