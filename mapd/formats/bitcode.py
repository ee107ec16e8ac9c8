"""A probe's ``{h2o}_bitcode.mat`` -> the bitcode, trigger and go cue of each recorded trial (no database).

The rig's NI-DAQ saw each Bpod trial's 16-bit code (the trial's
``GUI.randomID``) and its start trigger; this file lists them per recorded
trial, in recording order. ``bitCodeS`` (char matrix, one 0/1 string per
trial) is required; ``bitcode`` (n x 16, one bit per column), ``sTrig``,
``goCue`` and ``trialNum`` are optional (newer files have them). MATLAB v5 and
v7.3 files are both read, through :func:`mapd.formats.matfile.load_mat`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .ephys_errors import EphysFormatError
from .matfile import MatFileError, load_mat

__all__ = ["BitcodeFile", "in_samples", "read_bitcode"]

CODES = "bitCodeS"
BITS = "bitcode"
TRIAL_STARTS = "sTrig"
GO_CUES = "goCue"
TRIAL_NUMBERS = "trialNum"


@dataclass(frozen=True)
class BitcodeFile:
    """One bitcode file; every array has one entry per recorded trial."""

    path: Path
    codes: tuple[str, ...]  # bitCodeS: each recorded trial's bitcode, '0'/'1' characters
    bits: np.ndarray | None  # (n_trials, n_bits) uint8 bitcode, the same codes bit by bit
    trial_starts: np.ndarray | None  # (n_trials,) float64 sTrig: the trial's start trigger (see in_samples)
    go_cues: np.ndarray | None  # (n_trials,) float64 goCue: the trial's go cue (see in_samples); NaN: none
    trial_numbers: np.ndarray | None  # (n_trials,) int64 trialNum: the Bpod trial number (1-based)

    @property
    def n_trials(self) -> int:
        return len(self.codes)


def read_bitcode(path: str | os.PathLike[str]) -> BitcodeFile:
    """Read a bitcode file; raises EphysFormatError naming the file and the problem."""
    path = Path(path)
    try:
        data = load_mat(path)
    except MatFileError as error:
        raise EphysFormatError(path, error.problem, transient=error.transient) from None
    if CODES not in data:
        raise EphysFormatError(path, f"no variable {CODES}")
    codes = _codes(path, data[CODES])
    n = len(codes)
    bits = _bits(path, data[BITS], codes) if BITS in data else None
    optional = {name: _per_trial(path, data, name, n) for name in (TRIAL_STARTS, GO_CUES, TRIAL_NUMBERS)}
    numbers = optional[TRIAL_NUMBERS]
    if numbers is not None:
        if not (np.all(np.isfinite(numbers)) and np.all(numbers == np.rint(numbers)) and np.all(numbers >= 1)):
            raise EphysFormatError(path, f"{TRIAL_NUMBERS} holds values that are not Bpod trial numbers (integers >= 1)")
        numbers = numbers.astype(np.int64)
    return BitcodeFile(
        path=path,
        codes=codes,
        bits=bits,
        trial_starts=optional[TRIAL_STARTS],
        go_cues=optional[GO_CUES],
        trial_numbers=numbers,
    )


def in_samples(values: np.ndarray, sample_rate: float) -> np.ndarray:
    """``sTrig`` / ``goCue`` values as samples (float64; NaN stays NaN).

    The files hold sample numbers, but some (the Kilosort era) hold seconds:
    as the original pipeline, values with a fractional part are taken as
    seconds and multiplied by ``sample_rate``, then rounded.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size and np.any(finite != np.rint(finite)):
        return np.rint(values * sample_rate)
    return values


def _codes(path: Path, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, np.ndarray) and value.dtype.kind == "U":
        items = [str(item) for item in value.reshape(-1)]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = value  # a cell array of strings
    else:
        raise EphysFormatError(path, f"{CODES} is not a char array (got {type(value).__name__})")
    codes = tuple(item.strip() for item in items)
    if not codes or codes == ("",):
        raise EphysFormatError(path, f"{CODES} is empty")
    bad = [i + 1 for i, code in enumerate(codes) if not code or set(code) - {"0", "1"}]
    if bad:
        raise EphysFormatError(path, f"{CODES} rows {_listed(bad)} are not strings of 0 and 1")
    if len({len(code) for code in codes}) != 1:
        raise EphysFormatError(path, f"{CODES} rows have different lengths ({sorted({len(c) for c in codes})})")
    return codes


def _bits(path: Path, value: Any, codes: tuple[str, ...]) -> np.ndarray:
    width = len(codes[0])
    array = np.asarray(value, dtype=np.float64)
    if array.size != len(codes) * width:
        raise EphysFormatError(path, f"{BITS} has {array.size} values, expected {len(codes)} x {width} ({CODES})")
    array = array.reshape(len(codes), width)
    if not np.all((array == 0) | (array == 1)):
        raise EphysFormatError(path, f"{BITS} holds values other than 0 and 1")
    bits = array.astype(np.uint8)
    expected = np.array([list(code) for code in codes], dtype=np.uint8)
    differ = np.flatnonzero(np.any(bits != expected, axis=1))
    if differ.size:
        raise EphysFormatError(path, f"{BITS} and {CODES} disagree in rows {_listed(differ + 1)}")
    return bits


def _per_trial(path: Path, data: dict[str, Any], name: str, n: int) -> np.ndarray | None:
    if name not in data:
        return None
    try:
        values = np.atleast_1d(np.asarray(data[name], dtype=np.float64)).reshape(-1)
    except (TypeError, ValueError):
        raise EphysFormatError(path, f"{name} is not numeric") from None
    if values.size != n:
        raise EphysFormatError(path, f"{name} has {values.size} values for {n} trials in {CODES}")
    return values


def _listed(numbers: Any, limit: int = 5) -> str:
    numbers = [int(n) for n in numbers]
    shown = ", ".join(map(str, numbers[:limit]))
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")
