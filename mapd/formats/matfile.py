"""Read MATLAB mat-files (v5/v7 and v7.3) into one normalized Python structure.

:func:`read_mat` reads a file's bytes once, from a regular file only (a
FIFO, socket or device named ``*.mat`` is refused without blocking), and
parses those same bytes: its :class:`MatFile` carries the bytes' SHA-256,
size and modification time, so the checksum is of what was parsed.
Before anything is inflated, the sizes the file declares (v5: each
variable's byte count, compressed ones included; v7.3: each dataset's
shape and type) are checked against ``max_inflated_bytes``: a few MB of
compressed zeros cannot make the reader allocate gigabytes.

v5/v7 files are read with ``scipy.io.loadmat``; v7.3 files (HDF5 behind a
512-byte MATLAB header) with h5py. Both give the same structure, which is
scipy's ``squeeze_me=True`` view of the data with MATLAB's own classes
(``mat_dtype=True``) and these conversions:

* struct 1x1 -> ``dict`` (fields in MATLAB order); struct array -> ``list`` of
  dicts (nested lists, by rows, for 2-D arrays); empty struct array -> ``[]``.
* cell array -> ``list`` of its squeezed elements (nested lists for 2-D);
  a 1x1 cell collapses to its element; an empty cell -> ``[]``.
* char 1xN -> ``str``; '' -> ``''``; char matrix -> numpy array of str (one per row).
* numeric / logical: arrays squeezed (``np.squeeze``); a 1x1 value becomes a
  Python scalar (``float``, ``int``, ``bool``, ``complex``); an empty array
  becomes a shape-(0,) array of the class's dtype. MATLAB doubles are float64
  even where MATLAB stored integer-valued doubles as small integers.
* sparse -> ``scipy.sparse.csc_matrix`` (not squeezed).

v7.3 files list their top-level variables in name order (HDF5 keeps no
other order); fields keep MATLAB's order in both formats.

Consequences of the squeeze rules: in a one-trial file every per-trial field
collapses (``RawEvents['Trial']`` is a dict, not a list of one dict;
``TrialTypes`` is a float); an event seen once is a float, not an array.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import stat
import struct
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MatFile", "MatFileError", "load_mat", "read_mat"]

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MAT_HEADER_BYTES = 128
_V73_USERBLOCK = 512
_SKIPPED_V73_GROUPS = ("#refs#", "#subsystem#")

# v5 data element types (MATLAB's "MAT-File Format", table 1-1).
_MI_INT8, _MI_MATRIX, _MI_COMPRESSED = 1, 14, 15
# Inflated bytes enough for a compressed variable's header: its miMATRIX tag, array
# flags, dimensions (up to ~100 of them) and name (at most 63 characters).
_V5_HEADER_PEEK = 1024
# Where the config names the bound, so that a refusal says what to change.
_BOUND_SETTING = "ingest.max_inflated_bytes"
_NOT_REGULAR = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


class MatFileError(Exception):
    """A mat-file could not be read; ``problem`` says why in plain words."""

    def __init__(self, path: str | os.PathLike[str], problem: str, *, transient: bool = False) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        # The file could not be read now (gone, locked, I/O error): it may be later.
        self.transient = transient
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class MatFile:
    """A mat-file's variables and what was read to get them."""

    variables: dict[str, Any]  # {variable name: normalized value} (see the module doc)
    sha256: str  # hex digest of the bytes that were parsed
    size: int  # (bytes) from the fstat of the descriptor that was read
    mtime: float  # (s since the epoch) idem


def read_mat(
    path: str | os.PathLike[str],
    variables: Sequence[str] | None = None,
    *,
    required_fields: Mapping[str, Sequence[str]] | None = None,
    max_inflated_bytes: int | None = None,
) -> MatFile:
    """Read a MATLAB mat-file (v5, v7 or v7.3): its variables, checksum, size and mtime.

    ``variables`` limits the result to those variables; each must exist.
    ``required_fields`` maps a variable to field names its struct must have,
    e.g. ``{"SessionData": ["RawData", "TrialSettings"]}``.
    ``max_inflated_bytes`` refuses, before inflating, a file whose variables
    to be read declare more content than this (None: no bound).
    The file is only opened for reading, once. Raises :class:`MatFileError`
    on any problem (missing, empty, truncated or corrupt file, not a regular
    file, not a mat-file, too large, a requested variable or field missing).
    """
    if isinstance(variables, str):  # a lone name is a common slip: not a list of letters
        variables = [variables]
    wanted = None if variables is None else list(dict.fromkeys(variables))
    file = os.fspath(path)
    content, status = _read_regular_file(file, max_inflated_bytes)
    version = _detect_version(file, content)
    if version == "5":
        _check_v5_elements(file, content, wanted, max_inflated_bytes)
    try:
        data = _load_v73(file, content, wanted, max_inflated_bytes) if version == "7.3" else _load_v5(content, wanted)
    except (MatFileError, MemoryError):
        raise
    except Exception as exc:  # scipy/h5py raise many types on damaged files
        raise MatFileError(file, f"corrupt or truncated MAT-file ({_describe(exc)})") from exc
    data = _select(file, data, wanted)
    for name, fields in (required_fields or {}).items():
        _check_fields(file, data, name, fields)
    return MatFile(data, hashlib.sha256(content).hexdigest(), status.st_size, status.st_mtime)


def load_mat(
    path: str | os.PathLike[str],
    variables: Sequence[str] | None = None,
    *,
    required_fields: Mapping[str, Sequence[str]] | None = None,
    max_inflated_bytes: int | None = None,
) -> dict[str, Any]:
    """The variables of :func:`read_mat` alone, as ``{variable name: value}``."""
    return read_mat(path, variables, required_fields=required_fields, max_inflated_bytes=max_inflated_bytes).variables


def _select(file: str, data: dict[str, Any], wanted: list[str] | None) -> dict[str, Any]:
    if wanted is None:
        return data
    missing = [name for name in wanted if name not in data]
    if missing:
        noun = "variable" if len(missing) == 1 else "variables"
        raise MatFileError(file, f"no {noun} {', '.join(missing)}")
    return {name: data[name] for name in wanted}


def _check_fields(file: str, data: dict[str, Any], name: str, fields: Sequence[str]) -> None:
    if name not in data:
        raise MatFileError(file, f"no variable {name}")
    value = data[name]
    if not isinstance(value, dict):
        raise MatFileError(file, f"{name} is not a struct")
    missing = [f for f in fields if f not in value]
    if missing:
        raise MatFileError(file, f"{name} lacks {', '.join(missing)}")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _size(n: int) -> str:
    """Bytes in the binary units the config's defaults are written in (512 MiB, 2 GiB)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} bytes"


def _too_large(file: str, declared: int, bound: int, *, at_least: bool = False) -> MatFileError:
    amount, limit = _size(declared), _size(bound)
    if amount == limit:  # too close to tell apart once rounded
        amount, limit = f"{declared:,} bytes", f"{bound:,} bytes"
    return MatFileError(file, f"declares {'at least ' if at_least else ''}{amount} of content, "
                              f"over {_BOUND_SETTING} ({limit})")


# --------------------------------------------------------------------------
# Reading the bytes: regular files only, never blocking, once.
# --------------------------------------------------------------------------


def _read_regular_file(path: str, bound: int | None) -> tuple[bytes, os.stat_result]:
    """The file's bytes and the fstat of the descriptor they were read from.

    O_NONBLOCK: opening a FIFO without a writer would block forever; with the
    flag it opens at once and fstat tells what it is before anything is read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _open_problem(path, exc) from None
    try:
        before = os.fstat(fd)
        kind = _not_regular(before.st_mode)
        if kind:
            raise MatFileError(path, f"not a regular file ({kind})")
        if bound is not None and before.st_size > bound:
            raise MatFileError(path, f"is {_size(before.st_size)} on disk, over {_BOUND_SETTING} ({_size(bound)})")
        content = _read_all(fd, before.st_size)
        after = os.fstat(fd)
    except OSError as exc:
        raise MatFileError(path, f"cannot read file ({_describe(exc)})", transient=True) from exc
    finally:
        os.close(fd)
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or len(content) != after.st_size:
        raise MatFileError(path, "file changed while it was read (still being written?)", transient=True)
    return content, after


def _read_all(fd: int, size: int) -> bytes:
    # One byte more than fstat said: a file still growing shows up as a size change.
    parts, want = [], size + 1
    while chunk := os.read(fd, max(want, 1 << 16)):
        parts.append(chunk)
        want = 1 << 20
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _not_regular(mode: int) -> str | None:
    """What a non-regular file is ('a FIFO', ...); None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _NOT_REGULAR if test(mode)), "not a regular file")


def _open_problem(path: str, exc: OSError) -> MatFileError:
    if isinstance(exc, FileNotFoundError):
        return MatFileError(path, "file not found", transient=True)
    if isinstance(exc, PermissionError):
        return MatFileError(path, "cannot read file (permission denied)", transient=True)
    try:  # a socket cannot be opened at all (ENXIO): say what it is
        kind = _not_regular(os.stat(path).st_mode)
    except OSError:
        kind = None
    if kind:
        return MatFileError(path, f"not a regular file ({kind})")
    return MatFileError(path, f"cannot read file ({_describe(exc)})", transient=True)


# --------------------------------------------------------------------------
# Format detection.
# --------------------------------------------------------------------------


def _detect_version(path: str, content: bytes) -> str:
    """'5' or '7.3' from the 128-byte header; MatFileError for anything else."""
    size = len(content)
    head = content[: _V73_USERBLOCK + len(_HDF5_SIGNATURE)]
    if size == 0:
        raise MatFileError(path, "empty file (0 bytes)")
    if len(head) < _MAT_HEADER_BYTES:
        if head.startswith(b"MATLAB"):
            raise MatFileError(path, f"truncated MAT-file ({size} bytes, shorter than the 128-byte header)")
        raise MatFileError(path, f"not a MAT-file (only {size} bytes, no MATLAB header)")
    endian = head[126:128]
    if endian not in (b"IM", b"MI"):
        if head.startswith(_HDF5_SIGNATURE):
            raise MatFileError(path, "not a MAT-file (plain HDF5 file without the MATLAB header)")
        raise MatFileError(path, "not a MAT-file (no MATLAB v5/v7/v7.3 header)")
    major = head[125] if endian == b"IM" else head[124]
    if major == 1:
        return "5"
    if major == 2:
        if len(head) < _V73_USERBLOCK + len(_HDF5_SIGNATURE):
            raise MatFileError(path, f"truncated v7.3 MAT-file ({size} bytes, no HDF5 data after the header)")
        if head[_V73_USERBLOCK:] != _HDF5_SIGNATURE:
            raise MatFileError(path, "corrupt v7.3 MAT-file (no HDF5 signature after the 512-byte header)")
        return "7.3"
    raise MatFileError(path, f"unsupported MAT-file version (header version byte {major})")


# --------------------------------------------------------------------------
# v5: the top-level element tags, before scipy reads anything.
# --------------------------------------------------------------------------


def _check_v5_elements(path: str, content: bytes, wanted: list[str] | None, bound: int | None) -> None:
    """Refuse a truncated file, or one whose variables to be read declare more than ``bound``.

    scipy can return the variables before a cut without complaint, so the
    file's own byte counts are checked first; a compressed variable's size
    is the byte count of its inflated miMATRIX tag, read by inflating only
    the first bytes of it.
    """
    order = "<" if content[126:128] == b"IM" else ">"
    declared = 0
    for pos, mdtype, nbytes in _v5_elements(path, content, order):
        element = memoryview(content)[pos + 8: pos + 8 + nbytes]
        if mdtype == _MI_COMPRESSED:
            try:
                head = zlib.decompressobj().decompress(element, _V5_HEADER_PEEK)
            except zlib.error as exc:
                raise MatFileError(path, f"corrupt MAT-file (compressed variable at byte {pos}: {exc})") from None
            name, size = _v5_matrix_header(head, order)
        else:
            name, size = _v5_matrix_header(content[pos: pos + _V5_HEADER_PEEK], order)
        if wanted is None or name is None or name in wanted:
            declared += nbytes + 8 if size is None else size
    if bound is not None and declared > bound:
        raise _too_large(path, declared, bound)


def _v5_elements(path: str, content: bytes, order: str):
    """(offset, type, byte count) of each top-level data element; MatFileError where one is cut."""
    size, pos = len(content), _MAT_HEADER_BYTES
    tag = struct.Struct(f"{order}II")
    while pos < size:
        if pos + 8 > size:
            raise MatFileError(path, f"truncated MAT-file (incomplete element header at byte {pos} of {size})")
        mdtype, nbytes = tag.unpack_from(content, pos)
        if mdtype >> 16:  # "small data element": 4 bytes of data inside the tag
            pos += 8
            continue
        end = pos + 8 + nbytes
        if end > size:
            raise MatFileError(path, f"truncated MAT-file (a variable needs {end} bytes, the file has {size})")
        yield pos, mdtype, nbytes
        pos = end


def _v5_matrix_header(head: bytes, order: str) -> tuple[str | None, int | None]:
    """(variable name, element bytes with its tag) of a miMATRIX element's first bytes; None where unknown."""
    if len(head) < 8:
        return None, None
    mdtype, nbytes = struct.unpack_from(f"{order}II", head)
    if mdtype != _MI_MATRIX:
        return None, nbytes + 8
    pos = 8
    for _ in range(2):  # array flags, dimensions
        pos = _v5_subelement(head, pos, order)[1]
    data, _ = _v5_subelement(head, pos, order)
    return (data.decode("latin-1") if data is not None else None), nbytes + 8


def _v5_subelement(head: bytes, pos: int, order: str) -> tuple[bytes | None, int]:
    """(data, offset after it) of the sub-element at ``pos``; data None when ``head`` ends first."""
    if pos + 8 > len(head):
        return None, len(head)
    mdtype, nbytes = struct.unpack_from(f"{order}II", head, pos)
    if mdtype >> 16:  # small format: type and byte count in 4 bytes, up to 4 bytes of data
        return head[pos + 4: pos + 4 + (mdtype >> 16)], pos + 8
    end = pos + 8 + nbytes
    if end > len(head):
        return None, len(head)
    return head[pos + 8: end], end + (-nbytes % 8)


# --------------------------------------------------------------------------
# v5 / v7 (scipy).
# --------------------------------------------------------------------------


def _load_v5(content: bytes, wanted: list[str] | None) -> dict[str, Any]:
    import scipy.io
    from scipy.io.matlab import mat_struct

    options: dict[str, Any] = dict(
        variable_names=wanted, appendmat=False, squeeze_me=True, struct_as_record=False, chars_as_strings=True
    )
    with warnings.catch_warnings():
        # mat_dtype=True drops imaginary parts with only a warning (scipy 1.17):
        # such files are read again with their stored dtypes.
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        try:
            raw = scipy.io.loadmat(io.BytesIO(content), mat_dtype=True, **options)
        except np.exceptions.ComplexWarning:
            raw = scipy.io.loadmat(io.BytesIO(content), mat_dtype=False, **options)
    return {
        name: _from_scipy(value, mat_struct) for name, value in raw.items() if not name.startswith("__")
    }


def _from_scipy(value: Any, mat_struct: type) -> Any:
    """scipy's squeezed objects -> the normalized structure (see module doc)."""
    if isinstance(value, mat_struct):
        return {name: _from_scipy(getattr(value, name), mat_struct) for name in value._fieldnames}
    if type(value) is np.ndarray:  # subclasses (MatlabFunction, MatlabOpaque) stay as they are
        if value.dtype.hasobject:  # cells and struct arrays
            return [_from_scipy(item, mat_struct) for item in value]
        if value.dtype.kind == "U" and value.size == 0:
            return ""
    return value


# --------------------------------------------------------------------------
# v7.3 (HDF5).
# --------------------------------------------------------------------------

_NUMERIC_DTYPES: dict[str, np.dtype] = {
    "double": np.dtype("<f8"),
    "single": np.dtype("<f4"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
    "int16": np.dtype("<i2"),
    "uint16": np.dtype("<u2"),
    "int32": np.dtype("<i4"),
    "uint32": np.dtype("<u4"),
    "int64": np.dtype("<i8"),
    "uint64": np.dtype("<u8"),
    "logical": np.dtype("u1"),
}


def _load_v73(path: str, content: bytes, wanted: list[str] | None, bound: int | None) -> dict[str, Any]:
    import h5py
    from h5py import h5f, h5p

    try:
        # The bytes already read, as an in-memory file image: no second read of the file.
        access = h5p.create(h5p.FILE_ACCESS)
        access.set_fapl_core(backing_store=False)
        access.set_file_image(content)
        f = h5py.File(h5f.open(b"mat-file image", h5f.ACC_RDONLY, fapl=access))
    except OSError as exc:
        raise MatFileError(path, _hdf5_open_problem(exc)) from exc
    with f:
        reader = _H5Reader(f, _Budget(path, bound))
        names = [name for name in f.keys() if name not in _SKIPPED_V73_GROUPS]
        if wanted is not None:
            names = [name for name in names if name in wanted]
        return {name: reader.read(name) for name in names}


def _hdf5_open_problem(exc: OSError) -> str:
    text = str(exc)
    found = re.search(r"truncated file: eof = (\d+), sblock->base_addr = (\d+), stored_eof = (\d+)", text)
    if found:  # HDF5 counts from its base address, after MATLAB's 512-byte header
        has, base, needs = (int(n) for n in found.groups())
        return f"truncated v7.3 MAT-file (it needs {needs + base} bytes, the file has {has + base})"
    return f"corrupt v7.3 MAT-file (HDF5 cannot open it: {text})"


class _Budget:
    """The running total of the datasets' declared sizes, refused once over the bound.

    Counted as each dataset is about to be read (no separate pass over the
    file): HDF5 compresses chunks, and unwritten chunks take no space at
    all, so a small file can declare datasets of any size.
    """

    def __init__(self, path: str, bound: int | None) -> None:
        self.path, self.bound, self.total = path, bound, 0

    def take(self, nbytes: int) -> None:
        self.total += nbytes
        if self.bound is not None and self.total > self.bound:
            raise _too_large(self.path, self.total, self.bound, at_least=True)


class _H5Reader:
    """Converts MATLAB's HDF5 layout into the normalized structure.

    Uses h5py's low-level API with cached memory types: a 500-trial Bpod
    session has ~10^5 small HDF5 objects, so the cost per object (each h5py
    identifier, each type lookup) decides the reading time.
    """

    def __init__(self, f: Any, budget: _Budget) -> None:
        import h5py
        from h5py import h5a, h5d, h5g, h5o, h5r, h5s, h5t

        self._h5py, self._h5a, self._h5d, self._h5g = h5py, h5a, h5d, h5g
        self._h5o, self._h5r, self._h5s, self._h5t = h5o, h5r, h5s, h5t
        self._fid = f.id
        self._root = h5g.open(f.id, b"/")
        self._class_type = h5t.C_S1.copy()  # memory type for MATLAB_class strings
        self._class_type.set_size(64)
        self._class_buf = np.empty((), dtype="S64")
        self._ref_dtype = h5py.ref_dtype
        self._fields_dtype = h5py.vlen_dtype(np.dtype("S1"))
        self._mtypes: dict[str, Any] = {}
        self._budget = budget

    def read(self, name: str) -> Any:
        return self._node(self._h5o.open(self._root, name.encode()))

    # -- dispatch --
    def _node(self, oid: Any) -> Any:
        if isinstance(oid, self._h5g.GroupID):
            return self._group(oid)
        return self._dataset(oid)

    def _deref(self, ref: Any) -> Any:
        return self._node(self._h5r.dereference(ref, self._fid))

    def _matlab_class(self, oid: Any) -> str | None:
        try:
            attr = self._h5a.open(oid, b"MATLAB_class")
        except KeyError:  # rare: struct-array fields, non-MATLAB HDF5
            return None
        try:
            attr.read(self._class_buf, mtype=self._class_type)
            raw = self._class_buf.item()
        except (TypeError, ValueError, OSError):  # a variable-length string (other writers)
            value = np.empty((), dtype=self._h5py.string_dtype())
            attr.read(value)
            raw = value.item()
            raw = raw.encode() if isinstance(raw, str) else raw
        return raw.rstrip(b"\0 ").decode("ascii", "replace")

    def _mtype(self, dtype: np.dtype) -> Any:
        key = dtype.str if not dtype.hasobject else "ref"
        if key not in self._mtypes:
            self._mtypes[key] = self._h5t.py_create(dtype)
        return self._mtypes[key]

    def _read_all(self, dsid: Any, dtype: np.dtype | None = None) -> np.ndarray:
        """Read a dataset (as ``dtype``, default its own) transposed to MATLAB's dims."""
        if dtype is None:
            dtype = dsid.dtype
        self._budget.take(math.prod(dsid.shape) * dtype.itemsize)  # before allocating it
        data = np.empty(dsid.shape, dtype=dtype)
        dsid.read(self._h5s.ALL, self._h5s.ALL, data, mtype=self._mtype(dtype))
        return data.T

    # -- datasets --
    def _dataset(self, dsid: Any) -> Any:
        matlab_class = self._matlab_class(dsid)
        if self._h5a.exists(dsid, b"MATLAB_empty"):
            return _empty_value(matlab_class)
        if matlab_class == "char":
            return _chars(self._read_all(dsid, _CHAR_DTYPE))
        dtype = _NUMERIC_DTYPES.get(matlab_class or "")
        if dtype is not None:
            try:
                data = self._read_all(dsid, dtype)
            except (TypeError, ValueError, OSError):  # complex (compound real/imag)
                return self._other(dsid)
            return _squeeze(data.astype(bool) if matlab_class == "logical" else data)
        if matlab_class == "cell" or dsid.get_type().get_class() == self._h5t.REFERENCE:
            return self._cell(self._read_all(dsid, self._ref_dtype))
        # Objects, function handles, unknown classes: their data as stored.
        return self._other(dsid)

    def _other(self, dsid: Any) -> Any:
        data = self._read_all(dsid)
        names = data.dtype.names or ()
        if "real" in names and "imag" in names:
            data = data["real"] + 1j * data["imag"]
        return _squeeze(data)

    def _cell(self, refs: np.ndarray) -> Any:
        """A cell (object references in MATLAB dims) -> element, list or nested lists."""
        refs = np.squeeze(refs)
        if refs.ndim == 0:
            return self._deref(refs.item())
        return _nested(refs, self._deref)

    # -- groups --
    def _group(self, gid: Any) -> Any:
        if self._h5a.exists(gid, b"MATLAB_sparse"):
            return self._sparse(gid)
        fields, members = self._members(gid)
        if members and self._is_struct_array_field(members[0]):
            return self._struct_array(fields, members)
        return {name: self._node(oid) for name, oid in zip(fields, members)}

    def _members(self, gid: Any) -> tuple[list[str], list[Any]]:
        """Field names in MATLAB's order (MATLAB_fields) and the opened members."""
        if self._h5a.exists(gid, b"MATLAB_fields"):
            attr = self._h5a.open(gid, b"MATLAB_fields")
            names = np.empty(attr.shape, dtype=self._fields_dtype)
            attr.read(names)
            fields = [np.asarray(chars).tobytes().decode("ascii", "replace") for chars in names.ravel()]
            try:
                return fields, [self._h5o.open(gid, name.encode()) for name in fields]
            except KeyError:  # MATLAB_fields disagrees with the members: trust the members
                pass
        fields = [name.decode() for name in gid]
        return fields, [self._h5o.open(gid, name.encode()) for name in fields]

    def _is_struct_array_field(self, oid: Any) -> bool:
        # Fields of a struct array are reference arrays without MATLAB_class.
        return (
            isinstance(oid, self._h5d.DatasetID)
            and not self._h5a.exists(oid, b"MATLAB_class")
            and oid.get_type().get_class() == self._h5t.REFERENCE
        )

    def _struct_array(self, fields: list[str], members: list[Any]) -> Any:
        refs = {name: self._read_all(oid, self._ref_dtype) for name, oid in zip(fields, members)}
        shape = refs[fields[0]].shape
        if any(r.shape != shape for r in refs.values()):
            raise ValueError("struct array fields have different sizes")
        flat = {name: r.ravel() for name, r in refs.items()}  # C order of MATLAB's dims
        index = np.squeeze(np.arange(int(np.prod(shape))).reshape(shape))

        def element(i: Any) -> dict[str, Any]:
            return {name: self._deref(flat[name][int(i)]) for name in fields}

        if index.ndim == 0:
            return element(index.item())
        return _nested(index, element)

    def _sparse(self, gid: Any) -> Any:
        import scipy.sparse

        n_rows = np.empty((), dtype="<u8")
        self._h5a.open(gid, b"MATLAB_sparse").read(n_rows, mtype=self._mtype(n_rows.dtype))
        members = {name.decode() for name in gid}
        jc = self._read_all(self._h5d.open(gid, b"jc")).ravel()
        if "data" in members:
            data = self._read_all(self._h5d.open(gid, b"data")).ravel()
            ir = self._read_all(self._h5d.open(gid, b"ir")).ravel()
        else:  # all-zero sparse matrix
            data, ir = np.zeros(0), np.zeros(0, dtype=np.int64)
        names = data.dtype.names or ()
        if "real" in names and "imag" in names:
            data = data["real"] + 1j * data["imag"]
        if self._matlab_class(gid) == "logical":
            data = data.astype(bool)
        return scipy.sparse.csc_matrix((data, ir, jc), shape=(int(n_rows), len(jc) - 1))


_CHAR_DTYPE = np.dtype("<u2")  # MATLAB chars are UTF-16 code units


def _nested(arr: np.ndarray, convert: Any) -> list[Any]:
    """Apply ``convert`` to each element; nested lists by rows for 2-D and more."""
    if arr.ndim == 1:
        return [convert(item) for item in arr]
    return [_nested(sub, convert) for sub in arr]


def _empty_value(matlab_class: str | None) -> Any:
    """The normalized value of an empty MATLAB array of this class."""
    if matlab_class == "char":
        return ""
    if matlab_class in ("cell", "struct"):
        return []
    if matlab_class == "logical":
        return np.empty(0, dtype=bool)
    return np.empty(0, dtype=_NUMERIC_DTYPES.get(matlab_class or "double", np.dtype("<f8")))


def _squeeze(data: np.ndarray) -> Any:
    """scipy's squeeze_me rule: drop singleton dims, 1x1 -> Python scalar, empty -> shape (0,)."""
    if data.size == 0:
        return np.empty(0, dtype=data.dtype)
    squeezed = np.squeeze(data)
    if squeezed.ndim == 0:
        return squeezed.item()
    return squeezed


def _chars(codes: np.ndarray) -> Any:
    """MATLAB char codes (UTF-16 units, MATLAB dims) -> str or array of str, one per row."""
    if codes.size == 0:
        return ""
    width = codes.shape[-1]
    rows = np.ascontiguousarray(codes, dtype=_CHAR_DTYPE).reshape(-1, width)
    texts = [row.tobytes().decode("utf-16-le", "surrogatepass").rstrip("\0") for row in rows]
    if len(texts) == 1:
        return texts[0]
    return _squeeze(np.array(texts).reshape(codes.shape[:-1]))
