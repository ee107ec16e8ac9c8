"""mapd.logview: rendering JSON log lines, and showing/following the log file like ``tail -F``."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from datetime import datetime
from pathlib import Path

import pytest

from mapd.logview import BLOCK, LogViewError, render, show

TIMESTAMP = "2026-11-24T05:50:17.653Z"  # as mapd writes it: UTC, milliseconds
SESSION_INGESTED = {
    "h2o": "dl25",
    "session_date": "2018-02-25",
    "rig": "RRig",
    "files": ["dl25_tw2_20180225_102508.mat"],
    "trials": 11,
    "rows": 177,
    "duration": 0.011,
    "subject_id": 407513,
    "session": 1,
    "event": "session ingested",
    "level": "info",
    "timestamp": TIMESTAMP,
}


def event(n: int, **fields: object) -> str:
    """One JSON log line (no newline), numbered so order and duplicates show."""
    return json.dumps({"n": n, **fields, "event": f"event {n}", "level": "info", "timestamp": TIMESTAMP})


def shown(n: int) -> str:
    return f"2026-11-24T05:50:17.653Z info     event {n}  n={n}"


def append(path: Path, *lines: str, end: str = "\n") -> None:
    with path.open("a", encoding="utf-8") as file:
        file.write("".join(line + end for line in lines))


# --- render ------------------------------------------------------------------


def test_render_session_ingested() -> None:
    assert render(json.dumps(SESSION_INGESTED) + "\n") == (
        "2026-11-24T05:50:17.653Z info     session ingested  "
        "rig=RRig h2o=dl25 session_date=2018-02-25 subject_id=407513 session=1 "
        "trials=11 rows=177 duration=0.011 files=dl25_tw2_20180225_102508.mat"
    )


def test_render_file_failed_quotes_values_with_spaces() -> None:
    line = {"file": "/mnt/rigs/x.mat", "rig": "RRig", "reason": "not a MAT-file", "event": "file failed", "level": "error", "timestamp": TIMESTAMP}
    assert render(json.dumps(line)) == "2026-11-24T05:50:17.653Z error    file failed  file=/mnt/rigs/x.mat rig=RRig reason='not a MAT-file'"


def test_render_known_keys_first_then_the_rest_sorted() -> None:
    line = {"zeta": 1, "error": "boom", "alpha": True, "file": "f", "extra": None, "event": "e"}
    assert render(json.dumps(line)) == "e  file=f error=boom alpha=true extra=null zeta=1"


def test_render_values() -> None:
    line = {
        "files": ["a.mat", "b c.mat", "d,e.mat"],
        "empty_list": [],
        "empty": "",
        "quote": "it's here",
        "multiline": "one\ntwo",
        "nested": {"k": [1, 2]},
        "event": "values",
    }
    assert render(json.dumps(line)) == (
        "values  empty=''"
        " empty_list=[]"
        " files=a.mat,'b c.mat','d,e.mat'"
        " multiline='one\\ntwo'"
        ' nested={"k":[1,2]}'
        ' quote="it\'s here"'
    )


def test_render_unicode() -> None:
    line = {"event": "übertragen", "h2o": "mäus", "note": "日本 語", "level": "warning", "timestamp": "2026-01-02T03:04:05+01:00"}
    for text in (json.dumps(line), json.dumps(line, ensure_ascii=False)):
        assert render(text) == "2026-01-02T02:04:05Z warning  übertragen  h2o=mäus note='日本 語'"  # in UTC


def test_render_old_timestamps_without_offset_as_local_time_in_utc(monkeypatch) -> None:
    monkeypatch.setenv("TZ", "Europe/Berlin")  # UTC+1 in November
    time.tzset()
    try:
        assert render(json.dumps({"timestamp": "2026-11-24T05:50:17.653958", "event": "e"})) == (
            "2026-11-24T04:50:17.653Z e")
    finally:
        monkeypatch.undo()
        time.tzset()


def test_mapd_writes_utc_timestamps_in_json_and_readable_lines() -> None:
    from mapd import logs

    before = time.time()
    for console in (False, True):
        stream = io.StringIO()
        logs.configure(stream=stream, console=console)
        try:
            logs.get_logger("test").info("hello", rig="RRig")
        finally:
            logs.configure()  # as the test session had it
        line = stream.getvalue()
        stamp = json.loads(line)["timestamp"] if not console else line.split()[0]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), line
        assert abs(datetime.fromisoformat(stamp).timestamp() - before) < 60


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ({}, ""),
        ({"event": "only an event"}, "only an event"),
        ({"level": "info"}, "info"),
        ({"rig": "RRig"}, "rig=RRig"),
        ({"timestamp": "yesterday", "event": "e"}, "yesterday e"),
        ({"timestamp": 0.0, "event": "e"}, "1970-01-01T00:00:00Z e"),
        ({"timestamp": None, "level": None, "event": None}, "null null     null"),
        ({"timestamp": 1e300, "level": ["x"], "event": {"a": 1}}, '1e+300 x        {"a":1}'),
        ({"event": "two\nlines", "level": "info"}, "info     two\\nlines"),
    ],
)
def test_render_missing_and_odd_keys(line: dict, expected: str) -> None:
    assert render(json.dumps(line)) == expected


@pytest.mark.parametrize(
    "line",
    [
        "plain text from another program",
        "",
        "[1, 2, 3]",
        '"a JSON string"',
        "42",
        "null",
        '{"event": "a write in progr',
        "{not json}",
        "[" * 100_000,  # nesting deep enough to exhaust the parser's recursion
        "\x00\x01 binary \udcff",
        "ünïcödé ☃",
    ],
)
def test_render_returns_other_lines_unchanged(line: str) -> None:
    assert render(line + "\n") == line
    assert render(line + "\r\n") == line


# --- show, without following --------------------------------------------------


def test_show_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "mapd.log"
    append(path, *(event(n) for n in range(10)))
    append(path, "not JSON")
    out = io.StringIO()
    show(path, out, lines=3)
    assert out.getvalue().splitlines() == [shown(8), shown(9), "not JSON"]


@pytest.mark.parametrize(("lines", "expected"), [(None, 5), (50, 5), (5, 5), (1, 1), (0, 0)])
def test_show_counts(tmp_path: Path, lines: int | None, expected: int) -> None:
    path = tmp_path / "mapd.log"
    append(path, *(event(n) for n in range(5)))
    out = io.StringIO()
    show(path, out, lines=lines)
    assert out.getvalue().splitlines() == [shown(n) for n in range(5 - expected, 5)]


def test_show_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "mapd.log"
    path.touch()
    out = io.StringIO()
    show(path, out)
    assert out.getvalue() == ""


def test_show_without_follow_prints_a_partial_last_line(tmp_path: Path) -> None:
    path = tmp_path / "mapd.log"
    append(path, event(1), event(2))
    append(path, '{"event": "half', end="")
    out = io.StringIO()
    show(path, out, lines=2)
    assert out.getvalue().splitlines() == [shown(2), '{"event": "half']


def test_show_tail_of_a_large_file_reads_only_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "mapd.log"
    filler = (event(-1) + "\n").encode()
    with path.open("wb") as file:
        chunk = filler * (1024 * 1024 // len(filler))
        while file.tell() < 50 * 1024 * 1024:
            file.write(chunk)
        file.write("".join(event(n) + "\n" for n in range(6000)).encode())
    wanted = 4000  # several blocks back from the end
    assert wanted * len(filler) > 4 * BLOCK
    out = io.StringIO()
    tracemalloc.start()
    try:
        show(path, out, lines=wanted)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.getvalue().splitlines() == [shown(n) for n in range(2000, 6000)]
    # The output alone is ~100 kB; reading the whole file would cost 50 MB.
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes"


def test_show_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "mapd.log"
    with pytest.raises(LogViewError, match="no log file") as raised:
        show(path, io.StringIO())
    assert str(path) in str(raised.value)
    assert "logging.file" in str(raised.value)


def test_show_a_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(LogViewError, match=str(tmp_path)):
        show(tmp_path, io.StringIO())


# --- show, following ----------------------------------------------------------


class Follower:
    """show(follow=True) in a thread, polling fast; counts its cycles through ``stop``."""

    def __init__(self, path: Path, lines: int | None = 50) -> None:
        self.out = io.StringIO()
        self.cycles = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(path, lines), daemon=True)
        self._thread.start()

    def _stop_requested(self) -> bool:
        self.cycles += 1
        return self._stop.is_set()

    def _run(self, path: Path, lines: int | None) -> None:
        try:
            show(path, self.out, follow=True, lines=lines, poll_seconds=0.005, stop=self._stop_requested)
        except BaseException as error:  # reported by the test thread
            self.error = error

    def lines(self) -> list[str]:
        return self.out.getvalue().splitlines()

    def _wait(self, done, what: str, timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if self.error is not None:
                raise self.error
            assert time.monotonic() < deadline, f"timed out waiting for {what}; shown: {self.lines()}"
            time.sleep(0.002)

    def wait_for(self, count: int) -> list[str]:
        self._wait(lambda: len(self.lines()) >= count, f"{count} lines")
        return self.lines()

    def settle(self, cycles: int = 3) -> None:
        """Let at least ``cycles - 1`` whole poll cycles run."""
        start = self.cycles
        self._wait(lambda: self.cycles >= start + cycles, f"{cycles} cycles")

    def close(self) -> list[str]:
        self._stop.set()
        self._thread.join(3)
        assert not self._thread.is_alive(), "show() did not stop"
        if self.error is not None:
            raise self.error
        return self.lines()


@pytest.fixture
def follow():
    followers: list[Follower] = []

    def start(path: Path, lines: int | None = 50) -> Follower:
        followers.append(Follower(path, lines))
        return followers[-1]

    yield start
    for follower in followers:
        follower._stop.set()


def test_follow_shows_appended_lines(tmp_path: Path, follow) -> None:
    path = tmp_path / "mapd.log"
    append(path, *(event(n) for n in range(5)))
    follower = follow(path, lines=2)
    assert follower.wait_for(2) == [shown(3), shown(4)]
    append(path, event(5))
    follower.wait_for(3)
    append(path, event(6), event(7))
    follower.wait_for(5)
    assert follower.close() == [shown(n) for n in range(3, 8)]


def test_follow_shows_what_was_written_before_stop(tmp_path: Path) -> None:
    path = tmp_path / "mapd.log"
    path.touch()
    calls = 0

    def stop() -> bool:
        nonlocal calls
        calls += 1
        if calls == 2:
            append(path, event(1))  # written as stop is asked: must still be shown
        return calls >= 2

    out = io.StringIO()
    show(path, out, follow=True, poll_seconds=0.001, stop=stop)
    assert out.getvalue().splitlines() == [shown(1)]


def test_follow_waits_for_the_end_of_a_partial_line(tmp_path: Path, follow) -> None:
    path = tmp_path / "mapd.log"
    append(path, event(1))
    line = event(2)
    append(path, line[:10], end="")  # a partial line at start
    follower = follow(path)
    follower.wait_for(1)
    append(path, line[10:20], end="")
    follower.settle()
    assert follower.lines() == [shown(1)]
    append(path, line[20:])
    follower.wait_for(2)
    append(path, event(3))
    follower.wait_for(3)
    assert follower.close() == [shown(1), shown(2), shown(3)]


def test_follow_across_rotation(tmp_path: Path, follow) -> None:
    path = tmp_path / "mapd.log"
    append(path, event(1), event(2))
    follower = follow(path)
    follower.wait_for(2)
    with path.open("a", encoding="utf-8") as writer:  # a writer holding the file open
        writer.write(event(3) + "\n")
        writer.flush()
        follower.wait_for(3)
        path.rename(tmp_path / "mapd.log.1")  # logrotate moves the file away...
        writer.write(event(4) + "\n")  # ...the writer still appends to it...
        writer.flush()
        follower.settle()  # ...and for a while there is no file at the path
    append(path, event(5), event(6))  # the writer reopens the path: a new file
    follower.wait_for(6)
    append(path, event(7))
    follower.wait_for(7)
    assert follower.close() == [shown(n) for n in range(1, 8)]


def test_follow_finishes_the_old_file_before_the_new_one(tmp_path: Path) -> None:
    path = tmp_path / "mapd.log"
    append(path, event(1))
    calls = 0

    def stop() -> bool:
        # Runs between two polls, in the viewer's thread: rotate and write both files there.
        nonlocal calls
        calls += 1
        if calls == 2:
            with path.open("a", encoding="utf-8") as writer:
                path.rename(tmp_path / "mapd.log.1")
                append(path, event(4))
                writer.write(event(2) + "\n" + event(3)[:10])  # ending with a partial line
        return calls >= 3

    out = io.StringIO()
    show(path, out, follow=True, poll_seconds=0.001, stop=stop)
    # The old file will not be completed any more: its partial line is shown as it is.
    assert out.getvalue().splitlines() == [shown(1), shown(2), event(3)[:10], shown(4)]


def test_follow_after_truncation(tmp_path: Path, follow) -> None:
    path = tmp_path / "mapd.log"
    append(path, event(1, padding="x" * 100), event(2, padding="x" * 100))
    follower = follow(path)
    follower.wait_for(2)
    os.truncate(path, 0)  # copytruncate: same file, emptied
    follower.settle()
    append(path, event(3))
    follower.wait_for(3)
    append(path, event(4))
    follower.wait_for(4)
    lines = follower.close()
    assert lines[2:] == [shown(3), shown(4)]


def test_follow_a_file_that_appears_later(tmp_path: Path, follow) -> None:
    path = tmp_path / "logs" / "mapd.log"
    follower = follow(path, lines=1)
    follower.settle()
    assert follower.lines() == []
    path.parent.mkdir()
    # A new file is shown from its start, whatever ``lines`` asked of the first one.
    append(path, event(1), event(2), event(3))
    follower.wait_for(3)
    append(path, event(4))
    follower.wait_for(4)
    assert follower.close() == [shown(n) for n in range(1, 5)]


def test_follow_lets_keyboard_interrupt_through(tmp_path: Path) -> None:
    path = tmp_path / "mapd.log"
    append(path, event(1))

    def interrupted() -> bool:
        raise KeyboardInterrupt

    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        show(path, out, follow=True, poll_seconds=0.001, stop=interrupted)
    assert out.getvalue().splitlines() == [shown(1)]


WRITER = textwrap.dedent(
    """
    import io, os, sys
    from pathlib import Path
    from mapd import logs
    from mapd.config import LoggingConfig

    path = Path(sys.argv[1])
    logs.configure(LoggingConfig(file=path), stream=io.StringIO(), console=False)
    log = logs.get_logger()
    for n in range(3):
        log.info(f"event {n}", n=n)
    sys.stdin.readline()  # until the viewer has seen them
    os.rename(path, path.with_name(path.name + ".1"))  # as logrotate does
    for n in range(3, 6):
        log.info(f"event {n}", n=n)  # WatchedFileHandler reopens the path
    """
)


def test_follow_mapds_own_log_file_across_rotation(tmp_path: Path, follow) -> None:
    path = tmp_path / "mapd.log"
    follower = follow(path)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdin=subprocess.PIPE, text=True)
    try:
        follower.wait_for(3)
        writer.communicate("go\n", timeout=10)
        assert writer.returncode == 0
        follower.wait_for(6)
    finally:
        writer.kill()
    lines = follower.close()
    assert len(lines) == 6
    for n, line in enumerate(lines):
        assert re.fullmatch(rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z info     event {n}  n={n}", line), line
    assert (tmp_path / "mapd.log.1").exists()
