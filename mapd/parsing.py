"""Behavior files -> :class:`ParsedFile` results, parsed in memory-limited processes that die with their parent.

One :class:`ParsePool` serves ``mapd rescan`` (many units parsed ahead) and
``mapd run`` (one unit at a time). Whatever a file does to its parser, only
that file fails: a :class:`MemoryError` under the pool's address-space limit
fails the file that caused it; a worker that dies (OOM kill, segfault) takes
the files it was parsing with it, so those are parsed again, each alone in
a process of its own, and only a file that kills that process too fails.

Imports only the pure parsers (``mapd.formats``), never the database.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from .formats.behavior import BehaviorFileRecords, BehaviorFormatError, parse_behavior_file

__all__ = ["ParsePool", "ParsedFile"]

log = logging.getLogger("mapd.parsing")

# spawn, not fork: the parent holds a database connection (and threads) that a fork would share.
START_METHOD = "spawn"
# Linux prctl(2) option: the kernel sends the child this signal when its parent dies, so
# workers never outlive a killed mapd (they stayed forever, parent PID 1).
PR_SET_PDEATHSIG = 1
# The parsers import these lazily; a worker imports them before its start-up size is
# measured, so that the memory limit is what parsing may use, not the libraries.
PARSER_MODULES = ("scipy.io", "h5py")
# Threads waiting on results, per worker: parse-ahead keeps 2 x workers units in flight.
WAITERS_PER_WORKER = 2

# In a parse process: the address-space limit it inherited, when lower than its own.
_INHERITED: dict[str, int] = {}


@dataclass(frozen=True)
class ParsedFile:
    path: Path
    records: BehaviorFileRecords | None = None
    error: str | None = None  # the problem, when the file cannot be ingested
    transient: bool = False  # the error may go away (share gone, file locked): try again later


@dataclass(frozen=True)
class _Limits:
    """What every parse process is given."""

    max_inflated_bytes: int  # ingest.max_inflated_bytes
    memory_limit_bytes: int  # ingest.parse_memory_bytes: address space beyond the start-up size
    parent_pid: int  # the process the parsers must not outlive


class ParsePool:
    """``workers`` parse processes (at least one); a context manager.

    :meth:`submit` returns a future of one :class:`ParsedFile` per path, in
    order; it never raises for a bad file. Processes are spawned by the
    pool's own long-lived threads (a dying parent *thread* would fire the
    workers' parent-death signal).
    """

    def __init__(self, workers: int, *, max_inflated_bytes: int, memory_limit_bytes: int) -> None:
        self._limits = _Limits(max_inflated_bytes, memory_limit_bytes, os.getpid())
        self._workers = max(1, int(workers))
        self._context = multiprocessing.get_context(START_METHOD)
        self._lock = threading.Lock()
        self._alone_lock = threading.Lock()  # one file parsed alone at a time
        self._alone: multiprocessing.process.BaseProcess | None = None
        self._closed = False
        self._executor = self._new_executor()
        self._waiters = ThreadPoolExecutor(WAITERS_PER_WORKER * self._workers + 1, thread_name_prefix="mapd-parse")

    def __enter__(self) -> ParsePool:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Leaving on an error (or an abandoned generator): do not wait for parses nobody will use.
        self.close(kill=exc_type is not None)

    def submit(self, paths: list[Path]) -> Future:
        """Start parsing ``paths``; the future's result is ``list[ParsedFile]``, in the same order."""
        return self._waiters.submit(self._parse_unit, [Path(path) for path in paths])

    def parse(self, paths: list[Path]) -> list[ParsedFile]:
        return self.submit(paths).result()

    def close(self, *, kill: bool = False) -> None:
        """Stop the processes: after the parses in progress, or at once with ``kill``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            executor = self._executor
        if kill:
            _kill(executor, self._alone)
        # The processes first: a waiting thread that ends fires the parent-death signal of the workers
        # it spawned, which would kill them (SIGKILL) in the middle of their orderly exit.
        executor.shutdown(wait=True, cancel_futures=True)
        self._waiters.shutdown(wait=True, cancel_futures=True)

    # ---- in the waiting threads ----------------------------------------------

    def _parse_unit(self, paths: list[Path]) -> list[ParsedFile]:
        submitted = [self._submit_one(path) for path in paths]
        results = [self._outcome(path, *pair) for path, pair in zip(paths, submitted)]
        died = [i for i, result in enumerate(results) if result is None]
        if died and not self._closed:
            log.warning("a parser process died; parsing its %d file(s) of this unit again, each alone: %s",
                        len(died), ", ".join(str(paths[i]) for i in died))
        for i in died:
            results[i] = self._parse_alone(paths[i])
        return results

    def _submit_one(self, path: Path) -> tuple[ProcessPoolExecutor | None, Future | None]:
        """The file's pool and future, replacing a pool found broken once; no future if closed or broken again."""
        for _ in range(2):
            executor = self._current()
            if executor is None:
                return None, None
            try:
                return executor, executor.submit(_parse_one, path, self._limits)
            except BrokenProcessPool:
                self._replace(executor)
            except RuntimeError:  # shut down meanwhile: the pool is closing
                return None, None
        return None, None

    def _outcome(self, path: Path, executor: ProcessPoolExecutor | None, future: Future | None) -> ParsedFile | None:
        """The file's result; None when its worker died (or the pool broke) before it was parsed."""
        if future is None:
            return None
        try:
            return future.result()
        except BrokenProcessPool:
            self._replace(executor)
            return None
        except CancelledError:
            return None
        except MemoryError:  # e.g. while its result was pickled
            return ParsedFile(path, error=_memory_problem(self._limits))
        except Exception as error:  # a parser bug: this file fails, the others go on
            return ParsedFile(path, error=f"parser failed: {type(error).__name__}: {error}")

    def _parse_alone(self, path: Path) -> ParsedFile:
        """Parse one file in a process of its own; a second death is the file's fault."""
        with self._alone_lock:
            if self._closed:
                return _not_parsed(path)
            receiver, sender = self._context.Pipe(duplex=False)
            process = self._context.Process(target=_parse_alone_main, args=(sender, path, self._limits),
                                            name="mapd-parse-alone", daemon=True)
            process.start()
            sender.close()
            self._alone = process
            try:
                result = receiver.recv()
            except EOFError:  # it died before answering
                result = None
            finally:
                receiver.close()
                process.join()
                self._alone = None
        if result is None and self._closed:  # killed by close(kill=True), not by the file
            return _not_parsed(path)
        if result is None:
            return ParsedFile(path, error=f"parser process died: {_death(process.exitcode)}, "
                                          "also when parsing this file alone")
        return result

    # ---- the process pool ------------------------------------------------------

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self._workers, mp_context=self._context, initializer=_init_worker,
                                   initargs=(self._limits,))

    def _current(self) -> ProcessPoolExecutor | None:
        with self._lock:
            return None if self._closed else self._executor

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        """A fresh pool instead of ``broken`` (unless another thread replaced it already)."""
        with self._lock:
            if self._closed or self._executor is not broken:
                return
            self._executor = self._new_executor()
        broken.shutdown(wait=False, cancel_futures=True)


# ---- in the parse processes ---------------------------------------------------


def _parse_one(path: Path, limits: _Limits) -> ParsedFile:
    try:
        return ParsedFile(path, records=parse_behavior_file(path, max_inflated_bytes=limits.max_inflated_bytes))
    except BehaviorFormatError as error:
        return ParsedFile(path, error=error.problem, transient=error.transient)
    except MemoryError:
        return ParsedFile(path, error=_memory_problem(limits))
    except OSError as error:  # unreadable, vanished, share gone
        return ParsedFile(path, error=f"cannot read: {error.strerror or error}", transient=True)


def _parse_alone_main(sender, path: Path, limits: _Limits) -> None:
    _init_worker(limits)
    sender.send(_parse_one(path, limits))
    sender.close()


def _init_worker(limits: _Limits) -> None:
    """Die with the parent, leave Ctrl-C to it, and limit this process's memory."""
    _die_with_parent(limits.parent_pid)
    # Ctrl-C reaches the whole process group: the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for module in PARSER_MODULES:
        importlib.import_module(module)
    _limit_address_space(limits.memory_limit_bytes)


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0), ctypes.c_ulong(0),
                       ctypes.c_ulong(0))
        except (OSError, AttributeError):  # no usable libc: only the check below
            pass
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


def _limit_address_space(extra: int) -> None:
    """RLIMIT_AS = start-up size + ``extra``, never above a limit inherited from the parent."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    start = _vm_size()
    if start is None:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = start + extra
    for inherited in (soft, hard):
        if inherited != resource.RLIM_INFINITY and inherited < limit:
            limit = _INHERITED["limit"] = inherited
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _vm_size() -> int | None:
    """This process's address-space size (bytes), from /proc (Linux); None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# ---- messages and clean-up ------------------------------------------------------


def _memory_problem(limits: _Limits) -> str:
    problem = f"needs more memory than ingest.parse_memory_bytes ({limits.memory_limit_bytes // 2**20} MiB) allows"
    if "limit" in _INHERITED:
        problem += f" (here less: mapd itself runs under an address-space limit of {_INHERITED['limit'] // 2**20} MiB)"
    return problem


def _not_parsed(path: Path) -> ParsedFile:
    return ParsedFile(path, error="not parsed: the parser pool was closed", transient=True)


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"killed by {name}" + (" (out of memory?)" if -exitcode == signal.SIGKILL else "")
    return f"exit status {exitcode}"


def _kill(executor: ProcessPoolExecutor, alone) -> None:
    """Kill the pool's processes now (CPython keeps them in ``_processes``) and the one parsing alone."""
    processes = list(dict(getattr(executor, "_processes", None) or {}).values())
    for process in [*processes, *([alone] if alone is not None else [])]:
        try:
            process.kill()
        except (OSError, AttributeError, ValueError):  # gone already
            pass
