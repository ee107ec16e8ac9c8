"""Generate processed-ephys files with known ground truth, for tests and benchmarks.

Writes what lands per probe under an ``ephys_data_paths`` root
(shared/FORMATS.md section 2):

* JRClust v3 ``*_jrc.mat`` and v4 ``*_res.mat`` the way MATLAB's ``save -v7.3``
  lays them out: HDF5 with a 512-byte MATLAB header as user block, arrays
  transposed (HDF5 dims are MATLAB's reversed), ``MATLAB_class`` attributes,
  structs as groups with ``MATLAB_fields``, cluster notes as a cell array of
  object references into ``#refs#`` (char as uint16, an empty note as the
  2-element uint64 dims flagged ``MATLAB_empty``), optionally chunked and
  deflate-compressed as MATLAB does for large variables;
* Kilosort/phy folders (``spike_times.npy`` uint64, ``spike_clusters.npy``,
  ``spike_templates.npy``, ``templates.npy``, ``channel_map.npy``,
  ``channel_positions.npy``, ``amplitudes.npy``, ``whitening_mat_inv.npy``,
  ``params.py``, ``cluster_group.tsv`` / ``cluster_KSLabel.tsv``, ``metrics.csv``);
* ``{h2o}_bitcode.mat`` (MATLAB v5 through scipy.io.savemat, or v7.3), with or
  without ``sTrig`` / ``goCue`` / ``trialNum``, with random codes or the
  ``randomID`` s of a behavior session, starting late and stopping early;
* whole probe folders in each layout, with a real SpikeGLX ``.ap.meta``.

Every writer returns, or takes, an :class:`EphysTruth`: spike times built trial
by trial, so each spike's recorded trial is known by construction (not
computed by any code of mapd), with each unit's expected quality.
Randomness comes from ``numpy.random.default_rng(seed)``.

Size: 10 million spikes, 300 units and 400 trials generate in about 3 s; the
truth's arrays are 160 MB, the JRClust file's 200 MB, and the process peaks
under 0.5 GB (spikes are drawn in blocks of 2**20).
Run ``python test_data/ephysgen.py --help`` for the command line.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from bpodgen import matlab_ref_name

HERE = Path(__file__).resolve().parent
REAL_META = HERE / "spikeglx" / "sample3A_g0_t0.imec.ap.meta"  # a real 3A probe meta, imSampRate=30000

SAMPLE_RATE = 30000.0  # (Hz), the real meta's imSampRate
TRIAL_START_MARGIN = 7500  # samples between a trial's window start and its sTrig (the original's)
N_SITES = 384
LOCAL_SITES = 11  # JRClust's sites per mean waveform
WAVEFORM_SAMPLES = 41  # JRClust mean waveform length
TEMPLATE_SAMPLES = 82  # Kilosort 2 template length

# Notes written into JRClust files and the quality the MAP rules give each (FORMATS.md).
JRCLUST_NOTES = (("single", "good"), ("multi", "multi"), ("ok", "ok"), ("", "all"), ("mua", "multi"),
                 ("noise", "all"), ("single?", "good"), ("to merge", "all"))
# phy labels and their qualities ('noise' clusters are left out, so they are not units).
PHY_LABELS = (("good", "good"), ("mua", "multi"), ("unsorted", "all"))

Sorter = Literal["jrclust3", "jrclust4", "kilosort"]
Layout = Literal["dashed", "compact", "old"]


# --------------------------------------------------------------------------
# Ground truth.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class EphysTruth:
    """What a correct reader plus alignment must find in the generated files."""

    sample_rate: float  # (Hz)
    numbering: str  # 'jrclust' (units 1..n, noise clusters 0 and -1) or 'kilosort' (units 0..n-1, noise after)
    units: np.ndarray  # (n_units,) int cluster id of each real unit with spikes, ascending
    qualities: tuple[str, ...]  # per unit: good | ok | multi | all, as the MAP rules map its note
    notes: tuple[str, ...]  # per unit: the note / phy label written
    empty_clusters: tuple[int, ...]  # clusters described in the file but without spikes (not units)
    noise_clusters: tuple[int, ...]  # clusters whose spikes a reader must leave out
    spike_times: np.ndarray  # (n_spikes,) int64 (samples) ascending, noise included
    spike_clusters: np.ndarray  # (n_spikes,) int32
    spike_trials: np.ndarray  # (n_spikes,) int32 recorded trial of each spike, by construction; -1 before the first
    trial_starts: np.ndarray  # (n_trials,) int64 (samples) window start of each recorded trial
    triggers: np.ndarray  # (n_trials,) int64 (samples) sTrig: trial_starts + TRIAL_START_MARGIN
    go_cues: np.ndarray  # (n_trials,) int64 (samples) each trial's go cue in the recording
    unit_sites: np.ndarray  # (n_units,) int site of largest amplitude (1-based)

    @property
    def n_trials(self) -> int:
        return int(self.trial_starts.size)

    @property
    def go_events(self) -> np.ndarray:
        """(s) each go cue from its trial's trigger: the behavior's ``go`` event time."""
        return (self.go_cues - self.triggers) / self.sample_rate

    def unit_mask(self) -> np.ndarray:
        """(n_spikes,) bool: spikes of real units."""
        return np.isin(self.spike_clusters, self.units)

    def _unit_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(position in units of each spike's cluster, whether it is a unit's spike)."""
        index = np.searchsorted(self.units, self.spike_clusters)
        ok = (index < self.units.size) & (self.units[np.minimum(index, self.units.size - 1)] == self.spike_clusters)
        return index, ok

    def unit_counts(self) -> np.ndarray:
        """(n_units,) spikes per unit."""
        index, ok = self._unit_index()
        return np.bincount(index[ok], minlength=self.units.size)

    def unit_trial_counts(self) -> np.ndarray:
        """(n_units, n_trials) spikes per unit and recorded trial (from spike_trials)."""
        index, ok = self._unit_index()
        ok &= self.spike_trials >= 0
        keys = index[ok].astype(np.int64) * self.n_trials + self.spike_trials[ok]
        return np.bincount(keys, minlength=self.units.size * self.n_trials).reshape(self.units.size, self.n_trials)

    def trial_times(self, unit: int, trial: int) -> np.ndarray:
        """(s) the spikes of cluster ``unit`` in recorded trial ``trial``, from its go cue."""
        mask = (self.spike_clusters == unit) & (self.spike_trials == trial)
        return (self.spike_times[mask] - self.go_cues[trial]) / self.sample_rate

    def unit_times(self, unit: int) -> np.ndarray:
        """(s) all spikes of cluster ``unit``, from the first recorded trial's start."""
        return (self.spike_times[self.spike_clusters == unit] - self.trial_starts[0]) / self.sample_rate


def make_truth(*, n_spikes: int = 20_000, n_units: int = 12, n_trials: int = 20, numbering: str = "jrclust",
               seed: int = 0, sample_rate: float = SAMPLE_RATE, noise_fraction: float = 0.03,
               pre_fraction: float = 0.01, n_empty_clusters: int = 0, n_noise_clusters: int = 2) -> EphysTruth:
    """Spikes of ``n_units`` units (plus noise clusters) over ``n_trials`` recorded trials.

    Trials last 3-7 s, the first window opening 1 s into the recording; some
    spikes come before it (trial -1). Each trial's spikes are drawn inside its
    window, its first and last spikes on the window's first and last samples.
    Units fire at log-normal rates, so a few units have no spike in some trials.
    """
    rng = np.random.default_rng(seed)
    durations = rng.integers(int(3 * sample_rate), int(7 * sample_rate), n_trials)
    starts = int(sample_rate) + np.concatenate([[0], np.cumsum(durations[:-1])]).astype(np.int64)
    times, trials = _spike_times(rng, n_spikes, starts, durations, pre_fraction)
    units, noise, empty = _cluster_ids(numbering, n_units, n_noise_clusters, n_empty_clusters)
    clusters = _draw_clusters(rng, times.size, units, noise, noise_fraction)
    labels = JRCLUST_NOTES if numbering == "jrclust" else PHY_LABELS
    picks = [labels[i % len(labels)] for i in range(units.size)]
    go = starts + TRIAL_START_MARGIN + rng.integers(int(1.5 * sample_rate), int(2.5 * sample_rate), n_trials)
    return EphysTruth(
        sample_rate=sample_rate, numbering=numbering, units=units,
        qualities=tuple(q for _, q in picks), notes=tuple(n for n, _ in picks),
        empty_clusters=empty, noise_clusters=noise, spike_times=times, spike_clusters=clusters,
        spike_trials=trials, trial_starts=starts, triggers=starts + TRIAL_START_MARGIN, go_cues=go.astype(np.int64),
        unit_sites=rng.integers(1, N_SITES - LOCAL_SITES, units.size),
    )


_BLOCK = 1 << 20  # spikes drawn per step: bounds the temporaries of large truths


def _spike_times(rng: np.random.Generator, n_spikes: int, starts: np.ndarray, durations: np.ndarray,
                 pre_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    n_pre = int(n_spikes * pre_fraction)
    per_trial = rng.multinomial(n_spikes - n_pre, durations / durations.sum())
    times = np.empty(n_spikes, dtype=np.int64)
    trials = np.full(n_spikes, -1, dtype=np.int32)
    times[:n_pre] = np.sort(rng.integers(0, int(starts[0]), n_pre))
    trials[n_pre:] = np.repeat(np.arange(starts.size, dtype=np.int32), per_trial)
    for begin in range(n_pre, n_spikes, _BLOCK):  # blocks of spikes, each drawn with array operations
        block = trials[begin:begin + _BLOCK]
        times[begin:begin + block.size] = starts[block] + (rng.random(block.size) * durations[block]).astype(np.int64)
    ends = n_pre + np.cumsum(per_trial)
    firsts = ends - per_trial
    edged = per_trial >= 2  # the window's first and last samples
    times[firsts[edged]] = starts[edged]
    times[ends[edged] - 1] = starts[edged] + durations[edged] - 1
    times[n_pre:].sort()  # windows are disjoint and in order: trials stays aligned
    return times, trials


def _cluster_ids(numbering: str, n_units: int, n_noise: int, n_empty: int):
    if numbering == "jrclust":  # 1..n; 0 unassigned and -1 deleted are noise
        units = np.arange(1, n_units + 1)
        return units, (0, -1)[:n_noise], tuple(range(n_units + 1, n_units + 1 + n_empty))
    if numbering == "kilosort":  # 0..n-1 units, then clusters labelled noise, then empty ones
        units = np.arange(n_units)
        noise = tuple(range(n_units, n_units + n_noise))
        return units, noise, tuple(range(n_units + n_noise, n_units + n_noise + n_empty))
    raise ValueError(f"unknown numbering {numbering!r} (jrclust or kilosort)")


def _draw_clusters(rng: np.random.Generator, n: int, units: np.ndarray, noise: tuple[int, ...],
                   noise_fraction: float) -> np.ndarray:
    rates = rng.lognormal(0.0, 1.2, units.size)
    p = np.concatenate([rates / rates.sum() * (1 - noise_fraction),
                        np.full(len(noise), noise_fraction / max(len(noise), 1))]) if noise else rates / rates.sum()
    ids = np.concatenate([units, np.asarray(noise, dtype=np.int64)]).astype(np.int32)
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    clusters = np.empty(n, dtype=np.int32)
    for begin in range(0, n, _BLOCK):  # independent of time: each unit a Poisson process
        draw = np.searchsorted(cdf, rng.random(min(_BLOCK, n - begin)), side="right")
        np.take(ids, draw, mode="clip", out=clusters[begin:begin + draw.size])
    return clusters


# --------------------------------------------------------------------------
# MATLAB v7.3 writing (HDF5 in MATLAB's layout).
# --------------------------------------------------------------------------

_MATLAB_CLASS = {"float64": "double", "float32": "single", "int8": "int8", "uint8": "uint8", "int16": "int16",
                 "uint16": "uint16", "int32": "int32", "uint32": "uint32", "int64": "int64", "uint64": "uint64",
                 "bool": "logical"}


class MatV73Writer:
    """Writes MATLAB values into an open h5py file as ``save -v7.3`` does."""

    def __init__(self, f: h5py.File, *, compress: bool = False) -> None:
        self.f = f
        self.compress = compress  # MATLAB chunks and deflates variables of more than a few KB
        self._refs: h5py.Group | None = None
        self._n_refs = 0

    @staticmethod
    def _class(obj: Any, name: str) -> None:
        obj.attrs.create("MATLAB_class", np.bytes_(name.encode()))

    def numeric(self, parent: h5py.Group, name: str, values: np.ndarray) -> h5py.Dataset:
        """A numeric array given in MATLAB's dims (a 1-D array is a column)."""
        values = np.asarray(values)
        if values.ndim == 1:
            values = values.reshape(-1, 1)
        if values.size == 0:
            return self.empty(parent, name, _MATLAB_CLASS[values.dtype.name], values.shape)
        data = values.T  # HDF5 dims are MATLAB's reversed; a view when values are Fortran-ordered
        options: dict[str, Any] = {}
        if self.compress and data.nbytes > 4096:
            options = dict(chunks=True, compression="gzip", compression_opts=3)
        dataset = parent.create_dataset(name, data=data.astype(np.uint8) if values.dtype == bool else data, **options)
        self._class(dataset, _MATLAB_CLASS[values.dtype.name])
        if values.dtype == bool:
            dataset.attrs.create("MATLAB_int_decode", np.int32(1))
        return dataset

    def empty(self, parent: h5py.Group, name: str, matlab_class: str, dims: tuple[int, ...] = (0, 0)) -> h5py.Dataset:
        """MATLAB stores an empty array as its dims (uint64) flagged MATLAB_empty."""
        dataset = parent.create_dataset(name, data=np.array(dims, dtype=np.uint64))
        self._class(dataset, matlab_class)
        dataset.attrs.create("MATLAB_empty", np.uint8(1))
        return dataset

    def char(self, parent: h5py.Group, name: str, text: str) -> h5py.Dataset:
        if not text:
            return self.empty(parent, name, "char")
        codes = np.frombuffer(text.encode("utf-16-le"), dtype="<u2").reshape(-1, 1)  # 1xN -> (N, 1)
        dataset = parent.create_dataset(name, data=codes)
        self._class(dataset, "char")
        dataset.attrs.create("MATLAB_int_decode", np.int32(2))
        return dataset

    def char_matrix(self, parent: h5py.Group, name: str, rows: Sequence[str]) -> h5py.Dataset:
        width = max(len(row) for row in rows)
        codes = np.array([[ord(c) for c in row.ljust(width)] for row in rows], dtype="<u2")  # MATLAB n x width
        dataset = parent.create_dataset(name, data=codes.T)
        self._class(dataset, "char")
        dataset.attrs.create("MATLAB_int_decode", np.int32(2))
        return dataset

    def struct(self, parent: h5py.Group, name: str, fields: Sequence[str]) -> h5py.Group:
        group = parent.create_group(name)
        self._class(group, "struct")
        names = np.empty(len(fields), dtype=h5py.vlen_dtype(np.dtype("S1")))
        for i, field in enumerate(fields):
            names[i] = np.frombuffer(field.encode("ascii"), dtype="S1")
        group.attrs.create("MATLAB_fields", names, dtype=h5py.vlen_dtype(np.dtype("S1")))
        return group

    def cell_of_strings(self, parent: h5py.Group, name: str, texts: Sequence[str]) -> h5py.Dataset:
        """An n x 1 cell of char arrays ('' as MATLAB's [] : an empty double, as cell() leaves it)."""
        refs = np.empty((1, len(texts)), dtype=h5py.ref_dtype)  # MATLAB n x 1 -> HDF5 (1, n)
        for i, text in enumerate(texts):
            ref_name = self._new_ref_name()
            target = self.char(self._ref_group(), ref_name, text) if text else \
                self.empty(self._ref_group(), ref_name, "double")
            refs[0, i] = target.ref
        dataset = parent.create_dataset(name, data=refs)
        self._class(dataset, "cell")
        return dataset

    def _ref_group(self) -> h5py.Group:
        if self._refs is None:
            self._refs = self.f.create_group("#refs#")
            self.empty(self._refs, "a", "canonical empty")  # MATLAB's '#refs#/a'
            self._n_refs = 1
        return self._refs

    def _new_ref_name(self) -> str:
        self._ref_group()
        self._n_refs += 1
        return matlab_ref_name(self._n_refs - 1)


def _matlab_header(created: datetime) -> bytes:
    text = f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: {created:%a %b %d %H:%M:%S %Y} HDF5 schema 1.00 ."
    return text.encode("ascii").ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM"


def open_v73(path: str | os.PathLike[str]) -> h5py.File:
    """An HDF5 file with MATLAB's 512-byte user block (write the header with :func:`close_v73`)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return h5py.File(out, "w", userblock_size=512, libver="earliest")


def close_v73(f: h5py.File, created: datetime = datetime(2018, 2, 25, 14, 2, 11)) -> None:
    path = f.filename
    f.close()
    with open(path, "r+b") as fh:
        fh.write(_matlab_header(created).ljust(512, b"\x00"))


# --------------------------------------------------------------------------
# JRClust.
# --------------------------------------------------------------------------


def _per_cluster(truth: EphysTruth, seed: int) -> dict[str, np.ndarray]:
    """Per-cluster values for clusters 1..n_clusters (units, then empty clusters)."""
    rng = np.random.default_rng(seed + 1)
    n = truth.units.size + len(truth.empty_clusters)
    sites = np.concatenate([truth.unit_sites, rng.integers(1, N_SITES, len(truth.empty_clusters))])
    t = np.arange(WAVEFORM_SAMPLES) - WAVEFORM_SAMPLES // 3
    shape = -np.exp(-0.5 * (t / 2.0) ** 2) + 0.4 * np.exp(-0.5 * ((t - 6) / 4.0) ** 2)
    vpp = rng.uniform(50, 300, n)
    falloff = np.exp(-np.arange(LOCAL_SITES) / 3.0)
    waveforms = (vpp[:, None, None] * falloff[None, :, None] * shape[None, None, :]).astype(np.float32)
    return {"sites": sites, "x": _site_x(sites), "y": _site_y(sites), "vpp": vpp, "snr": rng.uniform(2, 15, n),
            "waveforms": waveforms}  # waveforms: (cluster, site, sample)


def _site_x(sites: np.ndarray) -> np.ndarray:
    """Neuropixels 1.0 checkerboard: x of 1-based site."""
    return np.array([16.0, 48.0, 0.0, 32.0])[(np.asarray(sites) - 1) % 4]


def _site_y(sites: np.ndarray) -> np.ndarray:
    return 20.0 * ((np.asarray(sites) - 1) // 2)


def _spike_geometry(truth: EphysTruth, per_cluster: dict[str, np.ndarray], seed: int):
    """(sites int32, positions (2, n) float32) per spike: its unit's site, positions jittered around it."""
    rng = np.random.default_rng(seed + 2)
    n_units = truth.units.size
    lookup = np.ones(int(truth.spike_clusters.max(initial=0)) + 1, dtype=np.int32)  # noise (<= 0): site 1
    lookup[truth.units] = per_cluster["sites"][:n_units]
    sites = np.take(lookup, truth.spike_clusters, mode="clip")  # negative clusters clip to 0, noise
    positions = np.empty((2, sites.size), dtype=np.float32)
    jitter = np.empty(sites.size, dtype=np.float32)
    for row, coordinate in enumerate((_site_x, _site_y)):
        by_site = coordinate(np.arange(0, N_SITES + 1)).astype(np.float32)  # indexed by the 1-based site
        np.take(by_site, sites, out=positions[row])
        rng.standard_normal(dtype=np.float32, out=jitter)
        jitter *= 3.0  # (um)
        positions[row] += jitter
    return sites, positions


def write_jrclust(path: str | os.PathLike[str], truth: EphysTruth, *, version: int = 3, seed: int = 0,
                  compress: bool = False, omit: Sequence[str] = (), shorten: Sequence[str] = (),
                  trial_offsets: bool = True, sample_rate: bool = True) -> Path:
    """Write a JRClust v3 (``version=3``) or v4 file for ``truth`` (numbering 'jrclust').

    ``omit``: fields (HDF5 paths, e.g. ``S_clu/vrSnr_clu``) left out; ``shorten``:
    fields written one spike or cluster short (an inconsistent file). v3 writes
    ``viT_offset_file`` (the trial window starts) unless ``trial_offsets`` is False,
    and ``P.sRateHz`` unless ``sample_rate`` is False.
    """
    if truth.numbering != "jrclust":
        raise ValueError("JRClust files need a truth made with numbering='jrclust'")
    values, notes_name, notes = _jrclust_values(truth, version, seed, trial_offsets, sample_rate)
    f = open_v73(path)
    writer = MatV73Writer(f, compress=compress)
    groups: dict[str, list[str]] = {}
    for name in [*values, notes_name]:
        group, _, leaf = name.rpartition("/")
        if group and name not in omit:
            groups.setdefault(group, []).append(leaf)
    for group, fields in groups.items():
        writer.struct(f, group, fields)
    for name, value in values.items():
        if name not in omit:
            group, _, leaf = name.rpartition("/")
            writer.numeric(f[group] if group else f, leaf, _drop_last(value, name) if name in shorten else value)
    if notes_name not in omit:
        group, _, leaf = notes_name.rpartition("/")
        writer.cell_of_strings(f[group] if group else f, leaf, notes[:-1] if notes_name in shorten else notes)
    close_v73(f)
    return Path(path)


def _jrclust_values(truth: EphysTruth, version: int, seed: int, trial_offsets: bool, sample_rate: bool):
    """({HDF5 path: array in MATLAB dims}, notes field, notes) of a JRClust file."""
    per_cluster = _per_cluster(truth, seed)
    sites, positions = _spike_geometry(truth, per_cluster, seed)
    names = _jrclust_names(version)
    values: dict[str, np.ndarray] = {}
    if version == 3 and sample_rate:
        values["P/sRateHz"] = np.array([[truth.sample_rate]])
    values.update({
        names["times"]: truth.spike_times.astype(np.int32), names["sites"]: sites,
        names["positions"]: positions.T,  # MATLAB nSpikes x 2 (a view of the (2, n) array)
        names["clusters"]: truth.spike_clusters,
        # MATLAB nSamples x nSites x nClusters; per_cluster holds HDF5's (cluster, site, sample)
        names["waveforms"]: per_cluster["waveforms"].T,
    })
    if version == 3:
        values.update({"S_clu/vrPosX_clu": per_cluster["x"], "S_clu/vrPosY_clu": per_cluster["y"]})
        if trial_offsets:
            values["viT_offset_file"] = truth.trial_starts.astype(np.float64).reshape(1, -1)
    else:
        values["clusterCentroids"] = np.column_stack([per_cluster["x"], per_cluster["y"]])
    values.update({names["vpp"]: per_cluster["vpp"], names["snr"]: per_cluster["snr"],
                   names["unit_sites"]: per_cluster["sites"].astype(np.float64)})
    return values, names["notes"], list(truth.notes) + ["" for _ in truth.empty_clusters]


def _drop_last(value: np.ndarray, name: str) -> np.ndarray:
    """One spike or cluster fewer: the last row (the last page of a waveform array)."""
    if value.ndim == 3:
        return value[:, :, :-1]
    if value.ndim == 2 and value.shape[0] == 1:  # a row vector
        return value[:, :-1]
    return value[:-1]


def _jrclust_names(version: int) -> dict[str, str]:
    if version == 3:
        return {"times": "viTime_spk", "sites": "viSite_spk", "clusters": "S_clu/viClu", "positions": "mrPos_spk",
                "vpp": "S_clu/vrVpp_uv_clu", "snr": "S_clu/vrSnr_clu", "unit_sites": "S_clu/viSite_clu",
                "waveforms": "S_clu/trWav_raw_clu", "notes": "S_clu/csNote_clu"}
    if version == 4:
        return {"times": "spikeTimes", "sites": "spikeSites", "clusters": "spikeClusters", "positions": "spikePositions",
                "vpp": "unitVppRaw", "snr": "unitSNR", "unit_sites": "clusterSites", "waveforms": "meanWfLocalRaw",
                "notes": "clusterNotes"}
    raise ValueError(f"JRClust version {version} (3 or 4)")


def jrclust_unit_values(truth: EphysTruth, seed: int = 0) -> dict[str, np.ndarray]:
    """The per-unit values :func:`write_jrclust` writes (rows in truth.units order)."""
    per_cluster = _per_cluster(truth, seed)
    n = truth.units.size
    return {key: value[:n] for key, value in per_cluster.items()}


# --------------------------------------------------------------------------
# Kilosort / phy.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class KilosortExpected:
    """Per-unit values a reader must derive from the phy folder (rows in truth.units order)."""

    sites: np.ndarray  # (n_units,) 1-based recording channel of the template's peak
    x: np.ndarray  # (um)
    y: np.ndarray  # (um)
    amplitude: np.ndarray | None  # metrics.csv amplitude (uV), None without metrics
    snr: np.ndarray | None
    waveform_scale: float  # templates are multiplied by this (whitening_mat_inv = scale * identity)


def write_kilosort(folder: str | os.PathLike[str], truth: EphysTruth, *, seed: int = 0, n_channels: int = 64,
                   labels: str | None = "cluster_group", params_rate: bool = True, templates: bool = True,
                   spike_templates: bool = True, metrics: bool = False, whitening: bool = True,
                   amplitudes: bool = True, shorten_clusters: bool = False) -> KilosortExpected:
    """Write a phy folder for ``truth`` (numbering 'kilosort').

    ``labels``: 'cluster_group' (phy), 'KSLabel' (Kilosort) or None (no label
    file); noise clusters are labelled 'noise' in either. The channel map skips
    channel 2 (as a reference channel would be), so channel index != channel id.
    """
    if truth.numbering != "kilosort":
        raise ValueError("Kilosort folders need a truth made with numbering='kilosort'")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 3)
    np.save(out / "spike_times.npy", truth.spike_times.astype(np.uint64).reshape(-1, 1))
    clusters = truth.spike_clusters[:-1] if shorten_clusters else truth.spike_clusters
    np.save(out / "spike_clusters.npy", clusters.astype(np.int32))
    if amplitudes:
        np.save(out / "amplitudes.npy", rng.uniform(10, 40, truth.spike_times.size).reshape(-1, 1))
    _write_params(out / "params.py", truth.sample_rate if params_rate else None, n_channels)
    if labels:
        _write_labels(out, truth, labels)
    channel_map = np.concatenate([[0, 1], np.arange(3, n_channels + 1)]).astype(np.int32)  # channel 2 unused
    positions = np.column_stack([_site_x(channel_map + 1), _site_y(channel_map + 1)])
    np.save(out / "channel_map.npy", channel_map.reshape(-1, 1))
    np.save(out / "channel_positions.npy", positions)
    peaks = rng.integers(0, n_channels, truth.units.size)  # channel index of each unit's template peak
    scale = 2.0 if whitening else 1.0
    if templates:
        _write_templates(out, truth, peaks, n_channels, rng, spike_templates, whitening)
    expected_metrics = _write_metrics(out, truth, rng) if metrics else (None, None)
    return KilosortExpected(sites=channel_map[peaks] + 1, x=positions[peaks, 0], y=positions[peaks, 1],
                            amplitude=expected_metrics[0], snr=expected_metrics[1], waveform_scale=scale)


def _write_params(path: Path, sample_rate: float | None, n_channels: int) -> None:
    lines = ["dat_path = 'dl25_g0_t0.imec.ap.bin'", f"n_channels_dat = {n_channels + 1}", "dtype = 'int16'",
             "offset = 0", "hp_filtered = False"]
    if sample_rate is not None:
        lines.insert(4, f"sample_rate = {float(sample_rate)!r}")
    # Never run: a reader that exec()s params.py would create this marker file.
    lines.append(f"marker = open({str(path.parent / 'EXECUTED')!r}, 'w')")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_labels(folder: Path, truth: EphysTruth, kind: str) -> None:
    name, column = {"cluster_group": ("cluster_group.tsv", "group"), "KSLabel": ("cluster_KSLabel.tsv", "KSLabel")}[kind]
    rows = [f"{int(c)}\t{label}" for c, label in zip(truth.units, truth.notes)]
    rows += [f"{c}\tnoise" for c in truth.noise_clusters] + [f"{c}\tgood" for c in truth.empty_clusters]
    (folder / name).write_text(f"cluster_id\t{column}\n" + "\n".join(rows) + "\n", encoding="utf-8")


def _write_templates(folder: Path, truth: EphysTruth, peaks: np.ndarray, n_channels: int, rng: np.random.Generator,
                     spike_templates: bool, whitening: bool) -> None:
    """One template per cluster id (units, noise, empty); each unit's spikes use its own
    template 90% of the time (others: a random template, as after phy merges)."""
    n_templates = truth.units.size + len(truth.noise_clusters) + len(truth.empty_clusters)
    t = np.arange(TEMPLATE_SAMPLES) - TEMPLATE_SAMPLES // 2
    shape = (-np.exp(-0.5 * (t / 2.5) ** 2)).astype(np.float32)
    all_peaks = np.concatenate([peaks, rng.integers(0, n_channels, n_templates - peaks.size)])
    distance = np.abs(np.arange(n_channels)[None, :] - all_peaks[:, None])
    weight = np.exp(-distance / 2.0).astype(np.float32)  # (template, channel)
    templates = shape[None, :, None] * weight[:, None, :]
    np.save(folder / "templates.npy", templates.astype(np.float32))
    if whitening:
        np.save(folder / "whitening_mat_inv.npy", 2.0 * np.eye(n_channels))
    if spike_templates:
        own = np.asarray(truth.spike_clusters, dtype=np.int64).copy()
        other = rng.random(own.size) < 0.1
        own[other] = rng.integers(0, n_templates, int(other.sum()))
        np.save(folder / "spike_templates.npy", own.astype(np.uint32))


def _write_metrics(folder: Path, truth: EphysTruth, rng: np.random.Generator):
    amplitude = rng.uniform(40, 400, truth.units.size)
    snr = rng.uniform(1, 10, truth.units.size)
    snr[0] = np.inf  # the original set inf SNRs to 0; here unknown (NaN)
    rows = [f"{i},{int(c)},{float(a)!r},{float(s)!r},{float(rng.uniform(0.5, 20))!r},0" for i, (c, a, s) in
            enumerate(zip(truth.units, amplitude, snr))]
    (folder / "metrics.csv").write_text(",cluster_id,amplitude,snr,firing_rate,epoch_name\n" + "\n".join(rows) + "\n",
                                        encoding="utf-8")
    snr = snr.copy()
    snr[0] = np.nan
    return amplitude, snr


# --------------------------------------------------------------------------
# Bitcode files.
# --------------------------------------------------------------------------


def random_codes(n: int, seed: int = 0, width: int = 16) -> list[str]:
    """n distinct random bitcodes (as Bpod's randomID)."""
    rng = np.random.default_rng(seed + 4)
    values = rng.choice(1 << width, size=n, replace=False)
    return [format(int(v), f"0{width}b") for v in values]


def behavior_bitcodes(path: str | os.PathLike[str]) -> dict[int, str]:
    """{Bpod trial number: randomID} of a v5 behavior file (scipy; no mapd code)."""
    import scipy.io

    data = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False,
                            variable_names=["SessionData"])["SessionData"]
    settings = np.atleast_1d(data.TrialSettings)
    return {i + 1: str(s.GUI.randomID) for i, s in enumerate(settings) if hasattr(s.GUI, "randomID")}


def write_bitcode(path: str | os.PathLike[str], codes: Sequence[str], *, triggers: np.ndarray | None = None,
                  go_cues: np.ndarray | None = None, trial_numbers: Sequence[int] | None = None,
                  fmt: str = "v5", omit_codes: bool = False) -> Path:
    """Write a ``{h2o}_bitcode.mat``: bitCodeS (n x 16 char), bitcode (n x 16 double), and
    when given sTrig (``triggers``, samples), goCue (samples), trialNum."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    bits = np.array([[float(c) for c in code] for code in codes])
    variables: dict[str, np.ndarray] = {} if omit_codes else {"bitCodeS": np.array(list(codes))}
    variables["bitcode"] = bits
    for name, values in (("sTrig", triggers), ("goCue", go_cues), ("trialNum", trial_numbers)):
        if values is not None:
            variables[name] = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    if fmt == "v5":
        import scipy.io

        scipy.io.savemat(out, variables, format="5", do_compression=False)
    elif fmt == "v7.3":
        f = open_v73(out)
        writer = MatV73Writer(f)
        for name, values in variables.items():
            if name == "bitCodeS":
                writer.char_matrix(f, name, list(values))
            else:
                writer.numeric(f, name, values)
        close_v73(f)
    else:
        raise ValueError(f"unknown format {fmt!r} (v5 or v7.3)")
    return out


def recorded_trials(behavior: dict[int, str] | Sequence[str], *, skip_first: int = 0,
                    drop_last: int = 0) -> tuple[list[str], list[int]]:
    """(codes, Bpod trial numbers) of a recording that started ``skip_first`` trials
    late and stopped ``drop_last`` trials early."""
    if not isinstance(behavior, dict):
        behavior = {i + 1: code for i, code in enumerate(behavior)}
    numbers = sorted(behavior)
    kept = numbers[skip_first: len(numbers) - drop_last]
    return [behavior[n] for n in kept], kept


# --------------------------------------------------------------------------
# Probe folders and damaged files.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratedProbe:
    """A written probe folder and what it should give."""

    folder: Path  # the probe folder
    sorting: Path  # JRClust file or phy folder
    bitcode: Path
    meta: Path | None
    sorter: str
    truth: EphysTruth
    codes: tuple[str, ...]  # recorded bitcodes
    trial_numbers: tuple[int, ...]  # Bpod trial number of each recorded trial
    kilosort: KilosortExpected | None = None


def probe_folder(root: str | os.PathLike[str], h2o: str, session_date: date, probe: int, layout: Layout) -> Path:
    """``root/{h2o}/{YYYY-MM-DD}/{N}`` (dashed), ``.../{YYYYMMDD}/{N}`` (compact) or ``.../{YYYY-MM-DD}-{N}`` (old)."""
    if layout == "dashed":
        return Path(root) / h2o / session_date.isoformat() / str(probe)
    if layout == "compact":
        return Path(root) / h2o / f"{session_date:%Y%m%d}" / str(probe)
    if layout == "old":
        return Path(root) / h2o / f"{session_date.isoformat()}-{probe}"
    raise ValueError(f"unknown layout {layout!r} (dashed, compact or old)")


def write_probe(root: str | os.PathLike[str], *, sorter: Sorter = "jrclust3", layout: Layout = "dashed",
                h2o: str = "dl25", session_date: date = date(2018, 2, 25), probe: int = 1,
                behavior: dict[int, str] | Sequence[str] | None = None, skip_first: int = 0, drop_last: int = 0,
                n_spikes: int = 20_000, n_units: int = 12, seed: int = 0, strig: bool = True, go_cue: bool = True,
                trial_num: bool = True, meta: bool = True, bitcode_fmt: str = "v5", compress: bool = False,
                **writer_options: Any) -> GeneratedProbe:
    """A whole probe folder: sorting output, bitcode file and (``meta``) a real .ap.meta.

    The recorded trials are ``behavior``'s (Bpod trial number -> code; default 20
    random codes) less ``skip_first`` and ``drop_last``.
    """
    behavior = behavior if behavior is not None else random_codes(20, seed)
    codes, numbers = recorded_trials(behavior, skip_first=skip_first, drop_last=drop_last)
    truth = make_truth(n_spikes=n_spikes, n_units=n_units, n_trials=len(codes), seed=seed,
                       numbering="kilosort" if sorter == "kilosort" else "jrclust")
    folder = probe_folder(root, h2o, session_date, probe, layout)
    folder.mkdir(parents=True, exist_ok=True)
    expected = None
    if sorter == "kilosort":
        sorting = folder / "kilosort2"
        expected = write_kilosort(sorting, truth, seed=seed, **writer_options)
    else:
        version = 3 if sorter == "jrclust3" else 4
        name = f"{h2o}_g0_t0.imec.ap_imec3_opt3_jrc.mat" if version == 3 else f"{h2o}_g0_t0.imec.ap_res.mat"
        sorting = write_jrclust(folder / name, truth, version=version, seed=seed, compress=compress, **writer_options)
    bitcode = write_bitcode(folder / f"{h2o}_bitcode.mat", codes, triggers=truth.triggers if strig else None,
                            go_cues=truth.go_cues if go_cue else None, trial_numbers=numbers if trial_num else None,
                            fmt=bitcode_fmt)
    meta_path = None
    if meta:
        meta_path = folder / f"{h2o}_{session_date.isoformat()}_{probe}_g0_t0.imec.ap.meta"
        shutil.copyfile(REAL_META, meta_path)
    return GeneratedProbe(folder, sorting, bitcode, meta_path, sorter, truth, tuple(codes), tuple(numbers), expected)


def damage(path: str | os.PathLike[str], how: str) -> Path:
    """Damage a written file in place: 'truncate' (keep half its bytes), 'garble' (overwrite
    HDF5 metadata after the header with noise), 'empty' (0 bytes), 'text' (not a MAT-file)."""
    out = Path(path)
    data = out.read_bytes()
    if how == "truncate":
        out.write_bytes(data[: len(data) // 2])
    elif how == "garble":
        noise = np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()
        out.write_bytes(data[:600] + noise + data[600 + len(noise):])
    elif how == "empty":
        out.write_bytes(b"")
    elif how == "text":
        out.write_text("JRClust crashed before saving\n", encoding="ascii")
    else:
        raise ValueError(f"unknown damage {how!r} (truncate, garble, empty, text)")
    return out


# --------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a processed-ephys probe folder (JRClust v3/v4 or Kilosort, bitcode, .ap.meta) "
                    "with known ground truth.",
        epilog="Example: python test_data/ephysgen.py /tmp/ephys --sorter jrclust3 --spikes 10000000 --units 300 "
               "--trials 400",
    )
    parser.add_argument("root", help="ephys data root; the probe folder goes below it")
    parser.add_argument("--sorter", choices=("jrclust3", "jrclust4", "kilosort"), default="jrclust3")
    parser.add_argument("--layout", choices=("dashed", "compact", "old"), default="dashed")
    parser.add_argument("--h2o", default="dl25")
    parser.add_argument("--date", default="2018-02-25", help="session date YYYY-MM-DD")
    parser.add_argument("--probe", type=int, default=1)
    parser.add_argument("--spikes", type=int, default=20_000)
    parser.add_argument("--units", type=int, default=12)
    parser.add_argument("--trials", type=int, default=20, help="behavior trials (random codes) without --behavior")
    parser.add_argument("--behavior", help="take the bitcodes from this v5 behavior file's randomIDs")
    parser.add_argument("--skip-first", type=int, default=0, help="recording started this many trials late")
    parser.add_argument("--drop-last", type=int, default=0, help="recording stopped this many trials early")
    parser.add_argument("--no-strig", action="store_true", help="bitcode file without sTrig")
    parser.add_argument("--no-gocue", action="store_true", help="bitcode file without goCue")
    parser.add_argument("--no-trialnum", action="store_true", help="bitcode file without trialNum")
    parser.add_argument("--bitcode-fmt", choices=("v5", "v7.3"), default="v5")
    parser.add_argument("--compress", action="store_true", help="deflate large JRClust variables, as MATLAB does")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    behavior = behavior_bitcodes(args.behavior) if args.behavior else random_codes(args.trials, args.seed)
    started = time.perf_counter()
    generated = write_probe(
        args.root, sorter=args.sorter, layout=args.layout, h2o=args.h2o, session_date=date.fromisoformat(args.date),
        probe=args.probe, behavior=behavior, skip_first=args.skip_first, drop_last=args.drop_last,
        n_spikes=args.spikes, n_units=args.units, seed=args.seed, strig=not args.no_strig,
        go_cue=not args.no_gocue, trial_num=not args.no_trialnum, bitcode_fmt=args.bitcode_fmt, compress=args.compress,
    )
    elapsed = time.perf_counter() - started
    truth = generated.truth
    print(f"{generated.folder}: {args.sorter}, {truth.spike_times.size:,} spikes, {truth.units.size} units, "
          f"{truth.n_trials} recorded trials (Bpod {generated.trial_numbers[0]}..{generated.trial_numbers[-1]}); "
          f"{elapsed:.1f} s, peak RSS {_peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
