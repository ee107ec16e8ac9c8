"""The Globus archive transport: one transfer task per batch, verified by Globus against mapd's sha256.

The original pipeline started one task per file and polled each; here a
session (or probe) is one task, so a session costs a handful of API calls
whatever its number of files (see ``bench/globus_calls.py``).

Credentials: a confidential client (``client_id`` + secret) for an unattended
daemon, else the refresh tokens a person stored with ``mapd globus login``.
No token, secret or Authorization header is ever put in a message or log.
"""

from __future__ import annotations

import logging
import posixpath
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import globus_sdk
from globus_sdk import GlobusAPIError, NetworkError, TransferClient, TransferData
from globus_sdk.token_storage import JSONTokenStorage, TokenValidationError
from globus_sdk.transport import RetryConfig

from ..config import GlobusArchiveConfig
from ..find.files import sha256_of
from .transport import ArchivedCopy, ArchiveItem, Batch, TaskStatus, TransportError

log = logging.getLogger(__name__)

APP_NAME = "mapd"
TOKEN_FILE = "globus-tokens.json"
LOGIN_HINT = "run `mapd globus login` on this host"
# The daemon polls again later and the stage retries a TransportError(retry=True):
# a few quick SDK retries are enough, long backoffs would only stall the stage.
DEFAULT_RETRIES, DEFAULT_MAX_SLEEP = 2, 5.0
MAX_NAMED = 10  # problems named in one message; the rest are counted


def token_path(state_dir: Path) -> Path:
    return Path(state_dir) / TOKEN_FILE


def native_login_client(config: GlobusArchiveConfig) -> globus_sdk.NativeAppAuthClient:
    if not config.login_client_id:
        raise TransportError(
            "archive.globus has neither client_id + client secret (a confidential client) nor "
            "login_client_id (a native app registered at https://app.globus.org/settings/developers "
            "for `mapd globus login`)",
            retry=False,
        )
    return globus_sdk.NativeAppAuthClient(config.login_client_id, app_name=APP_NAME)


def user_app(
    config: GlobusArchiveConfig, state_dir: Path, login_client: globus_sdk.NativeAppAuthClient | None = None,
    **app_config: Any,
) -> globus_sdk.UserApp:
    """The native app whose tokens `mapd globus login` stores and the daemon uses (refresh tokens, 0600 file)."""
    settings: dict[str, Any] = dict(token_storage=JSONTokenStorage(token_path(state_dir)), request_refresh_tokens=True)
    settings.update(app_config)
    return globus_sdk.UserApp(
        APP_NAME, login_client=login_client or native_login_client(config),
        config=globus_sdk.GlobusAppConfig(**settings),
    )


class GlobusTransport:
    """The Transport for ``archive.transport: globus``; its calls are safe to repeat."""

    name = "globus"

    def __init__(
        self,
        config: GlobusArchiveConfig,
        state_dir: Path,
        *,
        client: TransferClient | None = None,
        retry_config: RetryConfig | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = config.destination_endpoint
        self.root = config.destination_path.rstrip("/") or "/"
        self._config = config
        self._state_dir = Path(state_dir)
        # Built on first use: a user app reads the token file, which login may write later.
        self._transfer = client
        self._retry_config = retry_config
        self._sleep = sleep
        self._clock = clock

    def __repr__(self) -> str:
        return f"GlobusTransport(endpoint={self.endpoint!r}, root={self.root!r}, auth={self._auth_kind()!r})"

    # -- the Transport interface -------------------------------------------------

    def new_submission_id(self) -> str:
        with self._globus("getting a submission id"):
            return str(self._client().get_submission_id()["value"])

    def submit(self, batch: Batch) -> str:
        data = self._transfer_data(batch)
        with self._globus(f"submitting the transfer of {batch.label!r}"):
            try:
                # A repeat with a used submission id answers 200 "Duplicate" with the first task's id.
                return str(self._client().submit_transfer(data)["task_id"])
            except GlobusAPIError as error:
                if not _already_submitted(error):
                    raise
                return self._existing_task(batch, error)

    def poll(self, task_id: str) -> TaskStatus:
        with self._globus(f"polling task {task_id}"):
            task = self._client().get_task(task_id)
        status = task_status(task)
        if status.state == "succeeded" and task.get("faults"):
            # Faults are errors Globus retried; each file was still checksummed, and verify checks each one.
            log.info("Globus task %s succeeded after %s retried fault(s)", task_id, task["faults"])
        return status

    def verify(self, task_id: str, batch: Batch) -> list[ArchivedCopy]:
        with self._globus(f"verifying task {task_id}"):
            client = self._client()
            task = client.get_task(task_id)
            pages = client.paginated.task_successful_transfers(task_id)
            transferred = {entry["destination_path"] for entry in pages.items()}
            sizes = self._sizes({posixpath.dirname(self._archive_path(item)) for item in batch.items})
        unlisted = [item for item in batch.items if self._archive_path(item) not in transferred]
        problems = _copy_problems(batch.items, self._archive_path, sizes, unlisted, task.get("files_skipped") or 0)
        # The copies count as verified only if Globus compared checksums (a task found by label may not have).
        if task.get("status") != "SUCCEEDED" or not task.get("verify_checksum"):
            problems.insert(0, f"the task is {task.get('status')} with verify_checksum={task.get('verify_checksum')}")
        if problems:
            raise TransportError(f"Globus task {task_id} ({batch.label}): {_join(problems)}", retry=False)
        return [ArchivedCopy(item.destination, item.size, item.sha256) for item in batch.items]

    def fetch(
        self, items: list[ArchiveItem], to: Path, *, timeout: float = 6 * 3600.0, poll_seconds: float = 30.0
    ) -> list[Path]:
        """Transfer archived files back to ``to`` (which the source endpoint serves), wait, verify each sha256.

        A file already there with the same content is not transferred again; a different one is never replaced.
        """
        targets = {item.destination: Path(to) / _relative(item.destination) for item in items}
        remote_to = self._source_path(Path(to))
        present = {item.destination for item in items if targets[item.destination].exists()}
        different = [str(targets[i.destination]) for i in items
                     if i.destination in present and sha256_of(targets[i.destination])[0] != i.sha256]
        if different:
            raise TransportError(f"not fetched, a different file is there (not overwritten): {_join(different)}",
                                 retry=False)
        wanted = [item for item in items if item.destination not in present]
        if wanted:
            self._fetch_transfer(wanted, remote_to, timeout, poll_seconds)
        wrong = [str(targets[i.destination]) for i in wanted
                 if not targets[i.destination].is_file() or sha256_of(targets[i.destination])[0] != i.sha256]
        if wrong:
            raise TransportError(f"fetched files missing or not as archived (sha256): {_join(wrong)}", retry=False)
        return list(targets.values())

    def _fetch_transfer(self, items: list[ArchiveItem], remote_to: str, timeout: float, poll_seconds: float) -> None:
        # sync "exists": a file that appeared meanwhile is left alone, never overwritten.
        data = TransferData(
            self.endpoint, self._config.source_endpoint, label=f"mapd fetch {len(items)} files",
            submission_id=self.new_submission_id(), verify_checksum=True, sync_level="exists",
            notify_on_succeeded=False,
        )
        for item in items:
            data.add_item(self._archive_path(item), posixpath.join(remote_to, _relative(item.destination)))
        with self._globus(f"submitting the fetch to {remote_to}"):
            task_id = str(self._client().submit_transfer(data)["task_id"])
        self._wait(task_id, timeout, poll_seconds)

    # -- paths -------------------------------------------------------------------

    def _transfer_data(self, batch: Batch) -> TransferData:
        data = TransferData(
            self._config.source_endpoint, self.endpoint, label=batch.label, submission_id=batch.submission_id,
            sync_level="checksum", verify_checksum=True,
            # One e-mail per archived session would bury the ones that matter (failed, inactive).
            notify_on_succeeded=False,
        )
        for item in batch.items:
            # Globus checks the file against the sha256 mapd read, not only source against copy.
            data.add_item(
                self._source_path(item.source), self._archive_path(item),
                external_checksum=item.sha256, checksum_algorithm="SHA256",
            )
        return data

    def _source_path(self, local: Path) -> str:
        """``local`` as the source endpoint names it: through the longest matching source_paths prefix."""
        matches = [prefix for prefix in self._config.source_paths if local.is_relative_to(prefix)]
        if not matches:
            prefixes = ", ".join(str(prefix) for prefix in self._config.source_paths)
            raise TransportError(
                f"{local} is not under any archive.globus.source_paths prefix ({prefixes})", retry=False
            )
        prefix = max(matches, key=lambda p: len(p.parts))
        remote = self._config.source_paths[prefix]
        relative = local.relative_to(prefix).as_posix()
        return remote if relative == "." else posixpath.join(remote, relative)

    def _archive_path(self, item: ArchiveItem | str) -> str:
        destination = item.destination if isinstance(item, ArchiveItem) else item
        return posixpath.join(self.root, _relative(destination))

    def _sizes(self, directories: Iterable[str]) -> dict[str, int]:
        """Archive path -> size of every file in ``directories``: one listing per directory."""
        sizes: dict[str, int] = {}
        for directory in sorted(directories):
            try:
                listing = self._client().operation_ls(self.endpoint, path=directory)
            except GlobusAPIError as error:
                if error.http_status == 404 or (error.code or "").endswith("NotFound"):
                    continue  # no directory: its files are reported missing below
                raise
            for entry in listing:
                if entry.get("type") == "file":
                    sizes[posixpath.join(directory, entry["name"])] = int(entry["size"])
        return sizes

    # -- Globus calls --------------------------------------------------------------

    def _client(self) -> TransferClient:
        if self._transfer is None:
            retry_config = self._retry_config or RetryConfig(max_retries=DEFAULT_RETRIES, max_sleep=DEFAULT_MAX_SLEEP)
            client = TransferClient(app=self._app(), app_name=APP_NAME, retry_config=retry_config)
            if self._auth_kind() == "client" and self._config.data_access_collections:
                # A client's own grant carries the consent; a person's is asked for at login.
                client.add_app_data_access_scope(self._config.data_access_collections)
            self._transfer = client
        return self._transfer

    def _auth_kind(self) -> str:
        return "client" if self._config.client_id and self._config.client_secret else "login"

    def _app(self) -> globus_sdk.GlobusApp:
        config = self._config
        if self._auth_kind() == "client":
            return globus_sdk.ClientApp(
                APP_NAME, client_id=config.client_id, client_secret=config.client_secret.get_secret_value(),
                config=globus_sdk.GlobusAppConfig(token_storage="memory"),
            )
        if not _has_tokens(token_path(self._state_dir)):
            raise TransportError(f"not logged in to Globus: {LOGIN_HINT} (no tokens in {self._state_dir})", retry=False)
        # No error handler: the daemon must never start an interactive login itself.
        return user_app(config, self._state_dir, token_validation_error_handler=None)

    @contextmanager
    def _globus(self, doing: str) -> Iterator[None]:
        """Turn what the SDK raises into a TransportError that says what to do (``from None``: no SDK notes)."""
        try:
            yield
        except TransportError:
            raise
        except TokenValidationError as error:
            raise TransportError(f"{doing}: not logged in to Globus ({type(error).__name__}): {LOGIN_HINT}",
                                 retry=False) from None
        except GlobusAPIError as error:
            raise self._api_error(error, doing) from None
        except NetworkError as error:
            raise TransportError(f"{doing}: cannot reach Globus ({type(error).__name__})", retry=True) from None

    def _api_error(self, error: GlobusAPIError, doing: str) -> TransportError:
        said = _said(error)
        fix = LOGIN_HINT if self._auth_kind() == "login" else "check archive.globus.client_id and its secret"
        if error.code == "ConsentRequired" or error.info.consent_required:
            scopes = " ".join(error.info.consent_required.required_scopes) or "a collection"
            if self._auth_kind() == "client":
                fix = "list the collection in archive.globus.data_access_collections"
            return TransportError(f"{doing}: Globus needs consent for {scopes}: {fix}", retry=False)
        if isinstance(error, globus_sdk.AuthAPIError) or error.http_status == 401:
            return TransportError(f"{doing}: Globus refused mapd's credentials ({said}): {fix}", retry=False)
        transient = error.http_status >= 500 or error.http_status == 429
        return TransportError(f"{doing}: Globus said {said}", retry=transient)

    def _existing_task(self, batch: Batch, error: GlobusAPIError) -> str:
        """The task an earlier submit with this submission id created (a 409 instead of a 200 Duplicate)."""
        body = error.raw_json if isinstance(error.raw_json, dict) else {}
        if body.get("task_id"):
            return str(body["task_id"])
        tasks = self._client().task_list(
            filter={"label": batch.label, "type": "TRANSFER"}, orderby="request_time DESC", limit=20
        )
        ours = [task["task_id"] for task in tasks if task.get("destination_endpoint_id") in (None, self.endpoint)]
        if len(ours) == 1:
            return str(ours[0])
        raise TransportError(
            f"submission id {batch.submission_id} of {batch.label!r} was used before, but its task is not "
            f"identifiable: {len(ours)} tasks carry that label ({', '.join(map(str, ours)) or 'none'})",
            retry=False,
        )

    def _wait(self, task_id: str, timeout: float, poll_seconds: float) -> None:
        deadline = self._clock() + timeout
        while True:
            status = self.poll(task_id)
            if status.state == "succeeded":
                return
            if status.state == "failed":
                raise TransportError(status.problem, retry=False)
            if self._clock() >= deadline:
                stuck = f": {status.problem}" if status.problem else ""
                raise TransportError(
                    f"Globus task {task_id} not finished after {timeout:.0f} s (it goes on in Globus){stuck}",
                    retry=True,
                )
            self._sleep(poll_seconds)


def task_status(task: Mapping[str, Any]) -> TaskStatus:
    """What a Globus task document means for the stage; a stuck task always says why."""
    task_id, status = task.get("task_id"), task.get("status")
    nice = task.get("nice_status")
    details = task.get("nice_status_short_description") or task.get("nice_status_details") or ""
    why = f"{nice}{': ' + details if details else ''}"
    if status == "SUCCEEDED":
        skipped = task.get("subtasks_skipped_errors") or 0
        if skipped:
            return TaskStatus("failed", f"Globus task {task_id} skipped {skipped} file(s) on source errors")
        return TaskStatus("succeeded")
    if status == "FAILED":
        fatal = task.get("fatal_error") or {}
        reason = ": ".join(filter(None, (fatal.get("code"), fatal.get("description")))) or why or "no reason given"
        return TaskStatus("failed", f"Globus task {task_id} failed: {reason}")
    if status == "INACTIVE":
        return TaskStatus("active", f"Globus task {task_id} is inactive (credentials expired?): {why}: {LOGIN_HINT}")
    if status == "ACTIVE":
        if task.get("is_paused") or str(nice).startswith("PAUSED"):
            return TaskStatus("active", f"Globus task {task_id} is paused (by an endpoint administrator?): {why}")
        if nice in (None, "OK", "Queued"):
            return TaskStatus("active")
        return TaskStatus("active", f"Globus task {task_id} is retrying: {why}")
    return TaskStatus("active", f"Globus task {task_id} has an unknown status {status!r}")


def _copy_problems(
    items: Iterable[ArchiveItem], archive_path: Callable[[ArchiveItem], str], sizes: Mapping[str, int],
    unlisted: list[ArchiveItem], in_sync: int,
) -> list[str]:
    """What is wrong with each item's copy; ``in_sync`` files may be absent from the transfer list."""
    problems = []
    # A file that was already identical (sync by checksum) is skipped, not transferred:
    # Globus counts it in files_skipped instead of listing it.
    if len(unlisted) > in_sync:
        problems += [f"{archive_path(item)} was not transferred" for item in unlisted]
    for item in items:
        path = archive_path(item)
        if path not in sizes:
            problems.append(f"{path} is missing from the archive")
        elif sizes[path] != item.size:
            problems.append(f"{path} has {sizes[path]} bytes, {item.source} had {item.size}")
    return problems


def _said(error: GlobusAPIError) -> str:
    """The status, code and message of an API error (OAuth errors put their code in "error")."""
    body = error.raw_json if isinstance(error.raw_json, dict) else {}
    code = error.code or body.get("error") or ""
    message = error.message or body.get("error_description") or error.http_reason
    return f"{error.http_status} {code}: {message}".replace(" :", ":")


def _already_submitted(error: GlobusAPIError) -> bool:
    code = error.code or ""
    return error.http_status == 409 and (code.endswith("Conflict") or "Duplicate" in code)


def _relative(destination: str) -> str:
    """An archive-relative path, refused if it could leave the archive root."""
    path = PurePosixPath(destination)
    if not destination or path.is_absolute() or ".." in path.parts:
        raise TransportError(f"archive destination {destination!r} is not a relative path inside the archive",
                             retry=False)
    return path.as_posix()


def _has_tokens(path: Path) -> bool:
    try:
        return bool(JSONTokenStorage(path).get_token_data_by_resource_server())
    except (OSError, ValueError):
        return False


def _join(problems: list[str]) -> str:
    named = "; ".join(problems[:MAX_NAMED])
    return named + (f"; and {len(problems) - MAX_NAMED} more" if len(problems) > MAX_NAMED else "")
