"""JRClust v3 ``*_jrc.mat`` and v4 ``*_res.mat`` files -> spike and unit records (no database).

Both are MATLAB v7.3 files: HDF5 behind a 512-byte MATLAB header, read here
with h5py directly (only the fields below; a real S_clu holds far more).
HDF5 keeps MATLAB's dimensions reversed: MATLAB's nSpikes x 1 ``viTime_spk``
is HDF5 (1, nSpikes), the nSamples x nSites x nClusters mean waveform is HDF5
(nClusters, nSites, nSamples), which is the cluster x site x sample order
returned. Cluster notes are a cell array: object references to char datasets
(uint16 code units, ``MATLAB_class`` 'char'); an empty note is a 2-element
uint64 dataset marked ``MATLAB_empty``.

Fields (FORMATS.md section 2): v3 ``P.sRateHz``, ``viTime_spk``,
``viSite_spk``, ``mrPos_spk``, ``viT_offset_file`` (optional),
``S_clu.{viClu, trWav_raw_clu, csNote_clu, vrPosX_clu, vrPosY_clu,
vrVpp_uv_clu, vrSnr_clu, viSite_clu}``; v4 ``spikeTimes``, ``spikeSites``,
``spikePositions``, ``spikeClusters``, ``meanWfLocalRaw``, ``clusterNotes``,
``clusterCentroids``, ``unitVppRaw``, ``unitSNR``, ``clusterSites``. The
version is told by the content (``viTime_spk`` or ``spikeTimes``), not the name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .ephys_errors import EphysFormatError

__all__ = ["JRClustSorting", "JRClustUnits", "note_quality", "read_jrclust"]

# Curation note -> unit quality, by prefix as the original (its re.match):
# 'single' -> good, 'ok' -> ok, 'multi' or 'mua' -> multi; anything else,
# the empty note included, is 'all'.
NOTE_QUALITIES = (("single", "good"), ("ok", "ok"), ("multi", "multi"), ("mua", "multi"))
DEFAULT_QUALITY = "all"

# Clusters <= 0 are JRClust's noise (0 unassigned, negative deleted): left out.
NOISE_MAX_CLUSTER = 0

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_USERBLOCK = 512  # MATLAB's v7.3 header

# role -> HDF5 path per version; v4 has no sample rate (it lives in the .prm file).
_V3 = {
    "times": "viTime_spk", "sites": "viSite_spk", "positions": "mrPos_spk", "clusters": "S_clu/viClu",
    "waveforms": "S_clu/trWav_raw_clu", "notes": "S_clu/csNote_clu", "x": "S_clu/vrPosX_clu",
    "y": "S_clu/vrPosY_clu", "vpp": "S_clu/vrVpp_uv_clu", "snr": "S_clu/vrSnr_clu", "unit_sites": "S_clu/viSite_clu",
    "sample_rate": "P/sRateHz",
}
_V4 = {
    "times": "spikeTimes", "sites": "spikeSites", "positions": "spikePositions", "clusters": "spikeClusters",
    "waveforms": "meanWfLocalRaw", "notes": "clusterNotes", "centroids": "clusterCentroids",
    "vpp": "unitVppRaw", "snr": "unitSNR", "unit_sites": "clusterSites",
}
_TRIAL_OFFSETS = "viT_offset_file"


@dataclass(frozen=True)
class JRClustUnits:
    """Per-unit arrays: one row per cluster > 0 that has spikes, in cluster order."""

    clusters: np.ndarray  # (n_units,) int64 JRClust cluster number (1-based)
    notes: tuple[str, ...]  # curation note as typed in JRClust ('' when none)
    qualities: tuple[str, ...]  # good | ok | multi | all (NOTE_QUALITIES)
    x: np.ndarray  # (n_units,) float64 (um) position across the probe
    y: np.ndarray  # (n_units,) float64 (um) position along the probe (depth from the tip)
    vpp: np.ndarray  # (n_units,) float64 (uV) peak-to-peak amplitude
    snr: np.ndarray  # (n_units,) float64 signal-to-noise ratio
    sites: np.ndarray  # (n_units,) int64 site of largest amplitude (1-based)
    waveforms: np.ndarray  # (n_units, n_sites, n_samples) float32 (uV) mean raw waveform on the unit's local sites


@dataclass(frozen=True)
class JRClustSorting:
    """One JRClust file: the spikes of its units (noise clusters left out) and the units."""

    path: Path
    version: int  # 3 or 4
    sample_rate: float  # (Hz) v3 P.sRateHz, else the SpikeGLX meta's imSampRate
    spike_times: np.ndarray  # (n_spikes,) int64 (samples) from the recording's first sample
    spike_clusters: np.ndarray  # (n_spikes,) int32 cluster number (> 0)
    spike_sites: np.ndarray  # (n_spikes,) int32 site (1-based)
    spike_positions: np.ndarray  # (n_spikes, 2) float32 (um) x, y
    units: JRClustUnits
    trial_offsets: np.ndarray | None  # (n_files,) int64 (samples) v3 viT_offset_file: start of each per-trial file
    noise_spikes: int  # spikes of clusters <= 0, left out


def note_quality(note: str) -> str:
    """A JRClust curation note -> unit quality (NOTE_QUALITIES)."""
    text = note.strip().lower()
    for prefix, quality in NOTE_QUALITIES:
        if text.startswith(prefix):
            return quality
    return DEFAULT_QUALITY


def read_jrclust(path: str | os.PathLike[str], *, meta_path: str | os.PathLike[str] | None = None) -> JRClustSorting:
    """Read a JRClust v3 or v4 file; raises EphysFormatError naming the file and the problem.

    ``meta_path`` (the probe's SpikeGLX ``.ap.meta``) gives the sample rate
    when the file has none (v4 always).
    """
    import h5py

    path = Path(path)
    _check_header(path)
    try:
        f = h5py.File(path, "r", locking=False)  # locks fail on some network shares
    except OSError as exc:
        raise EphysFormatError(path, _open_problem(exc)) from None
    try:
        with f:
            return _read(f, path, meta_path)
    except EphysFormatError:
        raise
    except (OSError, KeyError, ValueError, TypeError, IndexError) as exc:  # damaged data inside the file
        raise EphysFormatError(path, f"corrupt JRClust file ({type(exc).__name__}: {exc})") from None


def _read(f: Any, path: Path, meta_path: str | os.PathLike[str] | None) -> JRClustSorting:
    version = 3 if _V3["times"] in f else 4 if _V4["times"] in f else None
    if version is None:
        raise EphysFormatError(path, "not a JRClust file (neither v3 viTime_spk nor v4 spikeTimes)")
    layout = _V3 if version == 3 else _V4
    missing = [name for name in layout.values() if name not in f]
    if missing:
        raise EphysFormatError(path, f"JRClust v{version} file lacks {', '.join(missing)}")
    sample_rate = _sample_rate(f, path, layout, meta_path)
    clusters = _vector(f, layout["clusters"]).astype(np.int32, copy=False)
    n_all = clusters.size
    keep = clusters > NOISE_MAX_CLUSTER
    spikes = {
        "times": _spike_vector(f, path, layout["times"], n_all, keep),
        "sites": _spike_vector(f, path, layout["sites"], n_all, keep),
        "positions": _spike_positions(f, path, layout["positions"], n_all, keep),
    }
    clusters = clusters[keep]
    units = _units(f, path, version, layout, clusters)
    offsets = _vector(f, _TRIAL_OFFSETS).astype(np.int64) if version == 3 and _TRIAL_OFFSETS in f else None
    return JRClustSorting(
        path=path,
        version=version,
        sample_rate=sample_rate,
        spike_times=_as_samples(spikes["times"]),
        spike_clusters=clusters,
        spike_sites=spikes["sites"].astype(np.int32, copy=False),
        spike_positions=spikes["positions"],
        units=units,
        trial_offsets=offsets,
        noise_spikes=int(n_all - clusters.size),
    )


def _sample_rate(f: Any, path: Path, layout: dict[str, str], meta_path: Any) -> float:
    if "sample_rate" in layout:
        rate = _vector(f, layout["sample_rate"])
        if rate.size != 1 or not rate[0] > 0:
            raise EphysFormatError(path, f"{layout['sample_rate']} is not one positive number")
        return float(rate[0])
    if meta_path is None:
        raise EphysFormatError(path, "no sample rate: JRClust v4 files have none and no SpikeGLX .ap.meta was given")
    from .spikeglx import read_meta

    return read_meta(meta_path).sample_rate


def _units(f: Any, path: Path, version: int, layout: dict[str, str], clusters: np.ndarray) -> JRClustUnits:
    notes = _notes(f, layout["notes"])
    n_clusters = len(notes)
    if version == 3:
        x, y = _vector(f, layout["x"]), _vector(f, layout["y"])
    else:
        x, y = _pairs(f, path, layout["centroids"], n_clusters)
    per_cluster = {
        layout["vpp"]: _vector(f, layout["vpp"]),
        layout["snr"]: _vector(f, layout["snr"]),
        layout["unit_sites"]: _vector(f, layout["unit_sites"]),
        "x": x,
        "y": y,
    }
    wrong = [f"{name} ({values.size})" for name, values in per_cluster.items() if values.size != n_clusters]
    if wrong:
        raise EphysFormatError(path, f"{n_clusters} cluster notes but {', '.join(wrong)} values")
    if clusters.size and clusters.max() > n_clusters:
        raise EphysFormatError(path, f"spikes of cluster {clusters.max()} but only {n_clusters} clusters described")
    waveforms = _waveforms(f, path, layout["waveforms"], n_clusters)
    present = np.flatnonzero(np.bincount(clusters, minlength=n_clusters + 1)[1:])  # 0-based rows with spikes
    return JRClustUnits(
        clusters=present + 1,
        notes=tuple(notes[i] for i in present),
        qualities=tuple(note_quality(notes[i]) for i in present),
        x=x[present].astype(np.float64),
        y=y[present].astype(np.float64),
        vpp=per_cluster[layout["vpp"]][present].astype(np.float64),
        snr=per_cluster[layout["snr"]][present].astype(np.float64),
        sites=per_cluster[layout["unit_sites"]][present].astype(np.int64),
        waveforms=np.ascontiguousarray(waveforms[present], dtype=np.float32),
    )


# --------------------------------------------------------------------------
# HDF5 access in MATLAB's layout.
# --------------------------------------------------------------------------


def _check_header(path: Path) -> None:
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(_USERBLOCK + len(_HDF5_SIGNATURE))
    except FileNotFoundError:
        raise EphysFormatError(path, "file not found", transient=True) from None
    except OSError as exc:
        raise EphysFormatError(path, f"cannot read file ({exc.strerror or exc})", transient=True) from None
    if size == 0:
        raise EphysFormatError(path, "empty file (0 bytes)")
    if head.startswith(b"MATLAB 5.0"):
        raise EphysFormatError(path, "a MATLAB v5 file; JRClust writes v7.3 (HDF5)")
    if head[_USERBLOCK:] != _HDF5_SIGNATURE and not head.startswith(_HDF5_SIGNATURE):
        if len(head) < _USERBLOCK + len(_HDF5_SIGNATURE) and head.startswith(b"MATLAB 7.3"):
            raise EphysFormatError(path, f"truncated MAT-file ({size} bytes, no HDF5 data after the header)")
        raise EphysFormatError(path, "not a MATLAB v7.3 (HDF5) file")


def _open_problem(exc: OSError) -> str:
    text = str(exc)
    if "truncated file" in text:
        return f"truncated HDF5 file ({text})"
    return f"corrupt HDF5 file ({text})"


def _is_empty(dataset: Any) -> bool:
    return "MATLAB_empty" in dataset.attrs


def _vector(f: Any, name: str) -> np.ndarray:
    """A MATLAB vector (either orientation) as a 1-D array; [] -> empty."""
    dataset = f[name]
    if _is_empty(dataset):
        return np.empty(0)
    return np.asarray(dataset[()]).reshape(-1)


def _spike_vector(f: Any, path: Path, name: str, n: int, keep: np.ndarray) -> np.ndarray:
    values = _vector(f, name)
    if values.size != n:
        raise EphysFormatError(path, f"{name} has {values.size} values for {n} spikes")
    return values[keep]


def _matrix(f: Any, name: str) -> np.ndarray:
    """A 2-D MATLAB array in MATLAB's dims (rows, columns)."""
    dataset = f[name]
    if _is_empty(dataset):
        return np.empty((0, 0))
    return np.atleast_2d(np.asarray(dataset[()])).T


def _pairs(f: Any, path: Path, name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """An n x 2 (or 2 x n) MATLAB matrix -> its two columns."""
    m = _matrix(f, name)
    if m.shape == (2, n) and n != 2:
        m = m.T
    if m.shape != (n, 2):
        raise EphysFormatError(path, f"{name} is {m.shape[0]}x{m.shape[1]}, expected {n}x2")
    return m[:, 0], m[:, 1]


def _spike_positions(f: Any, path: Path, name: str, n: int, keep: np.ndarray) -> np.ndarray:
    x, y = _pairs(f, path, name, n)
    positions = np.empty((int(keep.sum()), 2), dtype=np.float32)
    positions[:, 0] = x[keep]
    positions[:, 1] = y[keep]
    return positions


def _waveforms(f: Any, path: Path, name: str, n_clusters: int) -> np.ndarray:
    """MATLAB nSamples x nSites x nClusters -> (cluster, site, sample), HDF5's own order."""
    dataset = f[name]
    data = np.empty((0, 0, 0)) if _is_empty(dataset) else np.asarray(dataset[()])
    if data.ndim == 2 and n_clusters == 1:  # MATLAB drops a trailing singleton dimension
        data = data[np.newaxis]
    if data.ndim != 3 or data.shape[0] != n_clusters:
        raise EphysFormatError(path, f"{name} has shape {data.shape[::-1]} in MATLAB, expected samples x sites x {n_clusters}")
    return data


def _notes(f: Any, name: str) -> list[str]:
    """A cell array of char arrays -> one str per cluster ('' for an empty note)."""
    dataset = f[name]
    if _is_empty(dataset):
        return []
    return [_char(f[ref]) for ref in np.asarray(dataset[()]).reshape(-1)]


def _char(dataset: Any) -> str:
    if _is_empty(dataset) or dataset.attrs.get("MATLAB_class", b"") not in (b"char", "char"):
        return ""
    codes = np.asarray(dataset[()], dtype="<u2").reshape(-1)
    return codes.tobytes().decode("utf-16-le", "replace").rstrip("\0")


def _as_samples(times: np.ndarray) -> np.ndarray:
    if times.dtype.kind == "f":
        times = np.rint(times)
    return times.astype(np.int64, copy=False)
