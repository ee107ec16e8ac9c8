"""Figures of a session from arrays (no database): behavior performance, lick raster, units by depth, raster + PSTH.

Each function takes plain arrays and returns a matplotlib Figure (Agg, no
window). The artists that carry data have a ``gid`` (e.g. ``"trials"``,
``"licks left"``) so that what a figure draws can be read back from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # files only: never a display, also in the daemon

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["AlignedSpikes", "lick_raster", "performance", "raster_psth", "units_by_depth"]

OUTCOME_COLORS = {"hit": "tab:green", "miss": "tab:red", "ignore": "tab:gray"}
SIDE_COLORS = {"left": "tab:red", "right": "tab:blue", "middle": "tab:purple"}
ROLLING_TRIALS = 20  # window of the rolling correct rate
WINDOW = (-3.5, 2.0)  # (s) around the go cue: sample and delay before it, the response after
PSTH_BIN = 0.05  # (s)


def performance(trial: np.ndarray, outcome: np.ndarray, instruction: np.ndarray,
                window: int = ROLLING_TRIALS) -> Figure:
    """Each trial's outcome on its instructed side's row, and the rolling correct rate (hits / trials)."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    axes, rate_axes = figure.subplots(2, 1, sharex=True, height_ratios=(1, 2))
    rows = np.where(instruction == "left", 1, np.where(instruction == "right", 0, -1))
    colors = [OUTCOME_COLORS.get(o, "black") for o in outcome]
    axes.scatter(trial, rows, c=colors, s=12, marker="|", gid="trials")
    axes.set_yticks([0, 1], ["right", "left"])
    axes.set_ylim(-1.5, 1.5)
    axes.set_title("outcome per trial, on the instructed side's row")
    for name, color in OUTCOME_COLORS.items():  # the legend's keys: the scatter has one colour per point
        axes.scatter([], [], c=color, s=30, marker="|", label=name)
    axes.legend(loc="lower right", ncols=len(OUTCOME_COLORS), fontsize="small")  # below the rows: empty
    hits = (outcome == "hit").astype(float)
    rate = np.convolve(hits, np.ones(window), "full")[:hits.size] / np.minimum(np.arange(1, hits.size + 1), window)
    rate_axes.plot(trial, rate, color="black", gid="correct rate", label=f"all trials (rolling {window})")
    for side in ("left", "right"):
        mine = instruction == side
        if mine.any():
            side_rate = np.cumsum(hits[mine]) / np.arange(1, mine.sum() + 1)
            rate_axes.plot(trial[mine], side_rate, color=SIDE_COLORS[side], lw=0.8, gid=f"correct rate {side}",
                           label=f"{side} trials (cumulative)")
    rate_axes.set_ylim(0, 1.05)
    rate_axes.set_ylabel("correct rate (hits / trials)")
    rate_axes.set_xlabel("Bpod trial")
    rate_axes.legend(loc="lower right", fontsize="small")
    return figure


def lick_raster(lick_times: np.ndarray, lick_rows: np.ndarray, lick_sides: np.ndarray, row_instruction: np.ndarray,
                window: tuple[float, float] = WINDOW) -> Figure:
    """Licks aligned to the go cue, one panel per instruction (left, right), one row per trial.

    ``lick_times``: (s) from the lick's trial's go cue; ``lick_rows``: index of
    its trial in ``row_instruction`` (the trials that have a go cue).
    """
    figure = Figure(figsize=(8, 6), layout="constrained")
    panels = figure.subplots(1, 2, sharex=True)
    for axes, instructed in zip(panels, ("left", "right")):
        rows = np.flatnonzero(row_instruction == instructed)
        position = np.full(row_instruction.size, -1)
        position[rows] = np.arange(rows.size)
        for side, color in SIDE_COLORS.items():
            mine = (lick_sides == side) & (row_instruction[lick_rows] == instructed) if lick_rows.size else []
            if np.any(mine):
                axes.scatter(lick_times[mine], position[lick_rows[mine]], s=3, color=color, marker="|",
                             gid=f"licks {instructed} {side}", label=f"{side} lick")
        axes.axvline(0, color="black", lw=0.5)
        axes.set_xlim(*window)
        axes.set_ylim(-1, max(rows.size, 1))
        axes.set_title(f"{instructed} trials ({rows.size})", gid=f"trials {instructed}")
        axes.set_xlabel("time from go cue (s)")
        if axes.get_legend_handles_labels()[0]:
            axes.legend(loc="upper left", fontsize="small")
    panels[0].set_ylabel("trial (in order)")
    return figure


def units_by_depth(depth: np.ndarray, firing_rate: np.ndarray, quality: np.ndarray, title: str) -> Figure:
    """Each unit at its depth on the probe (um from the tip) against its firing rate, coloured by quality."""
    figure = Figure(figsize=(5, 8), layout="constrained")
    axes = figure.subplots()
    for name in sorted(set(quality.tolist())):
        mine = quality == name
        axes.scatter(firing_rate[mine], depth[mine], s=14, gid=f"units {name}", label=f"{name} ({mine.sum()})")
    axes.set_xlabel("firing rate (spikes/s)")
    axes.set_ylabel("position on the probe (um from the tip)")
    axes.set_title(title)
    if quality.size:
        axes.legend(title="quality", fontsize="small")
    return figure


@dataclass(frozen=True)
class AlignedSpikes:
    """One unit's spikes per trial, relative to the go cue."""

    unit: int  # the sorter's cluster number
    trials: list[np.ndarray]  # per trial (in trial order): spike times (s) from the go cue
    instruction: np.ndarray  # per trial: left | right


def raster_psth(units: list[AlignedSpikes], title: str, window: tuple[float, float] = WINDOW,
                bin_width: float = PSTH_BIN) -> Figure:
    """Per unit a raster (left trials, then right) over its PSTH (spikes/s, left versus right)."""
    figure = Figure(figsize=(3 * max(len(units), 1), 6), layout="constrained")
    grid = figure.subplots(2, max(len(units), 1), sharex=True, squeeze=False)
    edges = np.arange(window[0], window[1] + bin_width / 2, bin_width)
    for column, unit in enumerate(units):
        raster, psth = grid[0, column], grid[1, column]
        row = 0
        for side in ("left", "right"):
            chosen = [times for times, instructed in zip(unit.trials, unit.instruction) if instructed == side]
            if not chosen:
                continue
            times = np.concatenate(chosen)
            rows = np.repeat(np.arange(row, row + len(chosen)), [t.size for t in chosen])
            raster.scatter(times, rows, s=1, marker="|", color=SIDE_COLORS[side], gid=f"unit {unit.unit} {side}")
            counts, _ = np.histogram(times, edges)
            psth.plot(edges[:-1] + bin_width / 2, counts / (len(chosen) * bin_width), color=SIDE_COLORS[side],
                      gid=f"psth {unit.unit} {side}", label=f"{side} ({len(chosen)})")
            row += len(chosen)
        raster.set_title(f"unit {unit.unit}", gid=f"unit {unit.unit}")
        raster.axvline(0, color="black", lw=0.5)
        psth.axvline(0, color="black", lw=0.5)
        raster.set_xlim(*window)
        psth.set_xlabel("time from go cue (s)")
        psth.legend(fontsize="x-small")
    grid[0, 0].set_ylabel("trial (left, then right)")
    grid[1, 0].set_ylabel("spikes/s")
    figure.suptitle(title)
    return figure
