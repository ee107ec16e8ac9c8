"""Probe ingest into the real embedded PostgreSQL: real and generated probes against ingested behavior sessions.

Behavior sessions are ingested by ``rescan`` (the real dl25 session, or bpodgen
sessions whose ``randomID`` s the generated bitcode files carry); probe folders
are written by ephysgen with known ground truth and ingested by
``ingest_probe``. Trial numbers are Bpod's (``SessionTrial.trial``).
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest

import bpodgen
import ephysgen
from conftest import REAL_SESSION, TEST_DATA, place_real_session
from mapd.rescan import rescan
from mapd.formats.ephys_errors import EphysFormatError
from mapd.formats.probe_folders import ProbeFolder, inspect_probe_folder
from mapd import pgcopy
from mapd.ingest import probe as probe_ingest
from mapd.ingest.bulk import BulkWriter
from mapd.ingest.probe import ProbeAlreadyIngested, ProbeFormatError, ProbeWaiting, ingest_probe
from mapd.runtime import open_database
from mapd.schemas import ephys, experiment, ingest, lab
from mapd.subjects import SubjectEntry, add_subjects

REAL_BITCODE = TEST_DATA / "ephys" / "dl25" / "2018-02-25" / "1" / "dl25_bitcode.mat"
H2O, SUBJECT = "dl7", 1001
START = datetime(2018, 3, 1, 9, 30, 0)
PROBE_TABLES = (ephys.ProbeInsertion, ephys.ProbeInsertion.RecordingSystemSetup, ephys.Unit, ephys.Unit.UnitTrial,
                ephys.TrialSpikes, ingest.EphysIngest, ingest.EphysIngest.EphysFile)
ATOL = 1e-6  # (s)


@pytest.fixture
def config(db, load, rig_root):
    config = load({"RRig": rig_root})
    open_database(config)
    return config


@pytest.fixture
def ephys_root(tmp_path) -> Path:
    return tmp_path / "ephys"


def behavior_session(config, rig_root, *, n_trials: int = 24, seed: int = 3, **options) -> dict[int, str]:
    """A generated session of H2O, ingested; returns {Bpod trial number: randomID} of every trial in the file."""
    add_subjects([SubjectEntry(subject_id=SUBJECT, h2o=H2O)])
    generated = bpodgen.write_session(bpodgen.session_path(rig_root, H2O, "tw", START), h2o=H2O, start=START,
                                      n_trials=n_trials, seed=seed, **options)
    summary = rescan(config)
    assert summary.files["ingested"] == 1, summary
    return {t.index + 1: t.bitcode for t in generated.trials}


def write_probe(root: Path, behavior: dict[int, str], **options) -> ephysgen.GeneratedProbe:
    options.setdefault("n_spikes", 4000)
    options.setdefault("n_units", 6)
    return ephysgen.write_probe(root, h2o=options.pop("h2o", H2O), session_date=options.pop("day", START.date()),
                                behavior=behavior, **options)


def folder_of(generated: ephysgen.GeneratedProbe, **options) -> ProbeFolder:
    folder = inspect_probe_folder(generated.folder, **options)
    assert isinstance(folder, ProbeFolder), folder
    return folder


def row_counts() -> dict[str, int]:
    return {table.__name__: len(table()) for table in PROBE_TABLES}


def nothing_stored() -> bool:
    return not any(row_counts().values())


def go_events(subject_id: int) -> dict[int, float]:
    trials, times = (experiment.TrialEvent & {"subject_id": subject_id, "trial_event_type": "go"}).to_arrays(
        "trial", "trial_event_time")
    return {int(t): float(go) for t, go in zip(trials, times)}


def expected_go_cues(generated: ephysgen.GeneratedProbe, subject_id: int, *, go_cue: bool,
                     strig: bool) -> np.ndarray:
    """(s on the recording's clock) each recorded trial's go cue, as the ingest must take it."""
    truth = generated.truth
    if go_cue:
        return truth.go_cues / truth.sample_rate
    trigger = truth.triggers if strig else truth.trial_starts  # without sTrig: the per-trial file's start
    events = go_events(subject_id)
    return trigger / truth.sample_rate + np.array([events.get(n, np.nan) for n in generated.trial_numbers])


def assert_round_trip(generated: ephysgen.GeneratedProbe, subject_id: int, go: np.ndarray) -> None:
    """Spike counts per unit and per unit x trial exactly, every time within ATOL, UnitTrial exactly
    the stored trials with spikes, a TrialSpikes row (maybe empty) per unit and stored trial."""
    truth = generated.truth
    restriction = {"subject_id": subject_id, "insertion_number": generated_probe_number(generated)}
    units = (ephys.Unit & restriction).to_dicts(order_by="unit")
    np.testing.assert_array_equal([u["unit"] for u in units], truth.units)
    assert tuple(u["unit_quality"] for u in units) == truth.qualities
    np.testing.assert_array_equal([u["spike_times"].size for u in units], truth.unit_counts())
    for u in units:
        np.testing.assert_allclose(u["spike_times"], truth.unit_times(u["unit"]), rtol=0, atol=ATOL)
    stored = set((experiment.SessionTrial & {"subject_id": subject_id}).to_arrays("trial").tolist())
    column = {n: j for j, n in enumerate(generated.trial_numbers) if n in stored}
    pairs = {(r["unit"], r["trial"]): r["spike_times"] for r in (ephys.TrialSpikes & restriction).to_dicts()}
    with_go = {n for n, j in column.items() if np.isfinite(go[j])}
    assert set(pairs) == {(int(u), n) for u in truth.units for n in with_go}
    counts = truth.unit_trial_counts()
    unit_index = {int(u): i for i, u in enumerate(truth.units)}
    for (unit, trial), times in pairs.items():
        j = column[trial]
        assert times.size == counts[unit_index[unit], j]
        mask = (truth.spike_clusters == unit) & (truth.spike_trials == j)
        np.testing.assert_allclose(times, truth.spike_times[mask] / truth.sample_rate - go[j], rtol=0, atol=ATOL)
    unit_trials = {(r["unit"], r["trial"]) for r in (ephys.Unit.UnitTrial & restriction).to_dicts()}
    assert unit_trials == {(int(u), n) for u in truth.units for n, j in column.items()
                           if counts[unit_index[int(u)], j] > 0}


def generated_probe_number(generated: ephysgen.GeneratedProbe) -> int:
    return inspect_probe_folder(generated.folder).probe


# --------------------------------------------------------------------------
# The real bitcode file with the real session.
# --------------------------------------------------------------------------


def test_real_bitcode_file_with_the_real_session(config, rig_root, ephys_root):
    place_real_session(rig_root)
    add_subjects([SubjectEntry(subject_id=407513, h2o="dl25", sex="M")])
    assert rescan(config).files["ingested"] == 1
    real = ephysgen.behavior_bitcodes(REAL_SESSION)  # 11 trials; the bitcode file has the first 10
    generated = write_probe(ephys_root, real, h2o="dl25", day=date(2018, 2, 25), drop_last=1, strig=False,
                            go_cue=False, trial_num=False, seed=2)
    shutil.copyfile(REAL_BITCODE, generated.bitcode)  # the same 10 codes, no sTrig / goCue / trialNum
    probe = ingest_probe(folder_of(generated))
    assert (probe.alignment, probe.recorded_trials, probe.trials) == ("bitcode", 10, 10)
    assert probe.units == generated.truth.units.size and probe.spikes == int(generated.truth.unit_mask().sum())
    record = ingest.EphysIngest.to_dicts()[0]
    assert {k: record[k] for k in ("sorter", "alignment", "first_trial", "recorded_trials", "matched_trials",
                                   "agreeing_codes", "compared_codes", "trial_starts", "go_cues")} == {
        "sorter": "jrclust3", "alignment": "bitcode", "first_trial": 1, "recorded_trials": 10, "matched_trials": 10,
        "agreeing_codes": 10, "compared_codes": 10, "trial_starts": "viT_offset_file", "go_cues": "behavior"}
    assert record["probe_folder"] == "dl25/2018-02-25/1" and record["data_root"] == str(ephys_root)
    assert go_events(407513)[1] == pytest.approx(3.33)  # the real trial 1's go cue, 3.33 s into the trial
    assert_round_trip(generated, 407513, expected_go_cues(generated, 407513, go_cue=False, strig=False))
    files = {f["ephys_file"]: f for f in ingest.EphysIngest.EphysFile.to_dicts()}
    assert set(files) == {p.name for p in (generated.sorting, generated.bitcode, generated.meta)}
    real_bytes = REAL_BITCODE.read_bytes()
    assert files["dl25_bitcode.mat"]["file_sha256"] == hashlib.sha256(real_bytes).hexdigest()
    assert files["dl25_bitcode.mat"]["file_size"] == len(real_bytes)


def test_probe_insertion_from_the_meta(config, rig_root, ephys_root):
    behavior = behavior_session(config, rig_root)
    generated = write_probe(ephys_root, behavior, seed=4)
    ingest_probe(folder_of(generated))
    insertion = ephys.ProbeInsertion.to_dicts()[0]
    assert insertion["probe"] == "641251510" and insertion["probe_type"] == "neuropixels 1.0 - 3A"
    assert insertion["electrode_config_name"] == "1-384"  # bank 0, as the real 3A meta's imro table says
    assert (ephys.ProbeInsertion.RecordingSystemSetup.to_dicts()[0]["sampling_rate"]) == 30000.0
    assert len(lab.ProbeType.Electrode & {"probe_type": "neuropixels 1.0 - 3A"}) == 960
    assert len(lab.ElectrodeConfig.Electrode & {"electrode_config_name": "1-384"}) == 384
    units = ephys.Unit.to_dicts(order_by="unit")
    sites = ephysgen.jrclust_unit_values(generated.truth, seed=4)["sites"]
    assert [u["unit_site"] for u in units] == sites.tolist() == [u["electrode"] for u in units]
    assert len({u["unit_uid"] for u in units}) == len(units)
    assert all(u["waveform"].shape == (ephysgen.WAVEFORM_SAMPLES,) for u in units)


# --------------------------------------------------------------------------
# Generated probes: every sorter and layout, trial sources, fallback.
# --------------------------------------------------------------------------


SORTERS = ("jrclust3", "jrclust4", "kilosort")
LAYOUTS = ("dashed", "compact", "old")


def test_every_sorter_and_layout_late_start_early_stop(config, rig_root, ephys_root):
    """Nine probes of one session, each sorter in each layout (probe numbers 1..9)."""
    behavior = behavior_session(config, rig_root)
    methods = {"jrclust3": "jrclust_v3", "jrclust4": "jrclust_v4", "kilosort": "kilosort"}
    for number, (sorter, layout) in enumerate([(s, l) for s in SORTERS for l in LAYOUTS], start=1):
        generated = write_probe(ephys_root, behavior, sorter=sorter, layout=layout, skip_first=3, drop_last=2,
                                seed=number, probe=number)
        probe = ingest_probe(folder_of(generated))
        assert (probe.key.insertion_number, probe.trials, probe.sorter) == (number, 19, sorter), (sorter, layout)
        record = (ingest.EphysIngest & {"insertion_number": number}).to_dicts()[0]
        assert (record["first_trial"], record["trial_starts"], record["go_cues"]) == (4, "sTrig", "goCue")
        assert_round_trip(generated, SUBJECT, expected_go_cues(generated, SUBJECT, go_cue=True, strig=True))
        methods_found = (ephys.Unit & {"insertion_number": number}).to_arrays("clustering_method").tolist()
        assert set(methods_found) == {methods[sorter]}, (sorter, layout)


def test_go_cues_from_the_behavior_when_the_bitcode_file_has_none(config, rig_root, ephys_root):
    behavior = behavior_session(config, rig_root)
    for number, (sorter, strig) in enumerate([("jrclust3", False), ("kilosort", True)], start=1):
        generated = write_probe(ephys_root, behavior, sorter=sorter, skip_first=1, drop_last=1, strig=strig,
                                go_cue=False, trial_num=False, bitcode_fmt="v7.3", seed=6, probe=number)
        ingest_probe(folder_of(generated))
        record = (ingest.EphysIngest & {"insertion_number": number}).to_dicts()[0]
        assert (record["trial_starts"], record["go_cues"]) == ("sTrig" if strig else "viT_offset_file", "behavior")
        assert_round_trip(generated, SUBJECT, expected_go_cues(generated, SUBJECT, go_cue=False, strig=strig))


def test_skipped_behavior_trials_keep_their_spikes_out_of_trial_tables(config, rig_root, ephys_root):
    # Bpod trials 6 and 11 lack a MAP state: not ingested, so no SessionTrial, but the
    # recording saw them (their codes are in the bitcode file).
    behavior = behavior_session(config, rig_root, n_trials=20, missing_state_trials=[5, 10])
    assert sorted(experiment.SessionTrial.to_arrays("trial").tolist()) == [n for n in range(1, 21) if n not in (6, 11)]
    generated = write_probe(ephys_root, behavior, skip_first=2, seed=7)
    probe = ingest_probe(folder_of(generated))
    assert probe.recorded_trials == 18 and probe.trials == 16
    assert 6 not in ephys.TrialSpikes.to_arrays("trial") and 11 not in ephys.Unit.UnitTrial.to_arrays("trial")
    assert_round_trip(generated, SUBJECT, expected_go_cues(generated, SUBJECT, go_cue=True, strig=True))


def test_trial_num_fallback_when_codes_disagree(config, rig_root, ephys_root):
    behavior = behavior_session(config, rig_root)
    garbled = {n: code if n % 3 else code[::-1] for n, code in behavior.items()}  # a third of the codes garbled
    generated = write_probe(ephys_root, garbled, skip_first=2, seed=8)
    probe = ingest_probe(folder_of(generated))
    record = ingest.EphysIngest.to_dicts()[0]
    assert probe.alignment == "trialNum" and record["first_trial"] is None
    assert record["agreeing_codes"] < record["compared_codes"]
    assert_round_trip(generated, SUBJECT, expected_go_cues(generated, SUBJECT, go_cue=True, strig=True))


def test_the_datajoint_insert_path_stores_the_same_rows(config, rig_root, ephys_root, monkeypatch):
    """Backends without COPY get the rows through DataJoint's insert: the same values."""
    behavior = behavior_session(config, rig_root)
    copied = write_probe(ephys_root, behavior, sorter="kilosort", seed=9, probe=1)
    ingest_probe(folder_of(copied))
    inserted = write_probe(ephys_root, behavior, sorter="kilosort", seed=9, probe=2)
    monkeypatch.setattr(BulkWriter, "use_copy", False)
    ingest_probe(folder_of(inserted))

    def rows(table, probe):
        found = (table & {"insertion_number": probe}).to_dicts(order_by=table.primary_key)
        return [{k: v for k, v in r.items() if k not in ("insertion_number", "unit_uid")} for r in found]

    for table in (ephys.Unit, ephys.Unit.UnitTrial, ephys.TrialSpikes):
        by_copy, by_insert = rows(table, 1), rows(table, 2)
        assert len(by_copy) == len(by_insert) > 0
        for a, b in zip(by_copy, by_insert):
            assert a.keys() == b.keys()
            for name in a:
                if isinstance(a[name], np.ndarray):
                    assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
                    np.testing.assert_array_equal(a[name], b[name])
                else:
                    assert a[name] == b[name] or (a[name] != a[name] and b[name] != b[name]), name
    assert (ephys.TrialSpikes & "insertion_number = 1").to_arrays("spike_times")[0].dtype == np.float64


def test_blobs_are_datajoints_own_serialization():
    from datajoint import blob

    for values in (np.zeros(0), np.array([1.5]), np.linspace(-3, 4, 1000)):
        block = pgcopy.Block({"unit": np.array([7])}, 1, blob="spike_times", values=values,
                             lengths=np.array([values.size]))
        encoded = pgcopy.block_bytes(block, ["int4"]).tobytes()
        head = 2 + 4 + 4 + 4  # field count, unit's length and value, the blob's length
        assert encoded[head:] == blob.pack(values, compress=False)
        assert encoded[head:head + pgcopy.BLOB_HEAD.itemsize] == pgcopy.plain_blob_head(values.size)
        np.testing.assert_array_equal(blob.unpack(encoded[head:]), values)


def test_copy_rows_read_back_as_written():
    """The rows mapd writes in COPY's binary format are the rows it reads from one: blocks and dicts, NULLs."""
    block = pgcopy.Block({"unit": np.array([3, 4]), "method": "kilosort"}, 2, blob="spike_times",
                         values=np.array([0.5, 1.5, 2.5]), lengths=np.array([1, 2]))
    row = {"unit": 5, "amp": float("nan"), "name": "jrclust_v3", "site": None}
    stream = pgcopy.ChunkStream(iter([pgcopy.HEADER, pgcopy.block_bytes(block, ["int4", "varchar"]),
                                      pgcopy.row_bytes(row, ["int4", "float8", "varchar", "int2"]), pgcopy.TRAILER]))
    data = b"".join(iter(lambda: stream.read(7), b""))  # read as psycopg2 does, in pieces
    rows = [[bytes(field) for field in fields] for fields in pgcopy.read_rows(memoryview(data))]
    blobs = [blob_bytes for *_, blob_bytes in rows[:2]]
    assert [r[:2] for r in rows[:2]] == [[(3).to_bytes(4, "big"), b"kilosort"], [(4).to_bytes(4, "big"), b"kilosort"]]
    assert [np.frombuffer(b[pgcopy.BLOB_HEAD.itemsize:]).tolist() for b in blobs] == [[0.5], [1.5, 2.5]]
    assert rows[2] == [(5).to_bytes(4, "big"), b"", b"jrclust_v3", b""]  # NaN and None: NULL


# --------------------------------------------------------------------------
# Waiting, exactly once, bad input: nothing written.
# --------------------------------------------------------------------------


def test_waits_for_its_subject_and_behavior_session(config, rig_root, ephys_root):
    generated = write_probe(ephys_root, ephysgen.random_codes(24, seed=3), seed=10)
    with pytest.raises(ProbeWaiting, match="no subject with water-restriction number dl7"):
        ingest_probe(folder_of(generated))
    add_subjects([SubjectEntry(subject_id=SUBJECT, h2o=H2O)])
    with pytest.raises(ProbeWaiting, match="waiting for the behavior session of dl7 on 2018-03-01"):
        ingest_probe(folder_of(generated))
    assert nothing_stored()
    behavior = behavior_session(config, rig_root)
    generated = write_probe(ephys_root, behavior, seed=10)
    assert ingest_probe(folder_of(generated)).trials == 24


def test_a_second_ingest_is_refused(config, rig_root, ephys_root, monkeypatch):
    generated = write_probe(ephys_root, behavior_session(config, rig_root), seed=11)
    ingest_probe(folder_of(generated))
    before = row_counts()
    with pytest.raises(ProbeAlreadyIngested, match="already ingested"):
        ingest_probe(folder_of(generated))
    # Another process committed between this one's check and its insert: the database refuses.
    monkeypatch.setattr(probe_ingest, "_refuse_ingested", lambda key: None)
    with pytest.raises(ProbeAlreadyIngested, match="ingested by another process"):
        ingest_probe(folder_of(generated))
    assert row_counts() == before


def test_a_failing_insert_rolls_everything_back(config, rig_root, ephys_root, monkeypatch):
    generated = write_probe(ephys_root, behavior_session(config, rig_root), seed=12)

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(probe_ingest, "_insert_record", fail)  # after every ephys row was written
    with pytest.raises(RuntimeError, match="disk full"):
        ingest_probe(folder_of(generated))
    assert nothing_stored()
    monkeypatch.undo()
    assert ingest_probe(folder_of(generated)).units == generated.truth.units.size  # and it ingests afterwards


BAD_INPUTS = ("no offset", "best offset", "no bitcode", "truncated", "garbled", "short sites", "trial files",
              "short clusters")


def bad_probe(ephys_root: Path, behavior: dict[int, str], how: str, number: int) -> tuple[ProbeFolder, str, type]:
    """Probe ``number``, broken in one way: (folder, expected problem, expected error type)."""
    options = {"seed": 13, "probe": number, "sorter": "kilosort" if how == "short clusters" else "jrclust3"}
    if how == "no offset":
        generated = write_probe(ephys_root, ephysgen.random_codes(20, seed=99), trial_num=False, **options)
        return folder_of(generated), r"match at no offset: no recorded code is among", ProbeFormatError
    if how == "best offset":
        garbled = {n: code if n % 3 else code[::-1] for n, code in behavior.items()}
        generated = write_probe(ephys_root, garbled, trial_num=False, **options)
        return folder_of(generated), r"at the best one \(recorded trial 1 = Bpod trial 1\) \d+ of \d+ comparable " \
                                     r"codes agree", ProbeFormatError
    generated = write_probe(ephys_root, behavior, **options)
    if how == "no bitcode":
        generated.bitcode.unlink()
        return folder_of(generated, require_bitcode=False), "no bitcode file dl7_bitcode.mat", ProbeFormatError
    if how in ("truncated", "garbled"):
        ephysgen.damage(generated.sorting, {"truncated": "truncate", "garbled": "garble"}[how])
        return folder_of(generated), "truncated HDF5" if how == "truncated" else "corrupt", EphysFormatError
    if how == "short sites":
        ephysgen.write_jrclust(generated.sorting, generated.truth, seed=13, shorten=("viSite_spk",))
        return folder_of(generated), r"viSite_spk has \d+ values for \d+ spikes", EphysFormatError
    if how == "trial files":
        ephysgen.write_bitcode(generated.bitcode, generated.codes[:-1])  # no sTrig; one code fewer than files
        return folder_of(generated), r"viT_offset_file has 24 values for 23 trials", ProbeFormatError
    if how == "short clusters":
        ephysgen.write_kilosort(generated.sorting, generated.truth, seed=13, shorten_clusters=True)
        return folder_of(generated), r"spike_clusters.npy: \d+ values for \d+ spikes", EphysFormatError
    raise ValueError(how)


def test_bad_input_is_an_error_naming_the_file_and_writes_nothing(config, rig_root, ephys_root):
    behavior = behavior_session(config, rig_root)
    for number, how in enumerate(BAD_INPUTS, start=1):
        folder, problem, error_type = bad_probe(ephys_root, behavior, how, number)
        with pytest.raises(error_type, match=problem) as raised:
            ingest_probe(folder)
        assert str(folder.path) in str(raised.value), how  # the message names the file (or the folder)
        assert not getattr(raised.value, "transient", False), how
        assert nothing_stored(), how


def test_a_file_changing_while_it_is_read_is_transient(config, rig_root, ephys_root, monkeypatch):
    generated = write_probe(ephys_root, behavior_session(config, rig_root), seed=15)
    real_stat, calls = probe_ingest._stat, {}

    def stat(path):  # the bitcode file is rewritten between the readers' start and the end of hashing
        size, mtime = real_stat(path)
        calls[path] = calls.get(path, 0) + 1
        return (size, mtime + 1) if path == generated.bitcode and calls[path] > 1 else (size, mtime)

    monkeypatch.setattr(probe_ingest, "_stat", stat)
    with pytest.raises(EphysFormatError, match="changed while it was read") as raised:
        ingest_probe(folder_of(generated))
    assert raised.value.transient and nothing_stored()
