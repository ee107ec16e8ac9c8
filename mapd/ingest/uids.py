"""Unique ids across sessions (``trial_uid``, ``unit_uid``), reserved in blocks."""

from __future__ import annotations

import datajoint as dj

ALLOCATION_ATTEMPTS = 100


def allocate(table, count: int, what: str) -> int:
    """Reserve ``count`` consecutive ids in ``table`` (a block table: first_uid, uid_count); returns the first.

    Blocks are chained (each starts where the highest ends), so two processes
    that read the same end both try the same first_uid and one of them fails
    as a duplicate and tries again. Runs in its own short transaction so that
    concurrent ingests never wait on one another for ids.
    """
    for _ in range(ALLOCATION_ATTEMPTS):
        top = dj.U().aggr(table, end="max(first_uid + uid_count)").fetch1("end")
        first = int(top or 0) + 1
        try:
            table.insert1({"first_uid": first, "uid_count": max(count, 1)})
        except dj.errors.DuplicateError:
            continue
        return first
    raise RuntimeError(f"could not allocate {count} {what} after {ALLOCATION_ATTEMPTS} attempts")
