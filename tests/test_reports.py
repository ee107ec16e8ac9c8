"""Reports: each figure is written, and draws what the database holds (read back from the figure objects)."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from conftest import place_real_session
from mapd.rescan import rescan
from mapd.export import plots
from mapd.export.report import TOP_UNITS, firing_rates, report_dir, session_figures, write_report
from mapd.export.session import SessionSelection, read_session, select_sessions
from mapd.schemas import ephys, experiment
from mapd.subjects import SubjectEntry, add_subjects
from test_export_nwb import config, ingest_generated_session  # noqa: F401 (the fixture)


def artists(figure, gid_prefix: str) -> dict:
    """gid -> artist, for every artist of the figure whose gid starts so."""
    found = {}
    for axes in figure.axes:
        for artist in [*axes.collections, *axes.lines, axes.title]:
            gid = artist.get_gid()
            if gid and gid.startswith(gid_prefix):
                found[gid] = artist
    return found


def points(artist) -> np.ndarray:
    return artist.get_offsets() if hasattr(artist, "get_offsets") else np.column_stack(artist.get_data())


def test_a_session_with_probes_draws_every_trial_lick_and_unit(config, rig_root, tmp_path):
    ingest_generated_session(config, rig_root, tmp_path / "ephys")
    [key] = select_sessions(SessionSelection())
    data = read_session(key)
    figures = {f.name: f.figure for f in session_figures(data)}
    assert set(figures) == {"performance", "licks", "probe1_units_by_depth", "probe1_raster_psth",
                            "probe2_units_by_depth", "probe2_raster_psth"}
    trials = (experiment.SessionTrial * experiment.BehaviorTrial & key.as_dict()).to_dicts(order_by="trial")
    drawn = points(artists(figures["performance"], "trials")["trials"])
    np.testing.assert_array_equal(drawn[:, 0], [t["trial"] for t in trials])
    np.testing.assert_array_equal(drawn[:, 1], [1 if t["trial_instruction"] == "left" else 0 for t in trials])
    rate = points(artists(figures["performance"], "correct rate")["correct rate"])[:, 1]
    hits = np.array([t["outcome"] == "hit" for t in trials])
    assert rate[-1] == pytest.approx(hits[-plots.ROLLING_TRIALS:].mean())
    keys = [t.get_text() for axes in figures["performance"].axes if axes.get_legend()
            for t in axes.get_legend().get_texts()]
    assert keys == ["hit", "miss", "ignore", f"all trials (rolling {plots.ROLLING_TRIALS})", "left trials (cumulative)",
                    "right trials (cumulative)"]
    assert_licks_drawn(figures["licks"], key.as_dict())
    for probe in (1, 2):
        assert_units_drawn(figures[f"probe{probe}_units_by_depth"], figures[f"probe{probe}_raster_psth"],
                           {**key.as_dict(), "insertion_number": probe}, data.probes[probe - 1], data.trials)
    index = write_report(data, tmp_path / "reports")
    assert index == report_dir(tmp_path / "reports", data) / "index.html"
    for name in figures:
        png = index.parent / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="{name}.png"' in index.read_text()


def assert_licks_drawn(figure, key: dict) -> None:
    """Every lick of a trial with a go cue, in its instruction's panel, at its time from the go cue."""
    go = {r["trial"]: float(r["trial_event_time"]) for r in
          (experiment.TrialEvent & key & {"trial_event_type": "go"}).to_dicts(order_by="trial_event_time DESC")}
    licks = (experiment.ActionEvent * experiment.BehaviorTrial & key).to_dicts()
    drawn = artists(figure, "licks")
    for instructed in ("left", "right"):
        expected = sorted(float(r["action_event_time"]) - go[r["trial"]] for r in licks
                          if r["trial"] in go and r["trial_instruction"] == instructed)
        got = sorted(np.concatenate([points(a)[:, 0] for gid, a in drawn.items()
                                     if gid.startswith(f"licks {instructed} ")] or [np.array([])]))
        assert len(got) == len(expected) > 0
        np.testing.assert_allclose(got, expected, atol=1e-6)
        n_trials = sum(1 for t in go if (experiment.BehaviorTrial & key & {"trial": t}).to_dicts()[0]
                       ["trial_instruction"] == instructed)
        assert artists(figure, f"trials {instructed}")[f"trials {instructed}"].get_text() == \
            f"{instructed} trials ({n_trials})"


def assert_units_drawn(depth_figure, raster_figure, probe_key: dict, probe, trials) -> None:
    units = (ephys.Unit & probe_key).to_dicts(order_by="unit")
    drawn = artists(depth_figure, "units")
    assert sum(len(points(a)) for a in drawn.values()) == len(units) > 0
    for quality in {u["unit_quality"] for u in units}:
        mine = [u for u in units if u["unit_quality"] == quality]
        np.testing.assert_allclose(sorted(points(drawn[f"units {quality}"])[:, 1]),
                                   sorted(u["unit_posy"] for u in mine))
    counts = {}
    for row in (ephys.TrialSpikes & probe_key).to_dicts():
        counts[row["unit"]] = counts.get(row["unit"], 0) + row["spike_times"].size
    rates = dict(zip(probe.unit.tolist(), firing_rates(probe, trials)))
    assert all(rates[u] > 0 for u in counts if counts[u])
    top = sorted(counts, key=lambda u: -counts[u])[:TOP_UNITS]
    shown = {int(gid.split()[1]) for gid in artists(raster_figure, "unit ") if gid.count(" ") == 1}
    assert sorted(counts[u] for u in shown) == sorted(counts[u] for u in top)  # ties may pick either
    for unit in shown:
        spikes = sum(len(points(a)) for gid, a in artists(raster_figure, f"unit {unit} ").items())
        assert spikes == counts[unit]
        assert set(artists(raster_figure, f"psth {unit} ")) <= {f"psth {unit} left", f"psth {unit} right"}


def test_the_real_behavior_session_has_its_two_behavior_figures(config, rig_root, tmp_path):
    place_real_session(rig_root)
    add_subjects([SubjectEntry(subject_id=407513, h2o="dl25", sex="M", dob=date(2017, 10, 2))])
    assert rescan(config).files["ingested"] == 1
    [key] = select_sessions(SessionSelection(h2o="dl25"))
    index = write_report(read_session(key), tmp_path)
    assert sorted(p.name for p in index.parent.iterdir()) == ["index.html", "licks.png", "performance.png"]
    figure = {f.name: f.figure for f in session_figures(read_session(key))}["performance"]
    assert len(points(artists(figure, "trials")["trials"])) == len(experiment.SessionTrial & key.as_dict()) == 11
