"""Globus API calls and tasks per archived session: mapd's transport against the original's.

The original MAP pipeline started one transfer task per file and polled each
one: a session of N files cost N tasks and at least N x (submit + poll) calls.
mapd sends one task per session. Globus is mocked (``responses``), so this
counts requests, it does not time them:

    python bench/globus_calls.py [--files 1 10 100 1000] [--polls 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import responses
from responses import matchers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the worktree's mapd

from globus_sdk.transport import RetryConfig  # noqa: E402

from mapd.archive.globus import GlobusTransport, token_path  # noqa: E402
from mapd.archive.transport import ArchiveItem, Batch  # noqa: E402
from mapd.config import GlobusArchiveConfig  # noqa: E402

TRANSFER = "https://transfer.api.globus.org/v0.10"
SOURCE, DESTINATION = "5a1e0000-0000-4000-8000-000000000001", "de570000-0000-4000-8000-000000000002"
TASK_ID = "7a5c0000-0000-4000-8000-000000000003"
IDENTITY = "1de00000-0000-4000-8000-000000000004"


@dataclass(frozen=True)
class SessionCalls:
    files: int
    api_calls: int  # HTTP requests to Globus: submit, polls, verify (task, transfers, one ls per directory)
    tasks: int  # transfer tasks created


def count_calls(mock: responses.RequestsMock) -> dict[str, int]:
    """Requests made through ``mock`` by kind ("POST /transfer", "GET /task/{id}", ...)."""
    kinds: dict[str, int] = {}
    for call in mock.calls:
        path = call.request.path_url.split("?")[0].replace(TASK_ID, "{id}").replace(DESTINATION, "{endpoint}")
        key = f"{call.request.method} {path.removeprefix('/v0.10')}"
        kinds[key] = kinds.get(key, 0) + 1
    return kinds


def write_tokens(state_dir: Path, access_token: str = "bench-access-token") -> Path:
    """A token file as `mapd globus login` leaves it (transfer + auth, refreshable)."""
    expires = int(time.time()) + 3600
    data = {
        resource_server: {
            "resource_server": resource_server, "identity_id": IDENTITY, "scope": scope,
            "access_token": access_token, "refresh_token": f"{access_token}-refresh",
            "expires_at_seconds": expires, "token_type": "Bearer",
        }
        for resource_server, scope in (
            ("transfer.api.globus.org", "urn:globus:auth:scope:transfer.api.globus.org:all"),
            ("auth.globus.org", "openid"),
        )
    }
    path = token_path(state_dir)
    path.write_text(json.dumps({"globus-sdk.version": "4.9.1", "format_version": "2.0", "data": {"DEFAULT": data}}))
    path.chmod(0o600)
    return path


def session_batch(root: Path, files: int) -> Batch:
    items = tuple(
        ArchiveItem(root / "dl25" / f"probe{i % 2}" / f"f{i:05d}.bin",
                    f"dl25/2019-07-10/ephys/probe{i % 2}/f{i:05d}.bin", 1000 + i, f"{i:064x}")
        for i in range(files)
    )
    return Batch("b1", "dl25 2019-07-10 ephys", items, submission_id="5b000000-0000-4000-8000-000000000005")


def mock_session(mock: responses.RequestsMock, batch: Batch, root: str, polls: int = 1) -> None:
    """Globus as it answers a successful session: accepted, ``polls - 1`` ACTIVE polls, then SUCCEEDED."""
    mock.add("POST", f"{TRANSFER}/transfer", json={"code": "Accepted", "task_id": TASK_ID}, status=202)
    for _ in range(polls - 1):
        mock.add("GET", f"{TRANSFER}/task/{TASK_ID}",
                 json={"task_id": TASK_ID, "status": "ACTIVE", "nice_status": "OK"})
    succeeded = {"task_id": TASK_ID, "status": "SUCCEEDED", "faults": 0, "verify_checksum": True, "files_skipped": 0}
    mock.add("GET", f"{TRANSFER}/task/{TASK_ID}", json=succeeded)  # the last poll, and verify's look
    done = [{"DATA_TYPE": "successful_transfer", "destination_path": f"{root}/{item.destination}"}
            for item in batch.items]
    mock.add("GET", f"{TRANSFER}/task/{TASK_ID}/successful_transfers", json={"DATA": done, "next_marker": None})
    by_directory: dict[str, list[dict]] = {}
    for item in batch.items:
        directory, name = f"{root}/{item.destination}".rsplit("/", 1)
        by_directory.setdefault(directory, []).append({"name": name, "type": "file", "size": item.size})
    for directory, entries in by_directory.items():
        mock.add("GET", f"{TRANSFER}/operation/endpoint/{DESTINATION}/ls", json={"DATA": entries},
                 match=[matchers.query_param_matcher({"path": directory}, strict_match=False)])


def session_calls(files: int, polls: int = 1) -> SessionCalls:
    """Archive one session of ``files`` files through the mocked API; what it cost."""
    with tempfile.TemporaryDirectory() as tmp, responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        state, data = Path(tmp) / "state", Path(tmp) / "data"
        state.mkdir()
        write_tokens(state)
        config = GlobusArchiveConfig(
            source_endpoint=SOURCE, source_paths={data: "/rigdata"}, destination_endpoint=DESTINATION,
            destination_path="/archive", login_client_id="0a7e0000-0000-4000-8000-000000000006",
        )
        transport = GlobusTransport(config, state, retry_config=RetryConfig(max_retries=0))
        batch = session_batch(data, files)
        mock_session(mock, batch, transport.root, polls)
        task_id = transport.submit(batch)
        while transport.poll(task_id).state == "active":
            pass
        copies = transport.verify(task_id, batch)
        assert len(copies) == files
        kinds = count_calls(mock)
        return SessionCalls(files, sum(kinds.values()), kinds.get("POST /transfer", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--polls", type=int, default=1, help="polls until the task is done (per task)")
    args = parser.parse_args()
    print(f"{'files':>6} | {'mapd tasks':>10} {'mapd calls':>10} | {'original tasks':>14} {'original calls':>14}")
    for files in args.files:
        ours = session_calls(files, args.polls)
        # The original: per file one submit and at least `polls` polls (its submission ids came with the submit).
        print(f"{files:>6} | {ours.tasks:>10} {ours.api_calls:>10} | {files:>14} {files * (1 + args.polls):>14}")


if __name__ == "__main__":
    main()
