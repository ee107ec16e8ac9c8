"""The ephys readers and alignment alone (no database): real files, generated round trips, bad input.

The 10-million-spike case runs only with MAPD_EPHYS_BIG=1 (or as
``python tests/test_ephys_formats.py``, which prints its timings and memory).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from datetime import date
from pathlib import Path, PurePath

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "test_data"
sys.path.insert(0, str(TEST_DATA))

import ephysgen  # noqa: E402

from mapd.formats import alignment  # noqa: E402
from mapd.formats.alignment import AlignmentError, group_spikes, match_trials  # noqa: E402
from mapd.formats.behavior import parse_behavior_file  # noqa: E402
from mapd.formats.bitcode import in_samples, read_bitcode  # noqa: E402
from mapd.formats.ephys_errors import EphysFormatError  # noqa: E402
from mapd.formats.ephys_paths import ephys_session  # noqa: E402
from mapd.formats.jrclust import note_quality, read_jrclust  # noqa: E402
from mapd.formats.kilosort import read_kilosort, read_params  # noqa: E402
from mapd.formats.probe_folders import (ProbeFolder, UnusableProbeFolder, find_probe_folders,  # noqa: E402
                                        inspect_probe_folder, probe_folder_key)
from mapd.formats.spikeglx import read_meta, read_probe  # noqa: E402

REAL_BEHAVIOR = TEST_DATA / "behavior" / "dl25" / "tw2" / "Session Data" / "dl25_tw2_20180225_102508.mat"
REAL_BITCODE = TEST_DATA / "ephys" / "dl25" / "2018-02-25" / "1" / "dl25_bitcode.mat"
SPIKEGLX = TEST_DATA / "spikeglx"


def behavior_codes(path: Path = REAL_BEHAVIOR) -> dict[int, str]:
    """Bpod trial number -> bitcode note, as the behavior parser gives them."""
    return {trial.index_in_file: trial.notes["bitcode"] for trial in parse_behavior_file(path).trials}


def read_sorting(generated: ephysgen.GeneratedProbe):
    if generated.sorter == "kilosort":
        return read_kilosort(generated.sorting, meta_path=generated.meta)
    return read_jrclust(generated.sorting, meta_path=generated.meta)


def align(generated: ephysgen.GeneratedProbe, behavior: dict[int, str]):
    """Reader -> match -> groups, as the ingest will chain them (go cues from the bitcode file when it has them)."""
    sorting = read_sorting(generated)
    bitcode = read_bitcode(generated.bitcode)
    match = match_trials(list(bitcode.codes), behavior, bitcode.trial_numbers)
    if bitcode.trial_starts is not None:
        starts = alignment.trial_starts(strig=in_samples(bitcode.trial_starts, sorting.sample_rate))
        triggers = bitcode.trial_starts
    else:
        starts = alignment.trial_starts(file_offsets=sorting.trial_offsets)
        triggers = sorting.trial_offsets
    truth = generated.truth
    if bitcode.go_cues is not None:
        go = alignment.go_cues_from_bitcode(in_samples(bitcode.go_cues, sorting.sample_rate), sorting.sample_rate)
    else:  # the behavior's go events, from the trigger (or the per-trial file's start)
        go = alignment.go_cues_from_behavior(triggers, (truth.go_cues - triggers) / truth.sample_rate,
                                             sorting.sample_rate)
    groups = group_spikes(sorting.spike_times, sorting.spike_clusters, starts, go, sorting.sample_rate)
    return sorting, bitcode, match, groups


def assert_matches_truth(groups: alignment.SpikeGroups, truth: ephysgen.EphysTruth) -> None:
    """Counts per unit and per unit x trial exactly; every time within 1e-6 s."""
    np.testing.assert_array_equal(groups.units, truth.units)
    np.testing.assert_array_equal(np.diff(groups.unit_offsets), truth.unit_counts())
    np.testing.assert_array_equal(groups.counts, truth.unit_trial_counts())
    keep = truth.unit_mask()
    index = np.searchsorted(truth.units, truth.spike_clusters[keep])
    times, trials = truth.spike_times[keep], truth.spike_trials[keep]
    expected_unit_times = (times[np.lexsort((times, index))] - truth.trial_starts[0]) / truth.sample_rate
    np.testing.assert_allclose(groups.unit_times, expected_unit_times, rtol=0, atol=1e-6)
    in_trial = trials >= 0
    order = np.lexsort((times[in_trial], trials[in_trial], index[in_trial]))
    go = truth.go_cues[trials[in_trial]][order]
    expected = (times[in_trial][order] - go) / truth.sample_rate
    units, pair_trials, got, offsets = groups.trial_spike_times()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    counts = truth.unit_trial_counts()
    np.testing.assert_array_equal(np.diff(offsets), counts[units, pair_trials])
    assert len(units) == int(np.count_nonzero(counts))  # UnitTrial: exactly the pairs with spikes


# --------------------------------------------------------------------------
# Real files.
# --------------------------------------------------------------------------


def test_real_bitcode_codes_are_the_real_sessions_first_ten_random_ids():
    bitcode = read_bitcode(REAL_BITCODE)
    behavior = behavior_codes()
    assert bitcode.n_trials == 10 and len(behavior) == 11
    assert list(bitcode.codes) == [behavior[n] for n in range(1, 11)]
    np.testing.assert_array_equal(bitcode.bits, [[int(c) for c in code] for code in bitcode.codes])
    assert bitcode.trial_starts is None and bitcode.go_cues is None and bitcode.trial_numbers is None
    match = match_trials(list(bitcode.codes), behavior)
    assert match.method == "bitcode" and match.first_trial == 1
    np.testing.assert_array_equal(match.trials, np.arange(1, 11))
    assert (match.agreeing, match.compared) == (10, 10)


@pytest.mark.parametrize("name, probe_type, serial, rate", [
    ("sample3A_g0_t0.imec.ap.meta", "neuropixels 1.0 - 3A", "641251510", 30000.0),
    ("sample3A_g0_t0.imec.lf.meta", "neuropixels 1.0 - 3A", "641251510", 2500.0),
    ("sample3B_g0_t0.imec1.ap.meta", "neuropixels 1.0 - 3B", "18005116811", 30000.390639481),
])
def test_real_probe_metas(name, probe_type, serial, rate):
    meta = read_meta(SPIKEGLX / name)  # no companion .bin: the geometry needs only the meta
    assert meta.is_probe and meta.probe_type == probe_type and meta.probe_serial == serial
    assert meta.sample_rate == rate and meta.n_saved_channels == 385
    assert meta.fields["~imroTbl"].startswith("(") and "~snsChanMap" in meta.fields
    geometry = read_probe(meta)
    assert geometry.electrodes.size == 384 and geometry.probe_type == probe_type and geometry.serial == serial
    np.testing.assert_array_equal(geometry.electrodes, np.arange(384))  # bank 0, as the imro tables say
    assert geometry.positions.shape == (384, 2) and geometry.positions[:, 1].max() == 3820.0
    assert set(geometry.positions[:, 0]) == {0.0, 16.0, 32.0, 48.0}
    assert geometry.imro_table == meta.fields["~imroTbl"]


@pytest.mark.parametrize("name, rate", [("sample3B_g0_t0.nidq.meta", 30003.0003), ("jrclust_sample.meta", 25000.0)])
def test_real_nidq_metas_are_not_probes(name, rate):
    meta = read_meta(SPIKEGLX / name)
    assert meta.stream == "nidq" and not meta.is_probe and meta.probe_type is None and meta.sample_rate == rate
    with pytest.raises(EphysFormatError, match="nidq meta, not a probe"):
        read_probe(meta)


def test_bad_metas(tmp_path):
    cases = {"empty.meta": "", "binary.meta": "\0\1\2garbage", "nokv.meta": "imSampRate=30000\njust words\n",
             "norate.meta": "typeThis=imec\nimProbeOpt=3\n", "badrate.meta": "typeThis=imec\nimSampRate=fast\n"}
    problems = {"empty.meta": "empty meta", "binary.meta": "key=value", "nokv.meta": "line 2 is not key=value",
                "norate.meta": "no imSampRate", "badrate.meta": "not a number"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text, encoding="latin-1")
        with pytest.raises(EphysFormatError, match=problems[name]) as raised:
            read_meta(tmp_path / name)
        assert name in str(raised.value)
    with pytest.raises(EphysFormatError, match="file not found") as raised:
        read_meta(tmp_path / "absent.ap.meta")
    assert raised.value.transient
    no_imro = tmp_path / "x.ap.meta"
    no_imro.write_text("typeThis=imec\nimSampRate=30000\nimProbeOpt=3\n")
    with pytest.raises(EphysFormatError, match="without ~imroTbl"):
        read_probe(no_imro)


# --------------------------------------------------------------------------
# Generated probe folders: every sorter and layout, round trips.
# --------------------------------------------------------------------------


@pytest.mark.parametrize("sorter", ["jrclust3", "jrclust4", "kilosort"])
@pytest.mark.parametrize("layout", ["dashed", "compact", "old"])
def test_round_trip_every_sorter_and_layout(tmp_path, sorter, layout):
    behavior = dict(enumerate(ephysgen.random_codes(30, seed=5), start=1))
    generated = ephysgen.write_probe(tmp_path, sorter=sorter, layout=layout, behavior=behavior, skip_first=3,
                                     drop_last=2, seed=5, probe=2)
    found = list(find_probe_folders(tmp_path))
    assert len(found) == 1 and isinstance(found[0], ProbeFolder)
    folder = found[0]
    assert (folder.h2o, folder.session_date, folder.probe, folder.sorter) == ("dl25", date(2018, 2, 25), 2, sorter)
    assert folder.sorting == generated.sorting and folder.bitcode == generated.bitcode and folder.meta == generated.meta
    sorting, bitcode, match, groups = align(generated, behavior)
    truth = generated.truth
    assert sorting.sample_rate == truth.sample_rate
    assert sorting.noise_spikes == int((~truth.unit_mask()).sum()) > 0
    assert match.method == "bitcode" and match.first_trial == 4  # the recording started 3 trials late
    np.testing.assert_array_equal(match.trials, np.arange(4, 29))  # ...and stopped 2 early
    assert tuple(sorting.units.qualities) == truth.qualities
    assert_matches_truth(groups, truth)


def test_jrclust_units_and_spikes(tmp_path):
    truth = ephysgen.make_truth(n_spikes=5000, n_units=9, n_trials=6, n_empty_clusters=1, seed=2)
    for version in (3, 4):
        path = ephysgen.write_jrclust(tmp_path / f"v{version}_jrc.mat", truth, version=version, seed=2, compress=True)
        sorting = read_jrclust(path, meta_path=SPIKEGLX / "sample3A_g0_t0.imec.ap.meta")
        expected = ephysgen.jrclust_unit_values(truth, seed=2)
        assert sorting.version == version
        np.testing.assert_array_equal(sorting.units.clusters, truth.units)  # the empty cluster 10 is no unit
        assert sorting.units.notes == truth.notes and sorting.units.qualities == truth.qualities
        np.testing.assert_array_equal(sorting.units.sites, expected["sites"])
        np.testing.assert_allclose(sorting.units.x, expected["x"])
        np.testing.assert_allclose(sorting.units.y, expected["y"])
        np.testing.assert_allclose(sorting.units.vpp, expected["vpp"])
        np.testing.assert_allclose(sorting.units.snr, expected["snr"])
        np.testing.assert_allclose(sorting.units.waveforms, expected["waveforms"])  # cluster x site x sample
        assert sorting.units.waveforms.shape == (9, ephysgen.LOCAL_SITES, ephysgen.WAVEFORM_SAMPLES)
        keep = truth.spike_clusters > 0
        np.testing.assert_array_equal(sorting.spike_times, truth.spike_times[keep])
        np.testing.assert_array_equal(sorting.spike_clusters, truth.spike_clusters[keep])
        assert sorting.spike_positions.shape == (int(keep.sum()), 2)
        np.testing.assert_array_equal(sorting.spike_sites, expected["sites"][truth.spike_clusters[keep] - 1])
        if version == 3:
            np.testing.assert_array_equal(sorting.trial_offsets, truth.trial_starts)
        else:
            assert sorting.trial_offsets is None


@pytest.mark.parametrize("note, quality", [("single", "good"), ("Single ", "good"), ("ok", "ok"), ("multi", "multi"),
                                           ("mua", "multi"), ("", "all"), ("noise", "all"), ("delete?", "all")])
def test_note_quality(note, quality):
    assert note_quality(note) == quality


def test_recording_without_strig_uses_jrclust_trial_files_and_behavior_go_events(tmp_path):
    behavior = dict(enumerate(ephysgen.random_codes(15, seed=8), start=1))
    generated = ephysgen.write_probe(tmp_path, sorter="jrclust3", behavior=behavior, skip_first=1, seed=8,
                                     strig=False, go_cue=False, trial_num=False)
    sorting, bitcode, match, groups = align(generated, behavior)
    assert bitcode.trial_starts is None and bitcode.go_cues is None
    assert match.first_trial == 2
    assert_matches_truth(groups, generated.truth)


def test_strig_without_go_cue_uses_behavior_go_events(tmp_path):
    behavior = dict(enumerate(ephysgen.random_codes(12, seed=9), start=1))
    generated = ephysgen.write_probe(tmp_path, sorter="kilosort", behavior=behavior, drop_last=4, seed=9,
                                     go_cue=False, bitcode_fmt="v7.3")
    sorting, bitcode, match, groups = align(generated, behavior)
    assert bitcode.go_cues is None and bitcode.trial_starts is not None
    np.testing.assert_array_equal(match.trials, np.arange(1, 9))
    assert_matches_truth(groups, generated.truth)


def test_bitcodes_of_the_real_behavior_session_started_late_and_stopped_early(tmp_path):
    real = ephysgen.behavior_bitcodes(REAL_BEHAVIOR)
    generated = ephysgen.write_probe(tmp_path, sorter="jrclust3", behavior=real, skip_first=2, drop_last=3,
                                     n_spikes=3000, n_units=4, seed=1)
    bitcode = read_bitcode(generated.bitcode)
    match = match_trials(list(bitcode.codes), behavior_codes())
    assert match.first_trial == 3 and list(match.trials) == [3, 4, 5, 6, 7, 8]
    assert match.agreeing == match.compared == 6


def test_behavior_with_skipped_trials_still_matches(tmp_path):
    codes = ephysgen.random_codes(40, seed=3)
    behavior = {n: code for n, code in enumerate(codes, start=1) if n % 7}  # every 7th trial skipped: no note
    recorded = codes[5:35]
    match = match_trials(recorded, behavior)
    assert match.first_trial == 6 and match.compared == sum(1 for n in range(6, 36) if n % 7)
    np.testing.assert_array_equal(match.trials, np.arange(6, 36))  # skipped Bpod trials keep their numbers


def test_trial_num_fallback_and_the_no_match_error(tmp_path):
    behavior = dict(enumerate(ephysgen.random_codes(20, seed=4), start=1))
    codes, numbers = ephysgen.recorded_trials(behavior, skip_first=2)
    codes[3] = codes[3][::-1] if codes[3][::-1] != codes[3] else "0" * 16  # two codes garbled in transit
    codes[7] = "1" * 16
    with_numbers = ephysgen.write_bitcode(tmp_path / "a" / "dl25_bitcode.mat", codes, trial_numbers=numbers)
    bitcode = read_bitcode(with_numbers)
    match = match_trials(list(bitcode.codes), behavior, bitcode.trial_numbers)
    assert match.method == "trialNum" and match.first_trial is None
    np.testing.assert_array_equal(match.trials, numbers)
    assert (match.agreeing, match.compared) == (16, 18)
    without = read_bitcode(ephysgen.write_bitcode(tmp_path / "b" / "dl25_bitcode.mat", codes))
    with pytest.raises(AlignmentError, match=r"match at no offset: at the best one \(recorded trial 1 = Bpod trial 3\) "
                                             r"16 of 18 comparable codes agree"):
        match_trials(list(without.codes), behavior, without.trial_numbers)
    with pytest.raises(AlignmentError, match="no recorded code is among"):
        match_trials(["0" * 16, "1" * 16], behavior)


def test_alignment_edges():
    rate = 1000.0
    starts = np.array([100, 200, 300])
    times = np.array([5, 99, 100, 199, 200, 250, 299, 300, 10_000], dtype=np.uint64)
    clusters = np.array([3, 3, 3, 3, 7, 7, 3, 9, 3])
    go = np.array([0.15, np.nan, 0.35])  # trial 1 matched no behavior trial
    groups = group_spikes(times, clusters, starts, go, rate, units=np.array([3, 7]))  # cluster 9 dropped
    np.testing.assert_array_equal(groups.units, [3, 7])
    np.testing.assert_array_equal(groups.counts, [[2, 1, 1], [0, 2, 0]])
    np.testing.assert_allclose(groups.unit_spike_times()[0], (np.array([5, 99, 100, 199, 299, 10_000]) - 100) / rate)
    units, trials, pieces = groups.split_trial_spike_times()
    assert list(zip(units, trials)) == [(0, 0), (0, 2)]  # trial 1 has no go cue: no TrialSpikes
    np.testing.assert_allclose(pieces[0], [0.1 - 0.15, 0.199 - 0.15])
    np.testing.assert_allclose(pieces[1], [10.0 - 0.35])  # the last trial runs to the end of the recording
    with pytest.raises(AlignmentError, match="not increasing"):
        group_spikes(times, clusters, np.array([5, 5]), np.zeros(2), rate)
    with pytest.raises(AlignmentError, match="one go cue per trial"):
        group_spikes(times, clusters, starts, np.zeros(2), rate)
    empty = group_spikes(np.zeros(0, np.int64), np.zeros(0, np.int32), starts, go, rate)
    assert empty.units.size == 0 and empty.trial_spike_times()[2].size == 0
    early = match_trials(["0001", "0010", "0011", "0100"], {1: "0010", 2: "0011", 3: "0100", 4: "1111"})
    assert early.trials.tolist() == [alignment.NO_TRIAL, 1, 2, 3]  # recorded before Bpod's first trial


def test_trial_starts_and_units():
    np.testing.assert_array_equal(alignment.trial_starts(strig=np.array([10_000.0, 20_000.0])), [2500, 12500])
    np.testing.assert_array_equal(alignment.trial_starts(file_offsets=np.array([0, 9])), [0, 9])
    with pytest.raises(AlignmentError, match="no sTrig"):
        alignment.trial_starts()
    np.testing.assert_array_equal(in_samples(np.array([1.5, 2.0, np.nan]), 1000.0), [1500.0, 2000.0, np.nan])
    np.testing.assert_array_equal(in_samples(np.array([1500.0, 2000.0]), 1000.0), [1500.0, 2000.0])


# --------------------------------------------------------------------------
# Kilosort specifics.
# --------------------------------------------------------------------------


def test_kilosort_labels_templates_metrics(tmp_path):
    truth = ephysgen.make_truth(n_spikes=8000, n_units=10, n_trials=5, numbering="kilosort", n_empty_clusters=1)
    expected = ephysgen.write_kilosort(tmp_path / "ks", truth, metrics=True)
    sorting = read_kilosort(tmp_path / "ks")
    assert not (tmp_path / "ks" / "EXECUTED").exists()  # params.py was parsed, never run
    assert sorting.params["n_channels_dat"] == 65 and "marker" not in sorting.params
    units = sorting.units
    np.testing.assert_array_equal(units.clusters, truth.units)
    assert units.labels == truth.notes and units.qualities == truth.qualities
    np.testing.assert_array_equal(units.sites, expected.sites)
    np.testing.assert_allclose(units.x, expected.x)
    np.testing.assert_allclose(units.y, expected.y)
    np.testing.assert_allclose(units.amplitude, expected.amplitude)
    np.testing.assert_allclose(units.snr, expected.snr)  # inf in metrics.csv -> NaN
    assert np.isnan(units.snr[0])
    peak = np.nanmax(np.abs(units.waveforms), axis=(1, 2))
    np.testing.assert_allclose(peak, expected.waveform_scale)  # unwhitened by whitening_mat_inv
    assert units.waveforms.shape == (10, 64, ephysgen.TEMPLATE_SAMPLES)
    assert sorting.spike_amplitudes is not None and sorting.spike_amplitudes.size == sorting.spike_times.size


def test_kilosort_minimal_folder(tmp_path):
    truth = ephysgen.make_truth(n_spikes=3000, n_units=5, n_trials=4, numbering="kilosort", n_noise_clusters=0)
    ephysgen.write_kilosort(tmp_path / "ks", truth, labels=None, templates=False, amplitudes=False)
    for name in ("channel_map.npy", "channel_positions.npy"):
        (tmp_path / "ks" / name).unlink()
    sorting = read_kilosort(tmp_path / "ks")
    assert sorting.units.qualities == ("all",) * 5 and sorting.units.labels == ("",) * 5
    assert sorting.units.sites is None and sorting.units.waveforms is None
    assert np.isnan(sorting.units.x).all() and np.isnan(sorting.units.amplitude).all()
    assert sorting.noise_spikes == 0 and isinstance(sorting.spike_times, np.memmap)  # nothing copied


def test_kilosort_labels_from_kslabel_and_templates_without_spike_templates(tmp_path):
    truth = ephysgen.make_truth(n_spikes=3000, n_units=6, n_trials=4, numbering="kilosort")
    expected = ephysgen.write_kilosort(tmp_path / "ks", truth, labels="KSLabel", spike_templates=False)
    sorting = read_kilosort(tmp_path / "ks")
    assert sorting.units.qualities == truth.qualities
    np.testing.assert_array_equal(sorting.units.sites, expected.sites)


def test_kilosort_sample_rate_sources(tmp_path):
    truth = ephysgen.make_truth(n_spikes=1000, n_units=3, n_trials=3, numbering="kilosort")
    ephysgen.write_kilosort(tmp_path / "ks", truth, params_rate=False)
    with pytest.raises(EphysFormatError, match="no sample rate: params.py has no sample_rate and no SpikeGLX .ap.meta"):
        read_kilosort(tmp_path / "ks")
    assert read_kilosort(tmp_path / "ks", meta_path=SPIKEGLX / "sample3B_g0_t0.imec1.ap.meta").sample_rate == \
        30000.390639481
    (tmp_path / "ks" / "params.py").unlink()
    with pytest.raises(EphysFormatError, match="no sample rate: no params.py"):
        read_kilosort(tmp_path / "ks")
    (tmp_path / "ks" / "params.py").write_text("sample_rate = 30000.\nbroken = (\n")
    with pytest.raises(EphysFormatError, match=r"params.py: not valid Python \(line 2"):
        read_params(tmp_path / "ks" / "params.py")
    (tmp_path / "ks" / "params.py").write_text("sample_rate = 'fast'\n")
    with pytest.raises(EphysFormatError, match="is not a positive number"):
        read_kilosort(tmp_path / "ks")


def test_bad_kilosort_folders(tmp_path):
    truth = ephysgen.make_truth(n_spikes=1000, n_units=3, n_trials=3, numbering="kilosort")
    ephysgen.write_kilosort(tmp_path / "short", truth, shorten_clusters=True)
    with pytest.raises(EphysFormatError, match=r"spike_clusters.npy: 999 values for 1000 spikes"):
        read_kilosort(tmp_path / "short")
    ephysgen.write_kilosort(tmp_path / "cut", truth)
    ephysgen.damage(tmp_path / "cut" / "spike_times.npy", "truncate")
    with pytest.raises(EphysFormatError, match=r"spike_times.npy: corrupt or truncated .npy"):
        read_kilosort(tmp_path / "cut")
    ephysgen.write_kilosort(tmp_path / "none", truth)
    (tmp_path / "none" / "spike_clusters.npy").unlink()
    with pytest.raises(EphysFormatError, match="lacks spike_clusters.npy"):
        read_kilosort(tmp_path / "none")
    (tmp_path / "tsv").mkdir()
    ephysgen.write_kilosort(tmp_path / "tsv", truth)
    (tmp_path / "tsv" / "cluster_group.tsv").write_text("id\tgroup\n0\tgood\n")
    with pytest.raises(EphysFormatError, match="cluster_group.tsv: header lacks cluster_id"):
        read_kilosort(tmp_path / "tsv")


# --------------------------------------------------------------------------
# Bad JRClust and bitcode files.
# --------------------------------------------------------------------------


@pytest.fixture
def small_truth():
    return ephysgen.make_truth(n_spikes=2000, n_units=4, n_trials=3, seed=11)


@pytest.mark.parametrize("how, problem", [("truncate", "truncated HDF5 file"), ("garble", "corrupt"),
                                          ("empty", "empty file"), ("text", "not a MATLAB v7.3")])
def test_damaged_jrclust_files(tmp_path, small_truth, how, problem):
    path = ephysgen.write_jrclust(tmp_path / "dl25_jrc.mat", small_truth)
    ephysgen.damage(path, how)
    with pytest.raises(EphysFormatError, match=problem) as raised:
        read_jrclust(path)
    assert str(path) in str(raised.value)


def test_jrclust_missing_and_inconsistent_fields(tmp_path, small_truth):
    path = ephysgen.write_jrclust(tmp_path / "a_jrc.mat", small_truth, omit=("S_clu/vrSnr_clu", "P/sRateHz"))
    with pytest.raises(EphysFormatError, match="JRClust v3 file lacks S_clu/vrSnr_clu, P/sRateHz"):
        read_jrclust(path)
    path = ephysgen.write_jrclust(tmp_path / "b_jrc.mat", small_truth, shorten=("viSite_spk",))
    with pytest.raises(EphysFormatError, match="viSite_spk has 1999 values for 2000 spikes"):
        read_jrclust(path)
    path = ephysgen.write_jrclust(tmp_path / "c_res.mat", small_truth, version=4, shorten=("unitSNR",))
    with pytest.raises(EphysFormatError, match=r"4 cluster notes but unitSNR \(3\) values"):
        read_jrclust(path, meta_path=SPIKEGLX / "sample3A_g0_t0.imec.ap.meta")
    path = ephysgen.write_jrclust(tmp_path / "d_res.mat", small_truth, version=4, shorten=("clusterNotes",
                                  "unitVppRaw", "unitSNR", "clusterSites", "clusterCentroids", "meanWfLocalRaw"))
    with pytest.raises(EphysFormatError, match="spikes of cluster 4 but only 3 clusters described"):
        read_jrclust(path, meta_path=SPIKEGLX / "sample3A_g0_t0.imec.ap.meta")
    path = ephysgen.write_jrclust(tmp_path / "e_res.mat", small_truth, version=4)
    with pytest.raises(EphysFormatError, match="no sample rate: JRClust v4 files have none"):
        read_jrclust(path)
    v5 = ephysgen.write_bitcode(tmp_path / "f_jrc.mat", ["01"])
    with pytest.raises(EphysFormatError, match="a MATLAB v5 file; JRClust writes v7.3"):
        read_jrclust(v5)
    other = ephysgen.write_bitcode(tmp_path / "g_jrc.mat", ["01"], fmt="v7.3")
    with pytest.raises(EphysFormatError, match="not a JRClust file"):
        read_jrclust(other)


def test_bad_bitcode_files(tmp_path):
    cases = {
        "no_codes": (dict(codes=["0101"], omit_codes=True), "no variable bitCodeS"),
        "strig": (dict(codes=["0101", "0110"], triggers=[1.0]), "sTrig has 1 values for 2 trials"),
        "trialnum": (dict(codes=["0101", "0110"], trial_numbers=[1.5, 2]), "trialNum holds values"),
    }
    for name, (options, problem) in cases.items():
        path = ephysgen.write_bitcode(tmp_path / name / "dl25_bitcode.mat", **options)
        with pytest.raises(EphysFormatError, match=problem):
            read_bitcode(path)
    import scipy.io

    scipy.io.savemat(tmp_path / "bits.mat", {"bitCodeS": np.array(["0101", "0110"]), "bitcode": np.eye(2, 4)})
    with pytest.raises(EphysFormatError, match="bitcode and bitCodeS disagree in rows 1, 2"):
        read_bitcode(tmp_path / "bits.mat")
    scipy.io.savemat(tmp_path / "chars.mat", {"bitCodeS": np.array(["0121"])})
    with pytest.raises(EphysFormatError, match="rows 1 are not strings of 0 and 1"):
        read_bitcode(tmp_path / "chars.mat")
    path = ephysgen.damage(ephysgen.write_bitcode(tmp_path / "cut" / "dl25_bitcode.mat", ["01"] * 50), "truncate")
    with pytest.raises(EphysFormatError, match="truncated"):
        read_bitcode(path)


def test_bitcode_v73_and_one_trial(tmp_path):
    path = ephysgen.write_bitcode(tmp_path / "dl25_bitcode.mat", ["0110"], triggers=[9000], go_cues=[12000],
                                  trial_numbers=[4], fmt="v7.3")
    bitcode = read_bitcode(path)
    assert bitcode.codes == ("0110",) and bitcode.trial_numbers.tolist() == [4]
    assert bitcode.trial_starts.tolist() == [9000.0] and bitcode.go_cues.tolist() == [12000.0]


# --------------------------------------------------------------------------
# Probe folders.
# --------------------------------------------------------------------------


def test_probe_folder_keys_and_ephys_session():
    assert probe_folder_key(PurePath("dl25/2018-02-25/1/x_jrc.mat")).subpath == PurePath("dl25/2018-02-25/1")
    assert probe_folder_key(PurePath("dl25/20180225/2")).probe == 2
    key = probe_folder_key(PurePath("dl25/2018-02-25-3/dl25ap_imec3_opt3_jrc.mat"))
    assert (key.h2o, key.session_date, key.probe, key.subpath) == ("dl25", date(2018, 2, 25), 3,
                                                                    PurePath("dl25/2018-02-25-3"))
    assert probe_folder_key(PurePath("dl25/2018-02-25/raw/x")) is None
    assert probe_folder_key(PurePath("dl25/2018-02-31/1")) is None
    for subpath in ("dl25/2018-02-25/1/dl25_bitcode.mat", "dl25/20180225/1/ks2/spike_times.npy",
                    "dl25/2018-02-25-1/dl25_g0_t0.imec.ap_imec3_opt3_jrc.mat",
                    "dl25/2018-02-25/1/dl25_2018-02-25_1_g0_t0.imec.ap.meta"):
        assert ephys_session(PurePath(subpath)) == ("dl25", date(2018, 2, 25)), subpath
    for subpath in ("dl25/2018-02-25/1/dl25_g0_t0.imec.ap.bin", "dl25/notes/x_jrc.mat", "x_jrc.mat"):
        assert ephys_session(PurePath(subpath)) is None, subpath


def test_unusable_probe_folders(tmp_path):
    two = ephysgen.write_probe(tmp_path, probe=1, n_spikes=500, n_units=2)
    ephysgen.write_kilosort(two.folder / "ks", ephysgen.make_truth(n_spikes=500, n_units=2, n_trials=3,
                                                                     numbering="kilosort"))
    no_bitcode = ephysgen.write_probe(tmp_path, probe=2, sorter="jrclust4", n_spikes=500, n_units=2)
    no_bitcode.bitcode.unlink()
    (tmp_path / "dl25" / "2018-02-25" / "3").mkdir()
    (tmp_path / "dl25" / "2018-02-25" / "3" / "notes.txt").write_text("sorting pending")
    found = {f.probe: f for f in find_probe_folders(tmp_path)}
    assert all(isinstance(f, UnusableProbeFolder) for f in found.values())
    assert found[1].reason == "several sorting outputs: dl25_g0_t0.imec.ap_imec3_opt3_jrc.mat, ks"
    assert found[2].reason == "no bitcode file dl25_bitcode.mat"
    assert found[3].reason.startswith("no sorting output")
    lenient = inspect_probe_folder(no_bitcode.folder, require_bitcode=False)
    assert isinstance(lenient, ProbeFolder) and lenient.bitcode is None and lenient.sorter == "jrclust4"


def test_real_bitcode_folder_has_no_sorting_output():
    found = inspect_probe_folder(REAL_BITCODE.parent)
    assert isinstance(found, UnusableProbeFolder) and found.reason.startswith("no sorting output")
    assert (found.h2o, found.session_date, found.probe) == ("dl25", date(2018, 2, 25), 1)


# --------------------------------------------------------------------------
# Large case (10 million spikes): opt-in, and a benchmark when run as a script.
# --------------------------------------------------------------------------


def run_big_case(root: Path, *, n_spikes: int = 10_000_000, n_units: int = 300, n_trials: int = 400,
                 sorter: str = "jrclust3") -> dict[str, float]:
    """Generate, read and align one large probe; returns seconds per step and peak RSS (MB)."""
    figures: dict[str, float] = {}
    started = time.perf_counter()
    generated = ephysgen.write_probe(root, sorter=sorter, behavior=ephysgen.random_codes(n_trials + 5),
                                     skip_first=3, drop_last=2, n_spikes=n_spikes, n_units=n_units)
    figures["generate_s"] = time.perf_counter() - started
    figures["generate_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    behavior = dict(enumerate(ephysgen.random_codes(n_trials + 5), start=1))
    sorting, bitcode, match, groups = align(generated, behavior)
    figures["read_align_s"] = time.perf_counter() - started
    started = time.perf_counter()
    units, trials, times, offsets = groups.trial_spike_times()
    figures["trial_times_s"] = time.perf_counter() - started
    figures["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    truth = generated.truth
    assert match.first_trial == 4
    np.testing.assert_array_equal(groups.counts, truth.unit_trial_counts())
    return figures


@pytest.mark.skipif(os.environ.get("MAPD_EPHYS_BIG") != "1", reason="10M-spike case: set MAPD_EPHYS_BIG=1")
def test_big_probe(tmp_path):
    figures = run_big_case(tmp_path)
    assert figures["generate_s"] < 60 and figures["read_align_s"] < 30


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for sorter in ("jrclust3", "kilosort"):
            print(sorter, {k: round(v, 2) for k, v in run_big_case(Path(tmp) / sorter, sorter=sorter).items()})
