"""mapd.formats.matfile (read_mat, load_mat) and the Bpod file generator test_data/bpodgen.py (no database)."""

from __future__ import annotations

import hashlib
import math
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "test_data"
if str(TEST_DATA) not in sys.path:  # test_data is not a package
    sys.path.insert(0, str(TEST_DATA))

import bpodgen  # noqa: E402

from mapd.formats.matfile import MatFileError, load_mat, read_mat  # noqa: E402

REAL_NAME = "dl25_tw2_20180225_102508.mat"
FORMATS = ("v5", "v7.3")


@pytest.fixture(scope="module")
def real_file() -> Path:
    found = sorted((TEST_DATA / "behavior").rglob(REAL_NAME))
    assert found, f"{REAL_NAME} not found under test_data/behavior"
    return found[0]


@pytest.fixture(scope="module")
def real(real_file: Path) -> dict[str, Any]:
    return load_mat(real_file, ["SessionData"])["SessionData"]


def assert_same(a: Any, b: Any, path: str = "$") -> None:
    """Recursive equality of normalized structures: keys and order, list lengths, dtypes, NaN == NaN."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} != {list(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype, f"{path}: dtype {a.dtype} != {b.dtype}"
        assert a.shape == b.shape, f"{path}: shape {a.shape} != {b.shape}"
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), f"{path}: NaN != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def scipy_simplified(path: Path) -> dict[str, Any]:
    """scipy's own simplify_cells view, with cells of non-structs turned into lists as load_mat does."""

    def lists(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: lists(v) for k, v in value.items()}
        if isinstance(value, list):
            return [lists(v) for v in value]
        if isinstance(value, np.ndarray) and value.dtype.hasobject:
            return [lists(v) for v in value]
        if isinstance(value, np.ndarray) and value.dtype.kind == "U" and value.size == 0:
            return ""
        return value

    raw = scipy.io.loadmat(path, simplify_cells=True, mat_dtype=True)
    return {k: lists(v) for k, v in raw.items() if not k.startswith("__")}


def file_state(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def as_times(value: Any) -> list[float]:
    return np.atleast_1d(np.asarray(value, dtype=float)).tolist()


# --------------------------------------------------------------------------
# The real session.
# --------------------------------------------------------------------------


def test_real_file_values(real: dict[str, Any]) -> None:
    assert real["nTrials"] == 11.0
    np.testing.assert_array_equal(real["TrialTypes"], [0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0])
    assert real["TrialTypes"].dtype == np.float64  # MATLAB double, though stored as uint8
    assert real["Info"] == {
        "BpodVersion": "Bpod 0.7-0.9",
        "SessionDate": "25-Feb-2018",
        "SessionStartTime_UTC": "11:23:28",
        "SessionStartTime_MATLAB": pytest.approx(737116.4746332986),
    }
    assert real["TrialStartTimestamp"].shape == (11,)
    assert real["TrialStartTimestamp"][0] == pytest.approx(3501.308)

    trials = real["RawEvents"]["Trial"]
    assert isinstance(trials, list) and len(trials) == 11
    np.testing.assert_array_equal(trials[0]["States"]["PreSamplePeriod"], [0.5, 0.51])
    assert np.isnan(trials[0]["States"]["TimeOut"]).all()
    assert trials[3]["States"]["SamplePeriod"].shape == (7, 2)  # early licks restart the sample
    assert trials[2]["Events"]["Port2In"] == 3.524  # one event collapses to a float

    raw = real["RawData"]
    names = raw["OriginalStateNamesByNumber"]
    assert len(names) == 11 and names[0] == list(bpodgen.STATE_NAMES)
    for sd, st in zip(raw["OriginalStateData"], raw["OriginalStateTimestamps"]):
        assert len(st) == len(sd) + 1  # entry times plus the final exit

    settings = real["TrialSettings"]
    assert isinstance(settings, list) and len(settings) == 11
    gui = settings[0]["GUI"]
    assert (gui["ProtocolType"], gui["Reversal"], gui["Autolearn"]) == (7.0, 1.0, 1.0)
    assert (gui["SamplePeriod"], gui["DelayPeriod"], gui["AnswerPeriod"]) == (1.2, 1.2, 1.5)
    assert gui["randomID"] == "1111100101111011"
    assert settings[0]["GUIPanels"]["Protocol"] == "ProtocolType"  # a 1x1 cell collapses
    assert settings[0]["GUIMeta"]["Reversal"]["String"] == ["Off", "On"]
    assert real["SettingsFile"]["ProtocolHistory"].shape == (5, 3)


def test_real_file_matches_scipy_simplify_cells(real_file: Path) -> None:
    assert_same(load_mat(real_file), scipy_simplified(real_file))


def test_real_file_event_codes_match_event_names(real: dict[str, Any]) -> None:
    raw = real["RawData"]
    for i, trial in enumerate(real["RawEvents"]["Trial"]):
        codes = np.atleast_1d(raw["OriginalEventData"][i]).astype(int)
        times = np.atleast_1d(raw["OriginalEventTimestamps"][i])
        by_code = {
            name: times[codes == code].tolist() for name, code in bpodgen.EVENT_CODES.items() if (codes == code).any()
        }
        assert by_code == {name: as_times(t) for name, t in trial["Events"].items()}


def test_generated_session_mimics_the_real_one(tmp_path: Path, real: dict[str, Any]) -> None:
    gen = load_mat(bpodgen.write_session(tmp_path / "g.mat", n_trials=11).path)["SessionData"]
    assert list(gen) == list(real)
    for key in ("Info", "RawData", "SettingsFile"):
        assert list(gen[key]) == list(real[key])
    assert list(gen["TrialSettings"][0]) == list(real["TrialSettings"][0])
    assert list(gen["TrialSettings"][0]["GUI"]) == list(real["TrialSettings"][0]["GUI"])
    assert_same(gen["TrialSettings"][0]["GUIPanels"], real["TrialSettings"][0]["GUIPanels"])
    assert_same(gen["TrialSettings"][0]["GUIMeta"], real["TrialSettings"][0]["GUIMeta"])
    assert set(gen["RawEvents"]["Trial"][0]["States"]) == set(real["RawEvents"]["Trial"][0]["States"])
    for key in ("TrialTypes", "TrialStartTimestamp", "MATLABStartTimes", "ProbeTrials", "StimTrials"):
        assert gen[key].dtype == real[key].dtype and gen[key].shape == real[key].shape
    assert gen["RawData"]["OriginalStateNamesByNumber"][0] == real["RawData"]["OriginalStateNamesByNumber"][0]


# --------------------------------------------------------------------------
# v5 and v7.3 give the same structure.
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        dict(n_trials=40, nan_duration_trials=[0, 7], missing_state_trials=[3, 11, 19]),
        dict(n_trials=12, no_gui_fields=True),
        dict(n_trials=9, protocol_type=[7, 2, 5, 6, 3, 4, 1, 7, 5], reversal=2, trial_start_offset=1234.5),
    ],
    ids=["nan-and-missing", "other-lab", "protocols"],
)
def test_v5_and_v73_load_equal(tmp_path: Path, options: dict[str, Any]) -> None:
    v5 = bpodgen.write_session(tmp_path / "a.mat", fmt="v5", **options)
    v73 = bpodgen.write_session(tmp_path / "b.mat", fmt="v7.3", **options)
    assert v73.path.read_bytes()[:10] == b"MATLAB 7.3"
    assert v5.trials == v73.trials
    assert_same(load_mat(v5.path), load_mat(v73.path))


def test_v5_load_matches_scipy_simplify_cells(tmp_path: Path) -> None:
    path = bpodgen.write_session(tmp_path / "s.mat", n_trials=15, missing_state_trials=[2]).path
    assert_same(load_mat(path), scipy_simplified(path))


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_trial_session_collapses(tmp_path: Path, fmt: str) -> None:
    session = bpodgen.write_session(tmp_path / "one.mat", n_trials=1, fmt=fmt)
    data = load_mat(session.path)["SessionData"]
    assert data["nTrials"] == 1.0
    assert isinstance(data["TrialTypes"], float)
    assert isinstance(data["TrialStartTimestamp"], float)
    assert isinstance(data["RawEvents"]["Trial"], dict)  # a 1x1 cell is its element
    assert isinstance(data["TrialSettings"], dict)  # a 1x1 struct array is a struct
    raw = data["RawData"]
    assert raw["OriginalStateNamesByNumber"] == list(bpodgen.STATE_NAMES)
    assert isinstance(raw["OriginalStateData"], np.ndarray) and raw["OriginalStateData"].ndim == 1
    assert len(raw["OriginalStateTimestamps"]) == len(raw["OriginalStateData"]) + 1
    assert data["TrialSettings"]["GUI"]["randomID"] == session.trials[0].bitcode


def test_one_trial_v5_and_v73_equal(tmp_path: Path) -> None:
    a = bpodgen.write_session(tmp_path / "a.mat", n_trials=1, fmt="v5", seed=3).path
    b = bpodgen.write_session(tmp_path / "b.mat", n_trials=1, fmt="v7.3", seed=3).path
    assert_same(load_mat(a), load_mat(b))


def _cells(shape: tuple[int, ...], items: list[Any]) -> np.ndarray:
    arr = np.empty(shape, dtype=object)
    for i, item in enumerate(items):
        arr.flat[i] = item
    return arr


EDGE_VALUES: dict[str, Any] = {
    "empty_double": np.zeros((0, 0)),
    "empty_0x3": np.zeros((0, 3)),
    "empty_uint8": np.zeros((0, 0), dtype=np.uint8),
    "empty_char": "",
    "empty_cell": bpodgen.Cell(np.empty((0, 0), dtype=object)),
    "cell_1x1": bpodgen.Cell(_cells((1, 1), [5.0])),
    "cell_of_empty": bpodgen.Cell(_cells((1, 1), [np.zeros((0, 0))])),
    "cell_nested": bpodgen.Cell(_cells((1, 2), [bpodgen.Cell(_cells((1, 1), [1.0])), "ab"])),
    "cell_strings": bpodgen.cell_row(["a", "bc", ""]),
    "cell_2x2": bpodgen.Cell(_cells((2, 2), [1.0, 2.0, 3.0, 4.0])),
    "cell_column": bpodgen.Cell(_cells((3, 1), ["x", "y", "z"])),
    "cell_structs": bpodgen.cell_row([{"a": 1.0}, {"a": 2.0}]),
    "cell_mixed": bpodgen.cell_row([1.0, {"a": 2.0}]),
    "struct_2x2": bpodgen.StructArray(_cells((2, 2), [{"x": float(i), "s": f"e{i}"} for i in range(4)]), ("x", "s")),
    "struct_1x1_array": bpodgen.StructArray(_cells((1, 1), [{"x": 1.0}]), ("x",)),
    "struct_column": bpodgen.StructArray(_cells((3, 1), [{"x": float(i)} for i in range(3)]), ("x",)),
    "struct_nested": {"a": np.zeros((0, 0)), "b": {"c": "x"}},
    "struct_no_fields": {},
    "logical": True,
    "logical_row": np.array([[True, False]]),
    "int32": np.array([[7]], dtype=np.int32),
    "uint8_row": np.array([[1, 2]], dtype=np.uint8),
    "char_matrix": np.array(["abc", "de"]),
    "char_1": "a",
    "unicode": "µs→ü😀",
    "column": np.ones((3, 1)),
    "array_3d": np.arange(6.0).reshape(1, 2, 3),
    "matrix": np.arange(6.0).reshape(2, 3),
    "nan": float("nan"),
}

EDGE_EXPECTED: dict[str, Any] = {
    "empty_double": np.empty(0),
    "empty_0x3": np.empty(0),
    "empty_uint8": np.empty(0, dtype=np.uint8),
    "empty_char": "",
    "empty_cell": [],
    "cell_1x1": 5.0,
    "cell_of_empty": np.empty(0),
    "cell_nested": [1.0, "ab"],
    "cell_strings": ["a", "bc", ""],
    "cell_2x2": [[1.0, 2.0], [3.0, 4.0]],
    "cell_column": ["x", "y", "z"],
    "cell_structs": [{"a": 1.0}, {"a": 2.0}],
    "cell_mixed": [1.0, {"a": 2.0}],
    "struct_2x2": [[{"x": 0.0, "s": "e0"}, {"x": 1.0, "s": "e1"}], [{"x": 2.0, "s": "e2"}, {"x": 3.0, "s": "e3"}]],
    "struct_1x1_array": {"x": 1.0},
    "struct_column": [{"x": 0.0}, {"x": 1.0}, {"x": 2.0}],
    "struct_nested": {"a": np.empty(0), "b": {"c": "x"}},
    "struct_no_fields": {},
    "logical": True,
    "logical_row": np.array([True, False]),
    "int32": 7,
    "uint8_row": np.array([1, 2], dtype=np.uint8),
    "char_matrix": np.array(["abc", "de "]),  # MATLAB pads char matrix rows with spaces
    "char_1": "a",
    "unicode": "µs→ü😀",
    "column": np.ones(3),
    "array_3d": np.arange(6.0).reshape(2, 3),
    "matrix": np.arange(6.0).reshape(2, 3),
    "nan": float("nan"),
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_edge_values_normalize_the_same_in_both_formats(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"edge_{fmt}.mat"
    bpodgen.write_mat(path, EDGE_VALUES, fmt=fmt)
    loaded = load_mat(path)
    assert sorted(loaded) == sorted(EDGE_VALUES)  # v7.3 lists top-level variables by name
    for name, expected in EDGE_EXPECTED.items():
        assert_same(loaded[name], expected, name)


def test_compressed_v7_file_loads_like_v5(tmp_path: Path) -> None:
    plain = bpodgen.write_session(tmp_path / "plain.mat", n_trials=4).path
    raw = scipy.io.loadmat(plain, mat_dtype=True)
    packed = tmp_path / "packed.mat"
    scipy.io.savemat(packed, {"SessionData": raw["SessionData"]}, do_compression=True, long_field_names=True)
    assert_same(load_mat(packed), load_mat(plain))


def test_v5_complex_values_keep_their_imaginary_part(tmp_path: Path) -> None:
    path = tmp_path / "complex.mat"
    scipy.io.savemat(path, {"z": np.array([[1 + 2j, 3 - 1j]])})
    np.testing.assert_array_equal(load_mat(path)["z"], [1 + 2j, 3 - 1j])


def test_variable_selection(tmp_path: Path) -> None:
    path = tmp_path / "two.mat"
    bpodgen.write_mat(path, {"a": 1.0, "b": "text"}, fmt="v7.3")
    assert load_mat(path) == {"a": 1.0, "b": "text"}
    assert load_mat(path, ["b"]) == {"b": "text"}
    assert load_mat(path, "b") == {"b": "text"}  # a lone name, not its letters
    with pytest.raises(MatFileError, match="no variables c, d"):
        load_mat(path, ["a", "c", "d"])


# --------------------------------------------------------------------------
# Bad inputs.
# --------------------------------------------------------------------------

BAD_PROBLEMS = {
    "empty": "empty file (0 bytes)",
    "truncated": "truncated",
    "not_mat": "not a MAT-file",
    "no_sessiondata": "no variable SessionData",
    "missing_fields": "SessionData lacks RawData, TrialSettings",
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", bpodgen.BAD_KINDS)
def test_bad_inputs_raise_matfileerror_naming_the_file(tmp_path: Path, kind: str, fmt: str) -> None:
    path = bpodgen.write_bad_file(tmp_path / f"dl25_tw2_20180225_102508_{kind}.mat", kind, fmt=fmt)
    before = file_state(path)
    with pytest.raises(MatFileError) as caught:
        load_mat(path, ["SessionData"], required_fields={"SessionData": ["RawData", "TrialSettings"]})
    error = caught.value
    assert path.name in str(error) and error.path == str(path)
    assert BAD_PROBLEMS[kind] in error.problem
    assert str(error) == f"{path}: {error.problem}"
    assert file_state(path) == before


def test_other_unreadable_inputs(tmp_path: Path) -> None:
    import h5py

    cases: dict[str, str] = {}
    missing = tmp_path / "missing.mat"
    cases[str(missing)] = "file not found"
    folder = tmp_path / "folder.mat"
    folder.mkdir()
    cases[str(folder)] = "directory"
    short = tmp_path / "short.mat"
    short.write_bytes(b"MATLAB 5.0 MAT-file")
    cases[str(short)] = "truncated MAT-file"
    plain = tmp_path / "plain.mat"
    with h5py.File(plain, "w") as f:
        f["x"] = [1, 2]
    cases[str(plain)] = "plain HDF5 file"
    header_only = tmp_path / "header_only.mat"
    full = bpodgen.write_session(tmp_path / "full.mat", n_trials=2, fmt="v7.3").path
    header_only.write_bytes(full.read_bytes()[:600])
    cases[str(header_only)] = "truncated"
    for path, problem in cases.items():
        with pytest.raises(MatFileError) as caught:
            load_mat(path)
        assert problem in caught.value.problem and Path(path).name in str(caught.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_cut_anywhere_is_an_error_never_partial_data(tmp_path: Path, fmt: str) -> None:
    data = bpodgen.write_session(tmp_path / "full.mat", n_trials=3, fmt=fmt).path.read_bytes()
    cut = tmp_path / "cut.mat"
    for size in (129, 400, len(data) // 3, len(data) - 1):
        cut.write_bytes(data[:size])
        with pytest.raises(MatFileError, match="cut.mat"):
            load_mat(cut, ["SessionData"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_loading_leaves_the_file_untouched(tmp_path: Path, fmt: str, real_file: Path) -> None:
    path = bpodgen.write_session(tmp_path / "s.mat", n_trials=3, fmt=fmt).path
    for target in (path, real_file):
        before = file_state(target)
        load_mat(target)
        assert file_state(target) == before


# --------------------------------------------------------------------------
# What was read: one read, a checksum of those bytes, regular files only.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_checksum_size_and_mtime_are_of_the_bytes_read(tmp_path: Path, fmt: str, real_file: Path) -> None:
    generated = bpodgen.write_session(tmp_path / "s.mat", n_trials=3, fmt=fmt).path
    for path in (generated, real_file):
        mat = read_mat(path, ["SessionData"])
        status = path.stat()
        assert mat.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        assert (mat.size, mat.mtime) == (status.st_size, status.st_mtime)
        assert_same(mat.variables, load_mat(path, ["SessionData"]))


def _read_in_thread(path: Path, seconds: float = 5.0) -> BaseException | None:
    """read_mat's error, from a thread given ``seconds``: a blocked read fails the test, not hangs it."""
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            read_mat(path)
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome.append(error)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"read_mat({path}) still blocked after {seconds} s"
    return outcome[0]


def test_fifo_socket_device_and_directory_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "dl25_tw2_20180225_102508.mat"
    os.mkfifo(fifo)  # no writer: opening it for reading would block forever
    sock_path = tmp_path / "sock.mat"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    device = tmp_path / "zero.mat"
    device.symlink_to("/dev/zero")  # endless zeros, if it were read
    folder = tmp_path / "folder.mat"
    folder.mkdir()
    try:
        for path, kind in [(fifo, "a FIFO"), (sock_path, "a socket"), (device, "a character device"),
                           (folder, "a directory")]:
            error = _read_in_thread(path)
            assert isinstance(error, MatFileError), error
            assert error.problem == f"not a regular file ({kind})" and not error.transient
            assert str(error) == f"{path}: not a regular file ({kind})"
    finally:
        server.close()


# --------------------------------------------------------------------------
# Declared sizes: refused before anything is inflated.
# --------------------------------------------------------------------------

BOUND = 512 * 2**20  # ingest.max_inflated_bytes' default


@pytest.fixture(scope="module")
def v5_bomb(tmp_path_factory) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("bomb") / "dl25_tw2_20180225_102508.mat"
    return path, bpodgen.write_v5_bomb(path, 600 * 10**6)


def _refused(read) -> MatFileError:
    """The MatFileError ``read`` raises; the test fails if reading grew this process's peak memory.

    ru_maxrss is the peak resident size so far: inflating the content (hundreds
    of MB) would raise it far beyond anything the suite used before.
    """
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(MatFileError) as error:
        read()
    assert time.perf_counter() - started < 1.0
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024  # Linux: KiB
    assert growth < 50 * 2**20, f"peak memory grew by {growth / 2**20:.0f} MiB: the content was inflated"
    return error.value


def test_v5_bomb_is_refused_from_its_declared_size(v5_bomb: tuple[Path, int]) -> None:
    path, declared = v5_bomb
    assert path.stat().st_size < 1_000_000 and declared > 600 * 10**6
    error = _refused(lambda: read_mat(path, ["SessionData"], max_inflated_bytes=BOUND))
    assert str(error) == f"{path}: declares 572.2 MiB of content, over ingest.max_inflated_bytes (512 MiB)"


@pytest.mark.parametrize("order", ["<", ">"], ids=["little-endian IM", "big-endian MI"])
def test_v5_bound_is_exact_in_either_byte_order(tmp_path: Path, order: str) -> None:
    path = tmp_path / "small_bomb.mat"
    declared = bpodgen.write_v5_bomb(path, 3 * 10**6, order=order)
    data = read_mat(path, max_inflated_bytes=declared).variables  # just under: read
    assert data["SessionData"]["TrialStartTimestamp"].shape == (375_000,)
    with pytest.raises(MatFileError, match=f"declares {declared:,} bytes of content, over ingest.max_inflated_bytes"):
        read_mat(path, max_inflated_bytes=declared - 1)
    assert load_mat(path)["SessionData"]["TrialStartTimestamp"].shape == (375_000,)  # no bound: no check


def test_v5_bound_counts_only_the_variables_read(tmp_path: Path, v5_bomb: tuple[Path, int]) -> None:
    notes = tmp_path / "notes.mat"
    scipy.io.savemat(notes, {"Notes": "a small variable before the bomb"})
    both = tmp_path / "both.mat"
    both.write_bytes(notes.read_bytes() + v5_bomb[0].read_bytes()[128:])  # two variables, one file
    assert read_mat(both, ["Notes"], max_inflated_bytes=2**20).variables == {"Notes": "a small variable before the bomb"}
    with pytest.raises(MatFileError, match="declares 572.2 MiB of content"):
        read_mat(both, max_inflated_bytes=BOUND)


def test_v73_datasets_declaring_more_than_the_bound_are_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb73.mat"
    bpodgen.write_v73_bomb(bomb, 3_200_000_000)
    assert bomb.stat().st_size < 100_000
    error = _refused(lambda: read_mat(bomb, ["SessionData"], max_inflated_bytes=BOUND))
    assert error.problem == "declares at least 3 GiB of content, over ingest.max_inflated_bytes (512 MiB)"

    small = tmp_path / "small73.mat"
    declared = bpodgen.write_v73_bomb(small, 4_000_000)
    assert read_mat(small, max_inflated_bytes=declared).variables["SessionData"]["TrialStartTimestamp"].shape == (500_000,)
    with pytest.raises(MatFileError, match="declares at least 4,000,000 bytes of content"):
        read_mat(small, max_inflated_bytes=declared - 1)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_real_sized_session_is_far_under_the_default_bound(tmp_path: Path, fmt: str, real_file: Path) -> None:
    generated = bpodgen.write_session(tmp_path / "s.mat", n_trials=10, fmt=fmt).path
    for path in (generated, real_file):
        assert read_mat(path, ["SessionData"], max_inflated_bytes=BOUND).variables["SessionData"]["nTrials"] > 0


def test_a_file_larger_on_disk_than_the_bound_is_not_read(tmp_path: Path) -> None:
    path = bpodgen.write_session(tmp_path / "s.mat", n_trials=3).path
    size = path.stat().st_size
    with pytest.raises(MatFileError, match=r"on disk, over ingest.max_inflated_bytes"):
        read_mat(path, max_inflated_bytes=size - 1)
    assert read_mat(path, max_inflated_bytes=size).size == size


# --------------------------------------------------------------------------
# The generator.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_generation_is_deterministic(tmp_path: Path, fmt: str) -> None:
    options = dict(n_trials=25, fmt=fmt, nan_duration_trials=[1], missing_state_trials=[4])
    a = bpodgen.write_session(tmp_path / "a" / "s.mat", seed=5, **options)
    b = bpodgen.write_session(tmp_path / "b" / "s.mat", seed=5, **options)
    c = bpodgen.write_session(tmp_path / "c" / "s.mat", seed=6, **options)
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.trials == b.trials
    assert a.path.read_bytes() != c.path.read_bytes()


def test_memoized_v5_writer_gives_savemat_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = bpodgen.write_session(tmp_path / "fast.mat", n_trials=6).path.read_bytes()
    monkeypatch.setattr(bpodgen, "_memo_var_writer", lambda: None)  # plain scipy.io.savemat
    plain = bpodgen.write_session(tmp_path / "plain.mat", n_trials=6).path.read_bytes()
    assert fast == plain


def test_session_path_layout(tmp_path: Path) -> None:
    start = datetime(2018, 2, 25, 10, 25, 8)
    path = bpodgen.session_path(tmp_path, "dl25", "tw2", start)
    assert path == tmp_path / "dl25" / "tw2" / "Session Data" / REAL_NAME
    session = bpodgen.write_session(path, n_trials=2, start=start)
    assert session.path.is_file()
    info = load_mat(path)["SessionData"]["Info"]
    assert info["SessionDate"] == "25-Feb-2018" and info["SessionStartTime_UTC"] == "10:25:08"


@pytest.mark.parametrize("fmt", FORMATS)
def test_expected_values_agree_with_the_file(tmp_path: Path, fmt: str) -> None:
    session = bpodgen.write_session(
        tmp_path / "s.mat",
        n_trials=60,
        fmt=fmt,
        nan_duration_trials=[0, 10, 11],
        missing_state_trials=range(20, 26),
        protocol_type=[7] * 30 + [2] * 5 + [5] * 25,
        reversal=2,
    )
    data = load_mat(session.path)["SessionData"]
    raw = data["RawData"]
    assert [t.skip_reason for t in session.trials[20:26]] == [
        f"missing states: {state}" for state in bpodgen.REQUIRED_STATES
    ]
    assert {t.skip_reason for t in session.trials[30:35]} == {"ProtocolType 2 < 3"}
    assert len(session.ingested) == 60 - 11
    for trial in session.trials:
        i = trial.index
        names = raw["OriginalStateNamesByNumber"][i]
        visited = [names[int(k) - 1] for k in np.atleast_1d(raw["OriginalStateData"][i])]
        assert tuple(visited) == trial.visited_states
        events = data["RawEvents"]["Trial"][i]["Events"]
        assert list(trial.left_licks) == as_times(events.get("Port1In", []))
        assert list(trial.right_licks) == as_times(events.get("Port2In", []))
        gui = data["TrialSettings"][i]["GUI"]
        assert trial.bitcode == gui["randomID"] and len(trial.bitcode) == 16
        assert trial.trial_type == data["TrialTypes"][i]
        assert trial.instruction == ("right" if trial.trial_type == 1 else "left")  # Reversal 2
        assert trial.start_timestamp == data["TrialStartTimestamp"][i]
        assert bool(trial.nan_durations) == (i in (0, 10, 11))
        if trial.skipped:
            assert trial.events == ()
            continue
        states = data["RawEvents"]["Trial"][i]["States"]
        sample_entries = np.atleast_2d(states["SamplePeriod"])[:, 0].tolist()
        assert [e.time for e in trial.events if e.kind == "sample"] == sample_entries
        go = [e for e in trial.events if e.kind == "go"]
        assert len(go) == 1 and go[0].time == np.atleast_2d(states["ResponseCue"])[0, 0]
    # NaN durations: the first trial has no earlier good value, later ones take the last good one.
    first, later = session.trials[0], session.trials[10]
    assert all(e.corrected and e.duration == 0.0 for e in first.events if e.kind != "presample")
    assert {(e.kind, e.duration) for e in later.events if e.corrected} == {("sample", 1.2), ("delay", 1.2), ("go", 1.5)}


def test_outcomes_and_early_licks_follow_the_rules(tmp_path: Path) -> None:
    session = bpodgen.write_session(tmp_path / "s.mat", n_trials=200, protocol_type=[5] * 100 + [6] * 100)
    for trial in session.trials:
        visited = set(trial.visited_states)
        expected = "hit" if "Reward" in visited else "miss" if "TimeOut" in visited else "ignore"
        assert trial.outcome == expected
        early = "EarlyLickDelay" in visited or (trial.protocol_type == 6 and "EarlyLickSample" in visited)
        assert trial.early_lick == ("early" if early else "no early")
    outcomes = {t.outcome for t in session.trials}
    assert outcomes == {"hit", "miss", "ignore"}
    # Protocol 5 ignores EarlyLickSample: some such trials must exist to test it.
    assert any("EarlyLickSample" in t.visited_states and t.early_lick == "no early" for t in session.trials[:100])


def test_other_lab_protocol_is_skipped_for_missing_protocol_type(tmp_path: Path) -> None:
    session = bpodgen.write_session(tmp_path / "s.mat", n_trials=5, no_gui_fields=True)
    assert set(session.skipped.values()) == {"ProtocolType missing"}
    gui = load_mat(session.path)["SessionData"]["TrialSettings"][0]["GUI"]
    assert "ProtocolType" not in gui and "randomID" not in gui


def test_generator_command_line(tmp_path: Path) -> None:
    script = TEST_DATA / "bpodgen.py"
    shown = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=True)
    assert "--n-trials" in shown.stdout
    subprocess.run(
        [sys.executable, str(script), str(tmp_path), "--n-trials", "3", "--days", "2", "--fmt", "v7.3"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    written = sorted(p.name for p in (tmp_path / "dl25" / "tw2" / "Session Data").iterdir())
    assert written == ["dl25_tw2_20180225_102508.mat", "dl25_tw2_20180226_102508.mat"]
