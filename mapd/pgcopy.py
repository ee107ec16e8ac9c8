"""PostgreSQL's binary COPY format, and DataJoint's blob of a float64 vector in it: the bytes of bulk rows.

mapd moves a large probe's rows in bulk, where a row at a time would take
minutes: the probe ingest writes them with ``COPY ... FROM STDIN (FORMAT
binary)`` (:func:`row_bytes`, :func:`block_bytes`) and the export reads them
back with ``COPY ... TO STDOUT`` (:func:`read_rows`).

The format (PostgreSQL's "Binary Format" of COPY): a 19-byte header (its last
4 bytes: the length of an extension area), then per row an int16 field count
and per field an int32 length (-1: NULL) and the bytes, all big-endian; an
int16 -1 ends the data.

A blob column holds DataJoint's own serialization of a 1-D float64 array,
uncompressed: a 29-byte head (:data:`BLOB_HEAD`) and the values, little-endian.
Only the head's element count differs between such blobs; DataJoint reads
them back as it reads its own (checked against its encoder at import).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from datajoint import blob as dj_blob

__all__ = ["BLOB_HEAD", "HEADER", "TRAILER", "Block", "ChunkStream", "block_bytes", "plain_blob_head", "read_rows",
           "row_bytes"]

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)  # signature, flags, no extension
TRAILER = struct.pack(">h", -1)
_NULL = struct.pack(">i", -1)
FIXED = {"int2": ">i2", "int4": ">i4", "int8": ">i8", "float4": ">f4", "float8": ">f8"}  # PostgreSQL udt -> bytes
BLOB_HEAD = np.dtype([("magic", "S5"), ("ndim", "<u8"), ("n", "<u8"), ("type", "<u4"), ("complex", "<u4")])


def _checked_blob_head() -> np.ndarray:
    """The head of DataJoint's serialization of a 1-D float64 array, as its own encoder writes it."""
    packed = dj_blob.pack(np.arange(3, dtype=np.float64), compress=False)
    head = np.frombuffer(packed[:BLOB_HEAD.itemsize], dtype=BLOB_HEAD).copy()
    if head["n"][0] != 3 or packed[BLOB_HEAD.itemsize:] != np.arange(3, dtype=np.float64).tobytes():
        raise RuntimeError("DataJoint's blob layout is not the one mapd writes; use DataJoint inserts")
    return head


_BLOB_TEMPLATE = _checked_blob_head()


def plain_blob_head(n: int) -> bytes:
    """The head of the blob of ``n`` float64 values."""
    head = _BLOB_TEMPLATE.copy()
    head["n"] = n
    return head.tobytes()


# --------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """Rows of one table: key columns (an array per column, or one value for all rows) and
    optionally one float64 array per row, stored as a DataJoint blob in column ``blob``."""

    columns: dict[str, np.ndarray | int | str]
    n: int
    blob: str | None = None
    values: np.ndarray | None = None  # every row's array, one after the other
    lengths: np.ndarray | None = None  # elements of each row's array


def row_bytes(row: dict, types: list[str]) -> bytes:
    """One row (its values in column order, with their PostgreSQL types); None and non-finite floats are
    NULL, arrays DataJoint blobs."""
    parts = [struct.pack(">h", len(types))]
    for value, udt in zip(row.values(), types):
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            parts.append(_NULL)
            continue
        if udt in FIXED:
            raw = np.array(value, dtype=FIXED[udt]).tobytes()
        elif udt == "bytea":
            raw = dj_blob.pack(value, compress=False)
        else:  # varchar, char, text
            raw = str(value).encode()
        parts += [struct.pack(">i", len(raw)), raw]
    return b"".join(parts)


def block_bytes(block: Block, types: list[str]) -> np.ndarray:
    """A block's rows, built with array operations: a structured array of the fixed-width part of
    each row, each followed by its blob's values. ``types``: of the key columns, in order."""
    fields: list[tuple] = [("count", ">i2")]
    values = {}
    for i, (name, value) in enumerate(block.columns.items()):
        if isinstance(value, str):
            value = value.encode()
            dtype = f"S{len(value)}"
        else:
            dtype = FIXED[types[i]]
        fields += [(f"size{i}", ">i4"), (f"value{i}", dtype)]
        values[i] = value
    if block.blob:
        fields += [("blob_size", ">i4"), ("blob_head", BLOB_HEAD)]
    rows = np.zeros(block.n, dtype=np.dtype(fields))
    rows["count"] = len(values) + bool(block.blob)
    for i, value in values.items():
        rows[f"size{i}"] = rows.dtype[f"value{i}"].itemsize
        rows[f"value{i}"] = value
    if not block.blob:
        return rows.view(np.uint8)
    rows["blob_size"] = BLOB_HEAD.itemsize + 8 * block.lengths
    rows["blob_head"] = _BLOB_TEMPLATE
    rows["blob_head"]["n"] = block.lengths
    return _interleave(rows.view(np.uint8), rows.dtype.itemsize, block.values, block.lengths)


def _interleave(heads: np.ndarray, width: int, values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Bytes of row i: ``heads[i * width:(i + 1) * width]`` then its ``lengths[i]`` float64 values."""
    sizes = np.column_stack([np.full(lengths.size, width), 8 * lengths]).reshape(-1)
    is_head = np.repeat(np.tile([True, False], lengths.size), sizes)
    out = np.empty(is_head.size, dtype=np.uint8)
    out[is_head] = heads
    np.logical_not(is_head, out=is_head)
    out[is_head] = np.ascontiguousarray(values, dtype="<f8").view(np.uint8)
    return out


class ChunkStream:
    """A file-like object over an iterator of byte chunks (or arrays of them), as psycopg2's
    ``copy_expert`` reads it."""

    def __init__(self, chunks: Iterator) -> None:
        self._chunks = chunks
        self._buffer = memoryview(b"")

    def read(self, size: int = -1) -> bytes:
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._buffer = memoryview(chunk).cast("B")
        size = len(self._buffer) if size is None or size < 0 else size
        piece, self._buffer = self._buffer[:size], self._buffer[size:]
        return bytes(piece)


# --------------------------------------------------------------------------
# Reading.
# --------------------------------------------------------------------------


def read_rows(data: memoryview) -> list[tuple[memoryview, ...]]:
    """The rows of a whole binary COPY stream, each a tuple of its fields: views into ``data``
    (a NULL reads as empty)."""
    rows, position = [], 19 + struct.unpack_from(">i", data, 15)[0]
    while True:
        (fields,) = struct.unpack_from(">h", data, position)
        position += 2
        if fields == -1:
            return rows
        row = []
        for _ in range(fields):
            (length,) = struct.unpack_from(">i", data, position)
            row.append(data[position + 4:position + 4 + max(length, 0)])
            position += 4 + max(length, 0)
        rows.append(tuple(row))
