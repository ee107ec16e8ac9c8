"""A Kilosort / phy output folder -> spike and unit records (no database).

Required: ``spike_times.npy`` (samples) and ``spike_clusters.npy``. Optional,
each giving what it can: ``cluster_group.tsv`` (phy curation) or
``cluster_KSLabel.tsv`` (Kilosort's own labels) for unit quality;
``params.py`` for the sample rate (else the probe's ``.ap.meta``);
``templates.npy`` (with ``spike_templates.npy``, ``channel_map.npy``,
``channel_positions.npy``, ``whitening_mat_inv.npy``) for each unit's peak
site, position and waveform; ``amplitudes.npy`` per spike; ``metrics.csv``
(ecephys quality metrics) for amplitude and SNR. A value the folder cannot
give is NaN (a column) or None (a whole array). Large arrays are memory-mapped
(``np.load(mmap_mode="r")``) and only copied when noise clusters are dropped.
"""

from __future__ import annotations

import ast
import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .ephys_errors import EphysFormatError

__all__ = ["KilosortSorting", "KilosortUnits", "read_kilosort", "read_params"]

SPIKE_TIMES = "spike_times.npy"
SPIKE_CLUSTERS = "spike_clusters.npy"
REQUIRED_FILES = (SPIKE_TIMES, SPIKE_CLUSTERS)

# Curated labels (phy's cluster_group.tsv) win over Kilosort's automatic ones.
LABEL_FILES = (("cluster_group.tsv", "group"), ("cluster_KSLabel.tsv", "KSLabel"))
# phy label -> unit quality; 'noise' clusters are left out; any other label
# (unsorted, a custom one, a cluster not listed, no label file) is 'all'.
LABEL_QUALITIES = {"good": "good", "mua": "multi"}
NOISE_LABEL = "noise"
DEFAULT_QUALITY = "all"

OPTIONAL_FILES = ("params.py", "spike_templates.npy", "templates.npy", "channel_map.npy", "channel_positions.npy",
                  "whitening_mat_inv.npy", "amplitudes.npy", "metrics.csv") + tuple(name for name, _ in LABEL_FILES)


@dataclass(frozen=True)
class KilosortUnits:
    """Per-unit arrays: one row per non-noise cluster that has spikes, in cluster order."""

    clusters: np.ndarray  # (n_units,) int64 phy cluster id (0-based)
    labels: tuple[str, ...]  # label in the label file ('' when not listed or no file)
    qualities: tuple[str, ...]  # good | multi | all (LABEL_QUALITIES)
    sites: np.ndarray | None  # (n_units,) int64 site of largest template amplitude (1-based recording channel); -1: no template
    x: np.ndarray  # (n_units,) float64 (um) position of that site across the probe; NaN: unknown
    y: np.ndarray  # (n_units,) float64 (um) position of that site along the probe; NaN: unknown
    amplitude: np.ndarray  # (n_units,) float64 (uV) metrics.csv amplitude; NaN: unknown
    snr: np.ndarray  # (n_units,) float64 metrics.csv snr; NaN: unknown
    waveforms: np.ndarray | None  # (n_units, n_channels, n_samples) float32 template (unwhitened if possible)


@dataclass(frozen=True)
class KilosortSorting:
    """One phy folder: the spikes of its units (noise clusters left out) and the units."""

    path: Path  # the folder
    sample_rate: float  # (Hz) params.py sample_rate, else the .ap.meta's imSampRate
    spike_times: np.ndarray  # (n_spikes,) uint64 or int64 (samples) from the recording's first sample
    spike_clusters: np.ndarray  # (n_spikes,) integer cluster id
    spike_amplitudes: np.ndarray | None  # (n_spikes,) float template scaling (amplitudes.npy)
    units: KilosortUnits
    noise_spikes: int  # spikes of clusters labelled noise, left out
    params: dict[str, Any]  # params.py's literal assignments ({} when absent)


def read_params(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``params.py`` as {name: value}, without running it: each ``name = literal`` assignment."""
    path = Path(path)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"), filename=str(path))
    except SyntaxError as exc:
        raise EphysFormatError(path, f"not valid Python (line {exc.lineno}: {exc.msg})") from None
    except OSError as exc:
        raise EphysFormatError(path, f"cannot read file ({exc.strerror or exc})", transient=True) from None
    params: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                params[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue  # an expression, not a literal: not needed here
    return params


def read_kilosort(folder: str | os.PathLike[str], *, meta_path: str | os.PathLike[str] | None = None) -> KilosortSorting:
    """Read a phy folder; raises EphysFormatError naming the file and the problem.

    ``meta_path`` (the probe's SpikeGLX ``.ap.meta``) gives the sample rate
    when ``params.py`` has none.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EphysFormatError(folder, "not a folder", transient=not folder.exists())
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise EphysFormatError(folder, f"Kilosort folder lacks {', '.join(missing)}")
    params = read_params(folder / "params.py") if (folder / "params.py").is_file() else {}
    sample_rate = _sample_rate(folder, params, meta_path)
    times = _vector(folder / SPIKE_TIMES)
    clusters = _vector(folder / SPIKE_CLUSTERS)
    n = times.size
    _same_length(folder / SPIKE_CLUSTERS, clusters, n)
    if clusters.dtype.kind not in "iu" or (n and clusters.dtype.kind == "i" and clusters.min() < 0):
        raise EphysFormatError(folder / SPIKE_CLUSTERS, "cluster ids must be integers >= 0")
    amplitudes = _optional_vector(folder / "amplitudes.npy", n)
    templates_of_spikes = _optional_vector(folder / "spike_templates.npy", n)
    labels = _labels(folder)
    counts = np.bincount(clusters.astype(np.int64, copy=False)) if n else np.zeros(1, np.int64)
    noise = [c for c, label in labels.items() if label == NOISE_LABEL and c < counts.size]
    unit_ids = np.setdiff1d(np.flatnonzero(counts), noise).astype(np.int64)
    units = _units(folder, unit_ids, labels, clusters, templates_of_spikes)
    noise_spikes = int(counts[noise].sum()) if noise else 0
    if noise_spikes:
        keep = np.isin(clusters, unit_ids)
        times, clusters = times[keep], clusters[keep]
        amplitudes = None if amplitudes is None else amplitudes[keep]
    return KilosortSorting(folder, sample_rate, times, clusters, amplitudes, units, noise_spikes, params)


def _sample_rate(folder: Path, params: dict[str, Any], meta_path: Any) -> float:
    rate = params.get("sample_rate")
    if rate is not None:
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not rate > 0:
            raise EphysFormatError(folder / "params.py", f"sample_rate = {rate!r} is not a positive number")
        return float(rate)
    if meta_path is None:
        where = "params.py has no sample_rate" if params else "no params.py"
        raise EphysFormatError(folder, f"no sample rate: {where} and no SpikeGLX .ap.meta was given")
    from .spikeglx import read_meta

    return read_meta(meta_path).sample_rate


def _units(folder: Path, unit_ids: np.ndarray, labels: dict[int, str], clusters: np.ndarray,
           templates_of_spikes: np.ndarray | None) -> KilosortUnits:
    n = unit_ids.size
    unit_labels = tuple(labels.get(int(c), "") for c in unit_ids)
    geometry = _template_geometry(folder, unit_ids, clusters, templates_of_spikes)
    metrics = _metrics(folder, unit_ids)
    sites, x, y, waveforms = geometry if geometry else (None, np.full(n, np.nan), np.full(n, np.nan), None)
    if sites is None and "peak_channel" in metrics and not np.isnan(metrics["peak_channel"]).any():
        sites = metrics["peak_channel"].astype(np.int64) + 1
    return KilosortUnits(
        clusters=unit_ids,
        labels=unit_labels,
        qualities=tuple(LABEL_QUALITIES.get(label.lower(), DEFAULT_QUALITY) for label in unit_labels),
        sites=sites,
        x=x,
        y=y,
        amplitude=metrics.get("amplitude", np.full(n, np.nan)),
        snr=metrics.get("snr", np.full(n, np.nan)),
        waveforms=waveforms,
    )


def _template_geometry(folder: Path, unit_ids: np.ndarray, clusters: np.ndarray,
                       templates_of_spikes: np.ndarray | None):
    """(sites, x, y, waveforms) from templates.npy, or None without it."""
    if not (folder / "templates.npy").is_file():
        return None
    templates = _load(folder / "templates.npy")
    if templates.ndim != 3:
        raise EphysFormatError(folder / "templates.npy", f"shape {templates.shape}, expected templates x samples x channels")
    n_templates, n_samples, n_channels = templates.shape
    channel_map = _channel_file(folder, "channel_map.npy", n_channels)
    channel_map = np.arange(n_channels) if channel_map is None else channel_map.reshape(-1).astype(np.int64)
    positions = _channel_file(folder, "channel_positions.npy", n_channels)
    if templates_of_spikes is not None and templates_of_spikes.size and int(templates_of_spikes.max()) >= n_templates:
        raise EphysFormatError(folder / "spike_templates.npy",
                               f"template {int(templates_of_spikes.max())} but templates.npy has {n_templates}")
    chosen = _unit_templates(unit_ids, clusters, templates_of_spikes, n_templates)
    waveforms = np.full((unit_ids.size, n_samples, n_channels), np.nan, dtype=np.float32)
    has = chosen >= 0
    waveforms[has] = templates[chosen[has]]
    whitening_inv = _channel_file(folder, "whitening_mat_inv.npy", n_channels)
    if whitening_inv is not None:
        waveforms = (waveforms @ np.asarray(whitening_inv, dtype=np.float32)).astype(np.float32)
    peak = np.zeros(unit_ids.size, dtype=np.int64)
    peak[has] = np.abs(waveforms[has]).max(axis=1).argmax(axis=1)  # as the original: largest |template|
    sites = np.where(has, channel_map[peak] + 1, -1)
    x = np.where(has, positions[peak, 0], np.nan) if positions is not None else np.full(unit_ids.size, np.nan)
    y = np.where(has, positions[peak, 1], np.nan) if positions is not None else np.full(unit_ids.size, np.nan)
    return sites, x.astype(np.float64), y.astype(np.float64), np.ascontiguousarray(waveforms.transpose(0, 2, 1))


def _unit_templates(unit_ids: np.ndarray, clusters: np.ndarray, templates_of_spikes: np.ndarray | None,
                    n_templates: int) -> np.ndarray:
    """Each unit's template: the most frequent among its spikes (phy merges and splits
    clusters, so a cluster id need not be a template id); without spike_templates.npy
    the cluster id itself (uncurated Kilosort output). -1: none."""
    if templates_of_spikes is None:
        return np.where(unit_ids < n_templates, unit_ids, -1)
    n_rows = int(unit_ids.max(initial=0)) + 1
    keys = clusters.astype(np.int64) * n_templates
    keys += templates_of_spikes
    per_cluster = np.bincount(keys, minlength=n_rows * n_templates)[: n_rows * n_templates].reshape(n_rows, n_templates)
    return per_cluster[unit_ids].argmax(axis=1)


def _labels(folder: Path) -> dict[int, str]:
    """{cluster id: label} from the first label file present; {} without one."""
    for name, column in LABEL_FILES:
        path = folder / name
        if path.is_file():
            rows = _table(path, "\t")
            if rows and ("cluster_id" not in rows[0] or column not in rows[0]):
                raise EphysFormatError(path, f"header lacks cluster_id or {column}")
            try:
                return {int(row["cluster_id"]): (row[column] or "").strip() for row in rows}
            except (TypeError, ValueError):
                raise EphysFormatError(path, "a cluster_id that is not an integer") from None
    return {}


def _metrics(folder: Path, unit_ids: np.ndarray) -> dict[str, np.ndarray]:
    """metrics.csv's amplitude, snr, peak_channel per unit (NaN where missing); {} without it."""
    path = folder / "metrics.csv"
    if not path.is_file():
        return {}
    rows = _table(path, ",")
    if rows and "cluster_id" not in rows[0]:
        raise EphysFormatError(path, "header lacks cluster_id")
    by_cluster = {int(float(row["cluster_id"])): row for row in rows if row.get("cluster_id")}
    out: dict[str, np.ndarray] = {}
    for column in ("amplitude", "snr", "peak_channel"):
        if rows and column in rows[0]:
            out[column] = np.array([_float(by_cluster.get(int(c), {}).get(column)) for c in unit_ids])
    return out


# --------------------------------------------------------------------------
# Files.
# --------------------------------------------------------------------------


def _load(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise EphysFormatError(path, "file not found", transient=True) from None
    except (ValueError, OSError, EOFError) as exc:
        raise EphysFormatError(path, f"corrupt or truncated .npy file ({exc})") from None


def _vector(path: Path) -> np.ndarray:
    array = _load(path)
    if array.ndim > 2 or (array.ndim == 2 and 1 not in array.shape):
        raise EphysFormatError(path, f"shape {array.shape}, expected one value per spike")
    return array.reshape(-1)  # (n, 1) on disk: a view, still memory-mapped


def _optional_vector(path: Path, n: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    array = _vector(path)
    _same_length(path, array, n)
    return array


def _same_length(path: Path, array: np.ndarray, n: int) -> None:
    if array.size != n:
        raise EphysFormatError(path, f"{array.size} values for {n} spikes in {SPIKE_TIMES}")


def _channel_file(folder: Path, name: str, n_channels: int) -> np.ndarray | None:
    path = folder / name
    if not path.is_file():
        return None
    array = np.asarray(_load(path))
    if array.shape[0] != n_channels and array.reshape(-1).size != n_channels:
        raise EphysFormatError(path, f"{array.shape[0]} channels, templates.npy has {n_channels}")
    return array


def _table(path: Path, delimiter: str) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            return list(csv.DictReader(fh, delimiter=delimiter))
    except OSError as exc:
        raise EphysFormatError(path, f"cannot read file ({exc.strerror or exc})", transient=True) from None


def _float(text: Any) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) else math.nan
