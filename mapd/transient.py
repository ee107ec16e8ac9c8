"""Which failures pass by themselves (the database unreachable, a disk full) and are retried, not recorded as verdicts."""

from __future__ import annotations

import errno

from .database import is_database_outage

# PostgreSQL SQLSTATE classes: 08 connection exception, 53 insufficient
# resources (53100 disk full, 53200 out of memory, 53300 too many
# connections), 57P0x the server shutting down or restarting.
TRANSIENT_SQLSTATE_PREFIXES = ("08", "53", "57P")
# MySQL: 1021 disk full, 1114 table is full, 1040 too many connections, 2006/2013 server gone.
TRANSIENT_MYSQL_ERRNOS = frozenset({1021, 1114, 1040, 2006, 2013})
DISK_FULL_WORDS = ("no space left on device", "disk full", "could not extend file", "could not write")


def is_transient_database_error(error: BaseException) -> bool:
    """The database cannot do the work now, for a reason that passes: retry later with backoff."""
    if is_database_outage(error):
        return True
    pgcode = getattr(error, "pgcode", None)
    if isinstance(pgcode, str) and pgcode.startswith(TRANSIENT_SQLSTATE_PREFIXES):
        return True
    if type(error).__module__.split(".")[0] == "pymysql" and error.args and error.args[0] in TRANSIENT_MYSQL_ERRNOS:
        return True
    return is_disk_full(error)


def is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error).lower()
    return any(words in text for words in DISK_FULL_WORDS)


def describe(error: BaseException) -> str:
    """A short cause for status and logs: never a statement or row data."""
    if is_disk_full(error):
        return "disk full (the database or state_dir has no space left)"
    text = (str(error).strip() or type(error).__name__).splitlines()[0]
    return text[:300]
