"""A session's report: its figures (:mod:`mapd.export.plots`) as PNG files and an ``index.html`` showing them.

Written below ``out/sub-{subject_id}/ses-{YYYYMMDD}/``: ``performance.png``,
``licks.png`` and per probe N ``probeN_units_by_depth.png`` and
``probeN_raster_psth.png``. A report is derived data: writing it again
replaces it.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from . import plots
from .session import ProbeData, SessionData, Trials

__all__ = ["ReportFigure", "report_dir", "session_figures", "write_report"]

TOP_UNITS = 6  # units (most spikes) in a probe's raster + PSTH
DPI = 100


@dataclass(frozen=True)
class ReportFigure:
    name: str  # file stem
    title: str
    figure: Figure


def report_dir(out: Path, data: SessionData) -> Path:
    return out / f"sub-{data.subject.subject_id}" / f"ses-{data.session_date:%Y%m%d}"


def write_report(data: SessionData, out: Path, top_units: int = TOP_UNITS) -> Path:
    """Write the session's figures and index.html; returns the index's path."""
    folder = report_dir(out, data)
    folder.mkdir(parents=True, exist_ok=True)
    figures = session_figures(data, top_units)
    for item in figures:
        partial = folder / f".{item.name}.{os.getpid()}.png"
        item.figure.savefig(partial, dpi=DPI)
        os.replace(partial, folder / f"{item.name}.png")
    index = folder / "index.html"
    index.write_text(_index_html(data, figures))
    return index


def session_figures(data: SessionData, top_units: int = TOP_UNITS) -> list[ReportFigure]:
    trials = data.trials
    label = f"{data.subject.h2o} {data.session_date}"
    figures = [
        ReportFigure("performance", f"{label}: performance ({len(trials)} trials)",
                     plots.performance(trials.trial, trials.outcome, trials.instruction)),
        ReportFigure("licks", f"{label}: licks aligned to the go cue", _lick_figure(data)),
    ]
    for probe in data.probes:
        name = f"probe{probe.insertion_number}"
        figures.append(ReportFigure(f"{name}_units_by_depth", f"{label}, {name}: units by depth ({probe.n_units})",
                                    plots.units_by_depth(probe.y, firing_rates(probe, trials), probe.quality,
                                                         f"{label}, {name}")))
        chosen = _aligned_units(probe, trials, top_units)
        figures.append(ReportFigure(f"{name}_raster_psth", f"{label}, {name}: raster and PSTH of the {len(chosen)} "
                                    "units with the most spikes", plots.raster_psth(chosen, f"{label}, {name}")))
    return figures


def _lick_figure(data: SessionData) -> Figure:
    trials, licks = data.trials, data.licks
    with_go = np.isfinite(trials.go)
    numbers = trials.trial[with_go]
    where = np.searchsorted(numbers, licks.trial)
    found = (where < numbers.size) & (numbers[np.minimum(where, max(numbers.size - 1, 0))] == licks.trial) \
        if numbers.size else np.zeros(licks.trial.size, dtype=bool)
    rows = where[found]
    times = licks.time[found] - trials.go[with_go][rows]
    return plots.lick_raster(times, rows, licks.side[found], trials.instruction[with_go])


def firing_rates(probe: ProbeData, trials: Trials) -> np.ndarray:
    """Spikes/s of each unit over the span of the trials the recording covered (its TrialSpikes trials)."""
    covered = np.isin(trials.trial, probe.aligned_trial)
    if not covered.any():
        return np.zeros(probe.n_units)
    span = float(trials.stop[covered].max() - trials.start[covered].min())
    return np.diff(probe.spike_offsets) / span


def _aligned_units(probe: ProbeData, trials: Trials, top: int) -> list[plots.AlignedSpikes]:
    """The ``top`` units with the most spikes, their spikes per trial from the go cue (trial order)."""
    counts = np.diff(probe.spike_offsets)
    chosen = np.argsort(-counts, kind="stable")[:top]
    instruction = trials.instruction[np.searchsorted(trials.trial, probe.aligned_trial)]
    units = []
    for k in chosen:
        rows = np.flatnonzero(probe.aligned_unit == k)
        rows = rows[np.argsort(probe.aligned_trial[rows], kind="stable")]
        per_trial = [probe.aligned_times[probe.aligned_offsets[r]:probe.aligned_offsets[r + 1]] for r in rows]
        units.append(plots.AlignedSpikes(int(probe.unit[k]), per_trial, instruction[rows]))
    return units


def _index_html(data: SessionData, figures: list[ReportFigure]) -> str:
    title = html.escape(f"MAP session {data.subject.h2o} {data.session_date} (subject {data.subject.subject_id}, "
                        f"session {data.key.session})")
    body = "\n".join(f'<figure><img src="{html.escape(f.name)}.png" alt="{html.escape(f.title)}">'
                     f"<figcaption>{html.escape(f.title)}</figcaption></figure>" for f in figures)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>"
            "<style>img{max-width:100%}figure{margin:1em 0}</style></head>\n"
            f"<body><h1>{title}</h1>\n{body}\n</body></html>\n")
