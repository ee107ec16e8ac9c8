"""Writing many rows inside a DataJoint transaction: PostgreSQL binary COPY, else DataJoint's insert.

DataJoint's insert costs ~0.15 ms per row and zlib-compresses every blob: half
a minute for the 120,000 ``TrialSpikes`` rows of a 10-million-spike probe. On
PostgreSQL :class:`BulkWriter` streams them with binary ``COPY`` instead (the
bytes: :mod:`mapd.pgcopy`) on DataJoint's own connection, so they belong to
its transaction; other backends get the same rows through DataJoint's insert.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import datajoint as dj
import numpy as np

from .. import pgcopy
from ..pgcopy import Block

__all__ = ["Block", "BulkWriter"]


class BulkWriter:
    """Writes rows in bulk: binary COPY on PostgreSQL, DataJoint inserts on other backends."""

    use_copy: bool | None = None  # None: COPY when the backend is PostgreSQL (tests set False to check the other path)

    def __init__(self, connection) -> None:
        self.connection = connection
        self._written: list | None = None  # tables written while references are checked in bulk
        postgres = getattr(connection.adapter, "backend", "") == "postgresql"
        self.copy = postgres if self.use_copy is None else self.use_copy

    def write_rows(self, table, rows: Iterable[dict]) -> int:
        """Rows given as dicts with the same keys (few rows, large blobs); returns how many."""
        rows = iter(rows)
        first = next(rows, None)
        if first is None:
            return 0
        rows = itertools.chain([first], rows)
        if not self.copy:
            rows = list(rows)
            table.insert(rows, allow_direct_insert=True)
            return len(rows)
        types = self._types(table, first)
        count = 0

        def encoded() -> Iterator[bytes]:
            nonlocal count
            for row in rows:
                count += 1
                yield pgcopy.row_bytes(row, types)

        self._copy(table, list(first), encoded())
        return count

    def write_blocks(self, table, blocks: Iterable[Block]) -> int:
        """Rows given as column blocks (many rows); returns how many."""
        blocks = (block for block in blocks if block.n)
        first = next(blocks, None)
        if first is None:
            return 0
        blocks = itertools.chain([first], blocks)
        if not self.copy:
            total = 0
            for block in blocks:
                table.insert(_block_dicts(block), allow_direct_insert=True)
                total += block.n
            return total
        names = [*first.columns, *([first.blob] if first.blob else [])]
        types = self._types(table, names)
        count = 0

        def encoded() -> Iterator[np.ndarray]:
            nonlocal count
            for block in blocks:
                count += block.n
                yield pgcopy.block_bytes(block, types)

        self._copy(table, names, encoded())
        if self._written is not None:
            self._written.append(table)
        return count

    @contextmanager
    def references_checked_in_bulk(self, key: dict, parents: tuple) -> Iterator[None]:
        """Inside: the foreign keys of the rows written (those of ``key``) to ``parents`` are checked
        after the fact by one query per table and parent, not by PostgreSQL's trigger per row (35 us
        each: most of a large probe's transaction). Only where the role may turn the triggers off for
        its own transaction (session_replication_role); elsewhere each row is checked as usual. The
        parents must be locked against deletion beforehand."""
        if not (self.copy and self._may_skip_triggers()):
            yield
            return
        self._written = []
        self.connection.query("SET LOCAL session_replication_role = replica")
        yield  # on an error the transaction rolls back, and the setting with it
        self.connection.query("SET LOCAL session_replication_role = origin")
        for table in self._written:
            for parent in parents:
                _check_references(table, parent, key)
        self._written = None

    def _may_skip_triggers(self) -> bool:
        if self.connection.query("SELECT current_setting('is_superuser')").fetchone()[0] == "on":
            return True
        if self.connection._conn.server_version < 150000:
            return False
        return bool(self.connection.query(
            "SELECT has_parameter_privilege('session_replication_role', 'SET')").fetchone()[0])

    def _types(self, table, names: Iterable[str]) -> list[str]:
        """The PostgreSQL type (udt_name) of each named column of ``table``."""
        found = dict(self.connection.query(
            "SELECT column_name, udt_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            args=(table.database, table.table_name)).fetchall())
        return [found[name] for name in names]

    def _copy(self, table, names: list[str], chunks: Iterable[bytes]) -> None:
        columns = ", ".join(self.connection.adapter.quote_identifier(name) for name in names)
        sql = f"COPY {table.full_table_name} ({columns}) FROM STDIN WITH (FORMAT binary)"
        stream = pgcopy.ChunkStream(itertools.chain([pgcopy.HEADER], chunks, [pgcopy.TRAILER]))
        cursor = self.connection._conn.cursor()  # DataJoint's connection, inside its transaction
        try:
            cursor.copy_expert(sql, stream, size=1 << 20)
        except Exception as error:
            raise self.connection.adapter.translate_error(error, sql) from error
        finally:
            cursor.close()


def _check_references(table, parent, key: dict) -> None:
    """Every row of ``table`` with ``key`` refers to an existing ``parent`` row: one query comparing
    the rows' references with the parent's rows of that key, as a hashed set."""
    quote = table.connection.adapter.quote_identifier
    shared = [name for name in parent.primary_key if name in key]
    compared = ", ".join(quote(name) for name in parent.primary_key if name not in key)
    orphans = table.connection.query(
        f"SELECT count(*) FROM {table.full_table_name} WHERE "
        + " AND ".join(f"{quote(name)} = %s" for name in key)
        + f" AND ({compared}) NOT IN (SELECT {compared} FROM {parent.full_table_name} WHERE "
        + " AND ".join(f"{quote(name)} = %s" for name in shared) + ")",
        args=(*key.values(), *(key[name] for name in shared))).fetchone()[0]
    if orphans:
        raise dj.errors.IntegrityError(f"{orphans} rows of {table.full_table_name} refer to no row of "
                                       f"{parent.full_table_name}")


def _block_dicts(block: Block) -> list[dict]:
    """A block as DataJoint insert rows (backends without COPY; DataJoint inserts row by row anyway)."""
    columns = {name: np.broadcast_to(value, block.n) if not isinstance(value, str) else [value] * block.n
               for name, value in block.columns.items()}
    if block.blob:
        columns[block.blob] = np.split(block.values, np.cumsum(block.lengths)[:-1])
    names = list(columns)
    return [dict(zip(names, (v.item() if isinstance(v, np.generic) else v for v in row)))
            for row in zip(*columns.values())]
