"""The Globus archive transport and `mapd globus login`, against a mocked Globus API (no network, no retries)."""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import logging
import stat
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import jwt
import pytest
import requests
import responses
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from globus_sdk import TransferClient
from globus_sdk.testing import RegisteredResponse, load_response
from globus_sdk.transport import RetryConfig
from pydantic import SecretStr
from responses import matchers

from bench.globus_calls import (
    DESTINATION, SOURCE, TASK_ID, count_calls, mock_session, session_batch, session_calls, write_tokens,
)
from mapd.archive.globus import GlobusTransport, task_status, token_path
from mapd.archive.commands import add_globus_commands
from mapd.cli import _command
from mapd.archive.globus_login import LoginError, login
from mapd.archive.transport import ArchiveItem, Batch, TransportError
from mapd.config import GlobusArchiveConfig

TRANSFER = "https://transfer.api.globus.org/v0.10"
AUTH = "https://auth.globus.org"
NATIVE_CLIENT = "0a7e0000-0000-4000-8000-000000000006"
ACCESS_TOKEN = "AgUSERaccessTOKENxyz123"
CLIENT_SECRET = "s3cr3t-CLIENT-secret-value"
CLIENT_TOKEN = "AgCLIENTaccessTOKENabc789"
SUBMISSION = "5b000000-0000-4000-8000-000000000005"


@pytest.fixture
def api():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def data(tmp_path) -> Path:
    return tmp_path / "data"


def make_config(data: Path, **extra) -> GlobusArchiveConfig:
    return GlobusArchiveConfig(
        source_endpoint=SOURCE,
        # The nested prefix lives elsewhere on the endpoint: the longest prefix must win.
        source_paths={data: "/rigdata", data / "dl25" / "probe1": "/fast/probe1"},
        destination_endpoint=DESTINATION, destination_path="/archive/", login_client_id=NATIVE_CLIENT, **extra,
    )


@pytest.fixture
def transport(tmp_path, data) -> GlobusTransport:
    state = tmp_path / "state"
    state.mkdir()
    write_tokens(state, ACCESS_TOKEN)
    return GlobusTransport(make_config(data), state, retry_config=RetryConfig(max_retries=0))


def body(call) -> dict:
    return json.loads(call.request.body)


def posts(api) -> list:
    return [call for call in api.calls if call.request.method == "POST" and call.request.url.endswith("/transfer")]


def add_task(api, **task) -> None:
    api.add("GET", f"{TRANSFER}/task/{TASK_ID}", json={"DATA_TYPE": "task", "task_id": TASK_ID, **task})


# -- submit, poll, verify ------------------------------------------------------------


def test_a_session_is_one_task_submitted_polled_and_verified(api, transport, data):
    batch = session_batch(data, 40)
    mock_session(api, batch, transport.root)
    task_id = transport.submit(batch)
    assert task_id == TASK_ID
    assert transport.poll(task_id).state == "succeeded"
    copies = transport.verify(task_id, batch)
    expected = [(item.destination, item.size, item.sha256) for item in batch.items]
    assert [(copy.destination, copy.size, copy.sha256) for copy in copies] == expected

    # One task for the 40 files (the original: 40), and one listing per directory.
    assert len(posts(api)) == 1
    assert count_calls(api) == {"POST /transfer": 1, "GET /task/{id}": 2, "GET /task/{id}/successful_transfers": 1,
                                "GET /operation/endpoint/{endpoint}/ls": 2}
    document = body(posts(api)[0])
    assert (document["source_endpoint"], document["destination_endpoint"]) == (SOURCE, DESTINATION)
    assert document["submission_id"] == batch.submission_id and document["label"] == batch.label
    assert document["sync_level"] == 3 and document["verify_checksum"] is True
    first, second = document["DATA"][0], document["DATA"][1]
    assert first["source_path"] == "/rigdata/dl25/probe0/f00000.bin"
    assert second["source_path"] == "/fast/probe1/f00001.bin"  # the longest prefix
    assert first["destination_path"] == "/archive/dl25/2019-07-10/ephys/probe0/f00000.bin"
    assert (first["external_checksum"], first["checksum_algorithm"]) == (batch.items[0].sha256, "SHA256")
    # The person's token from `mapd globus login` authorised the calls.
    assert all(call.request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}" for call in api.calls)


def test_api_calls_per_session_do_not_grow_with_its_files():
    small, large = session_calls(3), session_calls(300)
    assert (small.tasks, large.tasks) == (1, 1)
    assert small.api_calls == large.api_calls == 6  # submit, poll, task + successful_transfers + 2 listings


def test_successful_transfers_are_read_across_pages(api, transport, data):
    batch = session_batch(data, 4)
    done = [{"destination_path": f"/archive/{item.destination}"} for item in batch.items]
    url = f"{TRANSFER}/task/{TASK_ID}/successful_transfers"
    api.add("GET", url, json={"DATA": done[2:], "next_marker": None},
            match=[matchers.query_param_matcher({"marker": "m2"})])
    api.add("GET", url, json={"DATA": done[:2], "next_marker": "m2"})
    add_task(api, status="SUCCEEDED", verify_checksum=True)
    add_listings(api, batch)
    assert len(transport.verify(TASK_ID, batch)) == 4


def add_listings(api, batch: Batch, sizes: dict[str, int] | None = None, leave_out: str = "") -> None:
    by_directory: dict[str, list] = {}
    for item in batch.items:
        directory, name = f"/archive/{item.destination}".rsplit("/", 1)
        if item.destination != leave_out:
            size = (sizes or {}).get(item.destination, item.size)
            by_directory.setdefault(directory, []).append({"name": name, "type": "file", "size": size})
    for directory, entries in by_directory.items():
        api.add("GET", f"{TRANSFER}/operation/endpoint/{DESTINATION}/ls", json={"DATA": entries},
                match=[matchers.query_param_matcher({"path": directory}, strict_match=False)])


def test_failed_task_says_why(api, transport):
    add_task(api, status="FAILED", fatal_error={"code": "PERMISSION_DENIED", "description": "Permission denied"})
    status = transport.poll(TASK_ID)
    assert status.state == "failed"
    assert status.problem == f"Globus task {TASK_ID} failed: PERMISSION_DENIED: Permission denied"


@pytest.mark.parametrize(
    "task, words",
    [
        ({"status": "INACTIVE", "nice_status": "CREDENTIALS_EXPIRED"},
         ["inactive", "CREDENTIALS_EXPIRED", "mapd globus login"]),
        ({"status": "ACTIVE", "is_paused": True, "nice_status": "PAUSED_BY_ADMIN"}, ["paused", "PAUSED_BY_ADMIN"]),
        ({"status": "ACTIVE", "nice_status": "PAUSED_BY_PAUSE_RULE"}, ["paused", "PAUSED_BY_PAUSE_RULE"]),
        ({"status": "ACTIVE", "nice_status": "CONNECT_FAILED", "nice_status_short_description": "connection failed"},
         ["retrying", "CONNECT_FAILED: connection failed"]),
    ],
)
def test_a_stuck_task_is_active_with_the_reason(api, transport, task, words):
    add_task(api, **task)
    status = transport.poll(TASK_ID)
    assert status.state == "active"
    assert all(word in status.problem for word in words), status.problem


def test_a_task_in_progress_is_active_without_problem(api, transport):
    add_task(api, status="ACTIVE", nice_status="Queued")
    assert transport.poll(TASK_ID) == task_status({"status": "ACTIVE", "nice_status": "OK"})
    assert transport.poll(TASK_ID).problem == ""


def test_skipped_files_fail_the_batch_but_retried_faults_do_not():
    skipped = task_status({"task_id": "t", "status": "SUCCEEDED", "subtasks_skipped_errors": 2, "faults": 0})
    assert skipped.state == "failed" and "skipped 2 file(s)" in skipped.problem
    # Faults are errors Globus retried: each file was still checksummed, and verify checks each one.
    assert task_status({"task_id": "t", "status": "SUCCEEDED", "faults": 3}).state == "succeeded"


def test_verify_names_a_missing_file_and_a_different_size(api, transport, data):
    batch = session_batch(data, 3)
    gone, short = batch.items[0].destination, batch.items[2].destination
    transferred = [{"destination_path": f"/archive/{item.destination}"} for item in batch.items[1:]]
    api.add("GET", f"{TRANSFER}/task/{TASK_ID}/successful_transfers", json={"DATA": transferred, "next_marker": None})
    add_task(api, status="SUCCEEDED", files_skipped=0, verify_checksum=True)
    add_listings(api, batch, sizes={short: 7}, leave_out=gone)
    with pytest.raises(TransportError) as raised:
        transport.verify(TASK_ID, batch)
    message = str(raised.value)
    assert raised.value.retry is False
    assert f"/archive/{gone} was not transferred" in message
    assert f"/archive/{gone} is missing from the archive" in message
    assert f"/archive/{short} has 7 bytes, {batch.items[2].source} had {batch.items[2].size}" in message


def test_verify_refuses_a_task_that_did_not_compare_checksums(api, transport, data):
    batch = session_batch(data, 1)
    done = [{"destination_path": f"/archive/{batch.items[0].destination}"}]
    api.add("GET", f"{TRANSFER}/task/{TASK_ID}/successful_transfers", json={"DATA": done, "next_marker": None})
    add_task(api, status="SUCCEEDED", verify_checksum=False)
    add_listings(api, batch)
    with pytest.raises(TransportError, match="the task is SUCCEEDED with verify_checksum=False"):
        transport.verify(TASK_ID, batch)


def test_verify_reports_the_files_of_a_missing_directory(api, transport, data):
    batch = session_batch(data, 2)
    done = [{"destination_path": f"/archive/{item.destination}"} for item in batch.items]
    api.add("GET", f"{TRANSFER}/task/{TASK_ID}/successful_transfers", json={"DATA": done, "next_marker": None})
    add_task(api, status="SUCCEEDED", verify_checksum=True)
    api.add("GET", f"{TRANSFER}/operation/endpoint/{DESTINATION}/ls", status=404,
            json={"code": "ClientError.NotFound", "message": "Directory not found"})
    with pytest.raises(TransportError) as raised:
        transport.verify(TASK_ID, batch)
    assert all(f"/archive/{item.destination} is missing from the archive" in str(raised.value) for item in batch.items)


def test_a_file_already_in_sync_needs_no_transfer(api, transport, data):
    # A resubmitted batch: Globus found the copy identical by checksum and skipped it.
    batch = session_batch(data, 2)
    transferred = [{"destination_path": f"/archive/{batch.items[1].destination}"}]
    api.add("GET", f"{TRANSFER}/task/{TASK_ID}/successful_transfers", json={"DATA": transferred, "next_marker": None})
    add_task(api, status="SUCCEEDED", files_skipped=1, verify_checksum=True)
    add_listings(api, batch)
    assert len(transport.verify(TASK_ID, batch)) == 2


# -- repeating a submit ------------------------------------------------------------------


def test_a_resubmit_answered_409_conflict_returns_the_first_task(api, transport, data):
    batch = session_batch(data, 5)
    api.add("POST", f"{TRANSFER}/transfer", json={"code": "Accepted", "task_id": TASK_ID}, status=202)
    api.add("POST", f"{TRANSFER}/transfer", status=409,
            json={"code": "ClientError.Conflict", "message": "A task with this submission id already exists"})
    api.add("GET", f"{TRANSFER}/task_list",
            json={"DATA": [{"task_id": TASK_ID, "label": batch.label, "destination_endpoint_id": DESTINATION}]},
            match=[matchers.query_param_matcher({"filter": f"label:{batch.label}/type:TRANSFER"}, strict_match=False)])
    assert transport.submit(batch) == TASK_ID
    assert transport.submit(batch) == TASK_ID
    assert [body(call)["submission_id"] for call in posts(api)] == [batch.submission_id] * 2
    assert [call.response.status_code for call in posts(api)].count(202) == 1  # one task was created


def test_a_resubmit_answered_duplicate_returns_the_first_task(api, transport, data):
    batch = session_batch(data, 2)
    api.add("POST", f"{TRANSFER}/transfer", json={"code": "Accepted", "task_id": TASK_ID}, status=202)
    api.add("POST", f"{TRANSFER}/transfer", json={"code": "Duplicate", "task_id": TASK_ID}, status=200)
    assert [transport.submit(batch), transport.submit(batch)] == [TASK_ID, TASK_ID]


def test_a_409_whose_task_cannot_be_told_apart_is_an_error(api, transport, data):
    batch = session_batch(data, 2)
    api.add("POST", f"{TRANSFER}/transfer", status=409, json={"code": "ClientError.Conflict", "message": "used"})
    api.add("GET", f"{TRANSFER}/task_list", json={"DATA": [{"task_id": "a"}, {"task_id": "b"}]})
    with pytest.raises(TransportError, match=f"submission id {batch.submission_id} .* 2 tasks carry that label"):
        transport.submit(batch)


def test_a_503_is_retried_later_with_the_same_submission_id(api, transport, data):
    batch = session_batch(data, 3)
    api.add("POST", f"{TRANSFER}/transfer", status=503, json={"code": "ServiceUnavailable", "message": "maintenance"})
    api.add("POST", f"{TRANSFER}/transfer", json={"code": "Accepted", "task_id": TASK_ID}, status=202)
    with pytest.raises(TransportError) as raised:
        transport.submit(batch)
    assert raised.value.retry is True and "503 ServiceUnavailable: maintenance" in str(raised.value)
    assert transport.submit(batch) == TASK_ID
    first, second = posts(api)
    assert body(first)["submission_id"] == body(second)["submission_id"] == batch.submission_id
    assert body(first) == body(second)


def test_a_network_error_is_retried_later(api, transport):
    api.add("GET", f"{TRANSFER}/task/{TASK_ID}", body=requests.ConnectionError("connection refused"))
    with pytest.raises(TransportError, match=f"polling task {TASK_ID}: cannot reach Globus") as raised:
        transport.poll(TASK_ID)
    assert raised.value.retry is True


def test_new_submission_id_comes_from_globus(api, transport):
    expected = load_response(TransferClient.get_submission_id, requests_mock=api).metadata["submission_id"]
    assert transport.new_submission_id() == expected


# -- authorisation ---------------------------------------------------------------------


def test_consent_required_says_to_log_in(api, transport, data):
    scope = f"urn:globus:auth:scope:transfer.api.globus.org:all[*https://auth.globus.org/scopes/{SOURCE}/data_access]"
    api.add("POST", f"{TRANSFER}/transfer", status=403,
            json={"code": "ConsentRequired", "message": "Missing required data_access consent",
                  "required_scopes": [scope]})
    with pytest.raises(TransportError) as raised:
        transport.submit(session_batch(data, 1))
    assert raised.value.retry is False
    assert str(raised.value) == (
        f"submitting the transfer of 'dl25 2019-07-10 ephys': Globus needs consent for {scope}: "
        "run `mapd globus login` on this host"
    )


def test_rejected_credentials_are_not_retried(api, transport):
    api.add("GET", f"{TRANSFER}/task/{TASK_ID}", status=401,
            json={"code": "AuthenticationFailed", "message": "Token is not active"})
    expected = "refused mapd's credentials .*401 AuthenticationFailed.*mapd globus login"
    with pytest.raises(TransportError, match=expected) as raised:
        transport.poll(TASK_ID)
    assert raised.value.retry is False


def test_an_expired_login_that_cannot_be_refreshed_says_to_log_in_again(api, tmp_path, data):
    write_tokens(tmp_path, ACCESS_TOKEN)
    tokens = json.loads(token_path(tmp_path).read_text())
    tokens["data"]["DEFAULT"]["transfer.api.globus.org"]["expires_at_seconds"] = int(time.time()) - 60
    token_path(tmp_path).write_text(json.dumps(tokens))
    api.add("POST", f"{AUTH}/v2/oauth2/token", status=400, json={"error": "invalid_grant"})
    transport = GlobusTransport(make_config(data), tmp_path, retry_config=RetryConfig(max_retries=0))
    with pytest.raises(TransportError, match="refused mapd's credentials .*invalid_grant.*mapd globus login") as raised:
        transport.poll(TASK_ID)
    assert raised.value.retry is False
    assert parse_qs(api.calls[0].request.body)["refresh_token"] == [f"{ACCESS_TOKEN}-refresh"]  # it did try


def test_without_tokens_nothing_is_sent(api, tmp_path, data):
    transport = GlobusTransport(make_config(data), tmp_path, retry_config=RetryConfig(max_retries=0))
    with pytest.raises(TransportError, match=r"not logged in to Globus: run `mapd globus login`") as raised:
        transport.poll(TASK_ID)
    assert raised.value.retry is False and not api.calls


def test_a_file_outside_the_source_paths_is_named(api, transport, tmp_path):
    item = ArchiveItem(tmp_path / "elsewhere" / "x.mat", "dl25/2019-07-10/behavior/x.mat", 1, "0" * 64)
    with pytest.raises(TransportError, match=f"{tmp_path / 'elsewhere' / 'x.mat'} is not under any") as raised:
        transport.submit(Batch("b", "l", (item,), SUBMISSION))
    assert raised.value.retry is False and not api.calls


def test_secrets_never_appear_in_errors_reprs_or_logs(api, tmp_path, data, caplog):
    caplog.set_level(logging.DEBUG)
    config = make_config(data, client_id="c11e0000-0000-4000-8000-000000000007", client_secret=SecretStr(CLIENT_SECRET))
    transport = GlobusTransport(config, tmp_path, retry_config=RetryConfig(max_retries=0))
    api.add("POST", f"{AUTH}/v2/oauth2/token", json={
        "access_token": CLIENT_TOKEN, "scope": "urn:globus:auth:scope:transfer.api.globus.org:all",
        "expires_in": 172800, "token_type": "Bearer", "resource_server": "transfer.api.globus.org", "other_tokens": [],
    })
    api.add("POST", f"{TRANSFER}/transfer", status=403, json={"code": "ConsentRequired", "message": "consent",
                                                            "required_scopes": ["urn:x"]})
    api.add("GET", f"{TRANSFER}/task/{TASK_ID}", status=500, json={"code": "ServerError", "message": "oops"})
    errors = []
    for call in (lambda: transport.submit(session_batch(data, 1)), lambda: transport.poll(TASK_ID)):
        with pytest.raises(TransportError) as raised:
            call()
        errors.append(raised.value)
    assert "list the collection in archive.globus.data_access_collections" in str(errors[0])
    assert errors[1].retry is True
    # They were used: the secret to get the token, the token on the transfer calls.
    token_request, *transfer_requests = api.calls
    basic = base64.b64encode(f"{config.client_id}:{CLIENT_SECRET}".encode()).decode()
    assert token_request.request.headers["Authorization"] == f"Basic {basic}"
    assert all(call.request.headers["Authorization"] == f"Bearer {CLIENT_TOKEN}" for call in transfer_requests)
    seen = " ".join([*(str(e) for e in errors), *(repr(e) for e in errors), repr(transport), caplog.text])
    for secret in (CLIENT_SECRET, CLIENT_TOKEN, basic, "Authorization"):
        assert secret not in seen
    assert "client" in repr(transport) and DESTINATION in repr(transport)


def test_user_tokens_never_appear_in_errors_or_logs(api, transport, caplog):
    caplog.set_level(logging.DEBUG)
    api.add("GET", f"{TRANSFER}/task/{TASK_ID}", status=403, json={"code": "PermissionDenied", "message": "no"})
    with pytest.raises(TransportError) as raised:
        transport.poll(TASK_ID)
    assert raised.value.retry is False
    for text in (str(raised.value), repr(raised.value), repr(transport), caplog.text):
        assert ACCESS_TOKEN not in text and f"{ACCESS_TOKEN}-refresh" not in text


# -- fetch -----------------------------------------------------------------------------------


def archived(*destinations: str, content: bytes = b"x") -> list[ArchiveItem]:
    return [ArchiveItem(Path(d), d, len(content), hashlib.sha256(content).hexdigest()) for d in destinations]


def test_fetch_brings_files_back_and_waits(api, transport, data):
    to = data / "restore"
    wanted = ["dl25/2019-07-10/ephys/probe0/f00000.bin", "dl25/2019-07-10/ephys/probe1/f00001.bin"]
    load_response(TransferClient.get_submission_id, requests_mock=api)
    api.add("POST", f"{TRANSFER}/transfer", json={"code": "Accepted", "task_id": TASK_ID}, status=202)
    add_task(api, status="ACTIVE", nice_status="OK")

    def done(request):  # Globus writes the files, then reports success
        for destination in wanted:
            (to / destination).parent.mkdir(parents=True, exist_ok=True)
            (to / destination).write_bytes(b"x")
        return 200, {}, json.dumps({"task_id": TASK_ID, "status": "SUCCEEDED"})

    api.add_callback("GET", f"{TRANSFER}/task/{TASK_ID}", callback=done)
    naps = []
    transport._sleep = naps.append
    paths = transport.fetch(archived(*wanted), to, poll_seconds=7, timeout=60)
    assert paths == [to / destination for destination in wanted] and naps == [7]
    document = body(posts(api)[0])
    assert (document["source_endpoint"], document["destination_endpoint"]) == (DESTINATION, SOURCE)
    assert document["verify_checksum"] is True
    assert [(i["source_path"], i["destination_path"]) for i in document["DATA"]] == [
        (f"/archive/{wanted[0]}", f"/rigdata/restore/{wanted[0]}"),
        (f"/archive/{wanted[1]}", f"/rigdata/restore/{wanted[1]}"),
    ]


def test_fetch_refuses_a_place_outside_the_source_paths_and_existing_files(api, transport, data, tmp_path):
    with pytest.raises(TransportError, match=f"{tmp_path / 'other'} is not under any archive.globus.source_paths"):
        transport.fetch(archived("a/b.bin"), tmp_path / "other")
    (data / "restore" / "a").mkdir(parents=True)
    (data / "restore" / "a" / "b.bin").write_bytes(b"mine")
    with pytest.raises(TransportError, match="a different file is there \\(not overwritten\\): .*restore/a/b.bin"):
        transport.fetch(archived("a/b.bin"), data / "restore")
    assert transport.fetch(archived("a/b.bin", content=b"mine"), data / "restore") == [data / "restore/a/b.bin"]
    assert not api.calls  # the same file already there: nothing to transfer


def test_fetch_gives_up_waiting_after_the_timeout(api, transport, data):
    load_response(TransferClient.get_submission_id, requests_mock=api)
    api.add("POST", f"{TRANSFER}/transfer", json={"code": "Accepted", "task_id": TASK_ID}, status=202)
    add_task(api, status="ACTIVE", nice_status="CONNECT_FAILED")
    now = [0.0]
    transport._clock, transport._sleep = (lambda: now[0]), (lambda s: now.__setitem__(0, now[0] + s))
    with pytest.raises(TransportError, match=f"task {TASK_ID} not finished after 60 s .*CONNECT_FAILED") as raised:
        transport.fetch(archived("a/b.bin"), data / "restore", timeout=60, poll_seconds=30)
    assert raised.value.retry is True


# -- mapd globus login ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def signing_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def auth_api(api, signing_key):
    """Globus Auth answering a native-app code exchange, with an id_token signed by a key it publishes."""
    key = signing_key
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    api.add("GET", f"{AUTH}/.well-known/openid-configuration",
            json={"issuer": AUTH, "jwks_uri": f"{AUTH}/jwk.json", "id_token_signing_alg_values_supported": ["RS512"]})
    api.add("GET", f"{AUTH}/jwk.json", json={"keys": [jwk]})
    claims = {"sub": "1de00000-0000-4000-8000-000000000004", "aud": NATIVE_CLIENT, "iss": AUTH,
              "iat": int(time.time()), "exp": int(time.time()) + 600}
    id_token = jwt.encode(claims, key, algorithm="RS512")
    transfer = {"access_token": ACCESS_TOKEN, "refresh_token": "AgUSERrefresh", "scope":
                "urn:globus:auth:scope:transfer.api.globus.org:all", "expires_in": 172800, "token_type": "Bearer",
                "resource_server": "transfer.api.globus.org"}
    RegisteredResponse(service="auth", path="/v2/oauth2/token", method="POST", json={
        "access_token": "AgAUTHaccess", "refresh_token": "AgAUTHrefresh", "scope": "openid", "expires_in": 172800,
        "token_type": "Bearer", "resource_server": "auth.globus.org", "id_token": id_token, "other_tokens": [transfer],
    }).add(requests_mock=api)
    return api


def test_login_stores_refreshable_tokens_readable_only_by_their_owner(auth_api, tmp_path, data):
    output = io.StringIO()
    config = make_config(data, data_access_collections=[SOURCE])
    path = login(config, tmp_path / "state", input=io.StringIO("the-code\n"), output=output)
    assert path == token_path(tmp_path / "state")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())["data"]["DEFAULT"]["transfer.api.globus.org"]
    assert (stored["access_token"], stored["refresh_token"]) == (ACCESS_TOKEN, "AgUSERrefresh")

    url = next(line.strip() for line in output.getvalue().splitlines() if "oauth2/authorize" in line)
    query = parse_qs(urlparse(url).query)
    assert query["client_id"] == [NATIVE_CLIENT] and query["access_type"] == ["offline"]
    assert f"https://auth.globus.org/scopes/{SOURCE}/data_access" in query["scope"][0]
    exchange = parse_qs(auth_api.calls[0].request.body)
    assert exchange["code"] == ["the-code"] and exchange["grant_type"] == ["authorization_code"]
    assert ACCESS_TOKEN not in output.getvalue()

    # The daemon now works with those tokens.
    load_response(TransferClient.get_submission_id, requests_mock=auth_api)
    GlobusTransport(config, tmp_path / "state", retry_config=RetryConfig(max_retries=0)).new_submission_id()
    assert auth_api.calls[-1].request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"


def test_login_tightens_an_existing_token_file(auth_api, tmp_path, data):
    path = token_path(tmp_path)
    path.write_text(json.dumps({"globus-sdk.version": "4.9.1", "format_version": "2.0", "data": {}}))
    path.chmod(0o644)
    login(make_config(data), tmp_path, input=io.StringIO("c\n"), output=io.StringIO())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_login_refuses_a_damaged_token_file(api, tmp_path, data):
    token_path(tmp_path).write_text("[]")
    with pytest.raises(LoginError, match=f"{token_path(tmp_path)}: cannot use it"):
        login(make_config(data), tmp_path, input=io.StringIO("c\n"), output=io.StringIO())


def test_login_without_a_code_or_a_client_id_says_so(api, tmp_path, data):
    with pytest.raises(LoginError, match="no authorization code was entered"):
        login(make_config(data), tmp_path, input=io.StringIO(""), output=io.StringIO())
    config = make_config(data).model_copy(update={"login_client_id": None})
    with pytest.raises(LoginError, match="login_client_id"):
        login(config, tmp_path, input=io.StringIO("c\n"), output=io.StringIO())


def test_globus_login_command_is_registered_with_help(capsys):
    parser = argparse.ArgumentParser(prog="mapd")
    add_globus_commands(parser.add_subparsers(), _command)
    args = parser.parse_args(["globus", "login"])
    assert args.handler.__name__ == "_login_command"
    with pytest.raises(SystemExit):
        parser.parse_args(["globus", "login", "--help"])
    assert "globus-tokens.json" in capsys.readouterr().out


def write_config(tmp_path: Path, data: Path, **globus) -> Path:
    globus = {"source_endpoint": SOURCE, "source_paths": {str(data): "/rigdata"}, "destination_endpoint": DESTINATION,
              "destination_path": "/archive", **globus}
    path = tmp_path / "mapd.yaml"
    path.write_text(yaml.safe_dump({"session_user": "tester", "state_dir": str(tmp_path / "state"),
                                    "archive": {"transport": "globus", "globus": globus}}))
    return path


def command(path: Path):
    parser = argparse.ArgumentParser(prog="mapd")
    parser.add_argument("--config")
    add_globus_commands(parser.add_subparsers(), _command)
    args = parser.parse_args(["--config", str(path), "globus", "login"])
    return lambda: args.handler(args)


def test_globus_login_command_signs_in_from_stdin(auth_api, tmp_path, data, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("the-code\n"))
    assert command(write_config(tmp_path, data, login_client_id=NATIVE_CLIENT))() == 0
    assert "oauth2/authorize" in capsys.readouterr().out
    assert stat.S_IMODE(token_path(tmp_path / "state").stat().st_mode) == 0o600


def test_globus_login_command_without_a_native_app_fails_with_the_reason(api, tmp_path, data, capsys):
    assert command(write_config(tmp_path, data))() == 1
    assert "mapd: globus login: archive.globus has neither client_id" in capsys.readouterr().err
