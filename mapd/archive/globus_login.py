"""``mapd globus login``: a person signs in once; the daemon then uses the stored refresh tokens.

Native-app flow: print the authorize URL, read the code the person pastes,
exchange it, store the tokens in ``state_dir/globus-tokens.json`` (mode 0600).
Scopes: Transfer, with the data_access consent of the collections listed in
``archive.globus.data_access_collections`` (GCS v5 mapped collections).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import TextIO

import globus_sdk
from globus_sdk.login_flows import CommandLineLoginFlowManager
from globus_sdk.token_storage import TokenValidationError
from globus_sdk.token_storage.validating_token_storage import IdentityMismatchError

from ..config import GlobusArchiveConfig
from .globus import native_login_client, token_path, user_app
from .transport import TransportError


class LoginError(Exception):
    """The login did not complete; the message says why (never with a token or code)."""


class _StreamLoginFlow(CommandLineLoginFlowManager):
    """The SDK's command-line flow, reading and writing the given streams (a terminal, or a test)."""

    def __init__(self, login_client: globus_sdk.AuthLoginClient, input: TextIO, output: TextIO) -> None:
        super().__init__(
            login_client, request_refresh_tokens=True,
            native_prefill_named_grant=f"mapd on {socket.gethostname()}",
        )
        self._input, self._output = input, output

    def print_authorize_url(self, authorize_url: str) -> None:
        self._output.write(f"Sign in to Globus and allow mapd to transfer files:\n\n  {authorize_url}\n\n")

    def prompt_for_code(self) -> str:
        self._output.write("Then paste the authorization code here: ")
        self._output.flush()
        code = self._input.readline().strip()
        if not code:
            raise LoginError("no authorization code was entered")
        return code


def login(
    config: GlobusArchiveConfig, state_dir: Path, *, input: TextIO | None = None, output: TextIO | None = None
) -> Path:
    """Run the sign-in and store the tokens; returns the token file. Streams default to stdin and stdout."""
    input, output = input or sys.stdin, output or sys.stdout
    path = token_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        login_client = native_login_client(config)
    except TransportError as error:
        raise LoginError(str(error)) from None
    flow = _StreamLoginFlow(login_client, input, output)
    try:
        app = user_app(config, state_dir, login_client, login_flow_manager=flow, token_validation_error_handler=None)
    except ValueError as error:  # the JSON storage's word for a file it cannot read
        raise LoginError(f"{path}: cannot use it ({error}): move it away and sign in again") from None
    client = globus_sdk.TransferClient(app=app, app_name="mapd")
    if config.data_access_collections:
        client.add_app_data_access_scope(config.data_access_collections)
    try:
        app.login(force=True)
    except globus_sdk.GlobusAPIError as error:
        raise LoginError(f"Globus refused the sign-in: {error.http_status} {error.code or error.message}") from None
    except globus_sdk.NetworkError as error:
        raise LoginError(f"cannot reach Globus ({type(error).__name__})") from None
    except IdentityMismatchError:
        raise LoginError(f"{path} holds the tokens of another Globus identity: remove it to sign in as another "
                         "person") from None
    except TokenValidationError as error:
        raise LoginError(f"Globus did not grant what mapd needs ({type(error).__name__}): {error}") from None
    finally:
        app.close()
    # The SDK writes under a 077 umask; a file that existed before keeps its mode, so set it.
    os.chmod(path, 0o600)
    output.write(f"\nLogged in. Tokens stored in {path} (readable by this user only).\n")
    return path
