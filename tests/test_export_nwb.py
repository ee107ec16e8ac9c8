"""NWB export: sessions ingested from generated and real files, written, inspected (DANDI) and read back."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import numpy as np
import pytest

import bpodgen
import ephysgen
from conftest import mapd_here, place_real_session
from mapd.rescan import rescan
from mapd.export.nwb import NwbExists, session_timezone, write_nwb
from mapd.export.session import SessionSelection, read_session, select_sessions
from mapd.formats.probe_folders import inspect_probe_folder
from mapd.ingest.probe import ingest_probe
from mapd.runtime import open_database
from mapd.schemas import ephys, experiment, lab
from mapd.subjects import SubjectEntry, add_subjects

H2O, SUBJECT = "dl7", 1001
START = datetime(2018, 3, 1, 9, 30, 0)
ZONE = "America/New_York"
ATOL = 1e-6  # (s)


@pytest.fixture
def config(db, load, rig_root):
    config = load({"RRig": rig_root}, timezone=ZONE)
    open_database(config)
    return config


def ingest_generated_session(config, rig_root: Path, ephys_root: Path, *, probes: int = 2, n_trials: int = 24,
                             sorters=("jrclust3", "kilosort")) -> None:
    """A generated behavior session of H2O with ``probes`` generated probes (late start, early stop), ingested."""
    add_subjects([SubjectEntry(subject_id=SUBJECT, h2o=H2O, sex="F", dob=date(2017, 11, 2))])
    generated = bpodgen.write_session(bpodgen.session_path(rig_root, H2O, "tw", START), h2o=H2O, start=START,
                                      n_trials=n_trials, seed=3)
    assert rescan(config).files["ingested"] == 1
    behavior = {t.index + 1: t.bitcode for t in generated.trials}
    for number in range(1, probes + 1):
        probe = ephysgen.write_probe(ephys_root, h2o=H2O, session_date=START.date(), behavior=behavior, probe=number,
                                     sorter=sorters[(number - 1) % len(sorters)], skip_first=2, drop_last=1,
                                     n_spikes=5000, n_units=7, seed=number)
        ingest_probe(inspect_probe_folder(probe.folder))


def read_back(path: Path):
    from pynwb import NWBHDF5IO

    io = NWBHDF5IO(str(path), "r")
    return io, io.read()


def inspection_problems(path: Path) -> list:
    from nwbinspector import Importance, inspect_nwbfile, load_config

    results = list(inspect_nwbfile(nwbfile_path=str(path), config=load_config("dandi")))
    return [f"{r.importance.name} {r.check_function_name} at {r.location}: {r.message}" for r in results
            if r.importance in (Importance.CRITICAL, Importance.BEST_PRACTICE_VIOLATION, Importance.ERROR)]


def validation_errors(path: Path) -> list:
    from pynwb import validate

    return list(validate(path=str(path)))


def test_a_session_with_two_probes_round_trips(config, rig_root, tmp_path):
    ingest_generated_session(config, rig_root, tmp_path / "ephys")
    [key] = select_sessions(SessionSelection())
    path = write_nwb(read_session(key), tmp_path / "nwb", session_timezone(ZONE))
    assert path == tmp_path / "nwb" / f"sub-{SUBJECT}" / f"sub-{SUBJECT}_ses-20180301_behavior+ecephys.nwb"
    problems = inspection_problems(path)
    assert not problems, "\n".join(problems)
    assert validation_errors(path) == []
    io, nwb = read_back(path)
    with io:
        assert nwb.session_start_time.isoformat() == "2018-03-01T09:30:00-05:00"
        assert (nwb.subject.subject_id, nwb.subject.sex, nwb.subject.species) == (str(SUBJECT), "F", "Mus musculus")
        assert nwb.subject.date_of_birth.date() == date(2017, 11, 2)
        assert nwb.experimenter == ("daveliu",) and nwb.lab and nwb.institution
        assert_trials_match(nwb, key.as_dict())
        assert_licks_match(nwb, key.as_dict())
        assert_probes_match(nwb, key.as_dict())
        assert_units_match(nwb, key.as_dict())


def assert_trials_match(nwb, key: dict) -> None:
    trials = nwb.trials.to_dataframe()
    rows = (experiment.SessionTrial * experiment.BehaviorTrial & key).to_dicts(order_by="trial")
    assert len(trials) == len(rows) == len(experiment.SessionTrial & key)
    assert trials["trial"].tolist() == [r["trial"] for r in rows]
    np.testing.assert_allclose(trials["start_time"], [float(r["start_time"]) for r in rows], atol=ATOL)
    np.testing.assert_allclose(trials["stop_time"], [float(r["stop_time"]) for r in rows], atol=ATOL)
    for column, attribute in (("instruction", "trial_instruction"), ("outcome", "outcome"),
                              ("early_lick", "early_lick")):
        assert trials[column].tolist() == [r[attribute] for r in rows]
    go = {(r["trial"]): float(r["trial_event_time"]) for r in
          (experiment.TrialEvent & key & {"trial_event_type": "go"}).to_dicts(order_by="trial_event_time DESC")}
    expected_go = [float(r["start_time"]) + go.get(r["trial"], np.nan) for r in rows]
    np.testing.assert_allclose(trials["go_cue_time"], expected_go, atol=ATOL)
    assert trials["go_cue_time"].notna().sum() == len(go) > 0
    photostim = set((experiment.PhotostimTrial & key).to_arrays("trial").tolist())
    assert [t for t, p in zip(trials["trial"], trials["photostim"]) if p] == sorted(photostim)
    codes = dict(zip(*(experiment.TrialNote & key & {"trial_note_type": "bitcode"}).to_arrays("trial", "trial_note")))
    assert trials["bitcode"].tolist() == [codes.get(r["trial"], "") for r in rows]


def assert_licks_match(nwb, key: dict) -> None:
    licks = nwb.events["licks"].to_dataframe()
    rows = (experiment.ActionEvent * experiment.SessionTrial & key).to_dicts()
    assert len(licks) == len(rows) > 0
    assert sorted(licks["side"]) == sorted(r["action_event_type"].removesuffix(" lick") for r in rows)
    expected = sorted(float(r["start_time"]) + float(r["action_event_time"]) for r in rows)
    np.testing.assert_allclose(licks["timestamp"], expected, atol=ATOL)
    assert np.all(np.diff(licks["timestamp"]) >= 0)


def assert_probes_match(nwb, key: dict) -> None:
    insertions = (ephys.ProbeInsertion & key).to_dicts(order_by="insertion_number")
    assert sorted(nwb.electrode_groups) == [f"probe{p['insertion_number']}" for p in insertions]
    assert sorted(nwb.devices) == sorted(nwb.electrode_groups)
    electrodes = nwb.electrodes.to_dataframe()
    for probe in insertions:
        config = {"probe_type": probe["probe_type"], "electrode_config_name": probe["electrode_config_name"]}
        rows = (lab.ElectrodeConfig.Electrode * lab.ProbeType.Electrode & config).to_dicts(order_by="electrode")
        mine = electrodes[electrodes["group_name"] == f"probe{probe['insertion_number']}"]
        assert len(mine) == len(rows) == 384
        assert mine["probe_electrode"].tolist() == [r["electrode"] for r in rows]
        np.testing.assert_allclose(mine["rel_y"], [r["y_coord"] for r in rows])
        assert nwb.devices[f"probe{probe['insertion_number']}"].serial_number == probe["probe"]


def assert_units_match(nwb, key: dict) -> None:
    units = nwb.units
    rows = (ephys.Unit & key).to_dicts(order_by=("insertion_number", "clustering_method", "unit"))
    assert len(units) == len(rows) > 0
    # Written whole, never appended to: contiguous datasets, not hdmf's chunks for expandable columns.
    stored = {c.name: getattr(c.data, "dataset", c.data) for c in (*units.columns, units.id)}  # h5py datasets
    assert [name for name, dataset in stored.items() if dataset.chunks is not None] == []
    assert units.id[:].tolist() == [r["unit_uid"] for r in rows]
    assert list(units["quality"][:]) == [r["unit_quality"] for r in rows]
    np.testing.assert_allclose(units["position_y"][:], [r["unit_posy"] for r in rows])
    np.testing.assert_allclose(units["amplitude"][:], [np.nan if r["unit_amp"] is None else r["unit_amp"]
                                                       for r in rows])
    go = {r["trial"]: float(r["start_time"]) + float(r["trial_event_time"]) for r in
          (experiment.TrialEvent * experiment.SessionTrial & key & {"trial_event_type": "go"}).to_dicts(
              order_by="trial_event_time DESC")}
    electrodes = nwb.electrodes.to_dataframe()
    for i, row in enumerate(rows):
        unit_key = {k: row[k] for k in ("subject_id", "session", "insertion_number", "clustering_method", "unit")}
        trial_spikes = (ephys.TrialSpikes & unit_key).to_dicts(order_by="trial")
        expected = np.sort(np.concatenate([go[t["trial"]] + t["spike_times"] for t in trial_spikes]))
        written = units.get_unit_spike_times(i)
        assert written.size == expected.size == sum(t["spike_times"].size for t in trial_spikes)
        np.testing.assert_allclose(written, expected, atol=ATOL)
        assert expected.size <= row["spike_times"].size  # spikes outside the stored trials are left out
        assert units["electrode_group"][i].name == f"probe{row['insertion_number']}"
        [electrode] = units["electrodes"][i].index.tolist()
        assert electrodes.loc[electrode, "probe_electrode"] == row["electrode"]
        if row["waveform"] is not None:
            np.testing.assert_allclose(units["waveform_mean"][i][:row["waveform"].size], row["waveform"])


def test_the_real_behavior_session_is_a_behavior_file(config, rig_root, tmp_path):
    place_real_session(rig_root)
    add_subjects([SubjectEntry(subject_id=407513, h2o="dl25", sex="M", dob=date(2017, 10, 2))])
    assert rescan(config).files["ingested"] == 1
    [key] = select_sessions(SessionSelection(h2o="dl25"))
    path = write_nwb(read_session(key), tmp_path, session_timezone(ZONE))
    assert path.name == "sub-407513_ses-20180225_behavior.nwb"
    problems = inspection_problems(path)
    assert not problems, "\n".join(problems)
    assert validation_errors(path) == []
    io, nwb = read_back(path)
    with io:
        assert nwb.session_start_time.isoformat() == "2018-02-25T11:23:28-05:00"  # Info.SessionStartTime_UTC
        assert len(nwb.trials) == len(experiment.SessionTrial & key.as_dict())
        assert nwb.units is None and not nwb.electrode_groups
        assert_trials_match(nwb, key.as_dict())
        assert_licks_match(nwb, key.as_dict())
    with pytest.raises(NwbExists):
        write_nwb(read_session(key), tmp_path)
    assert write_nwb(read_session(key), tmp_path, overwrite=True) == path


def test_selection_by_subject_h2o_and_dates(config, rig_root):
    add_subjects([SubjectEntry(subject_id=SUBJECT, h2o=H2O), SubjectEntry(subject_id=1002, h2o="dl8")])
    for h2o, day in ((H2O, 1), (H2O, 3), ("dl8", 2)):
        start = START.replace(day=day)
        bpodgen.write_session(bpodgen.session_path(rig_root, h2o, "tw", start), h2o=h2o, start=start, n_trials=8)
    assert rescan(config).files["ingested"] == 3
    dates = lambda selection: [(experiment.Session & k.as_dict()).to_dicts()[0]["session_date"].day
                               for k in select_sessions(selection)]
    assert dates(SessionSelection()) == [1, 3, 2]
    assert dates(SessionSelection(h2o=H2O)) == [1, 3]
    assert dates(SessionSelection(subject_id=1002)) == [2]
    assert dates(SessionSelection(since=date(2018, 3, 2))) == [3, 2]
    assert dates(SessionSelection(h2o=H2O, until=date(2018, 3, 2))) == [1]


def test_the_commands_export_each_session_and_one_failure_stops_no_other(config, rig_root, tmp_path):
    add_subjects([SubjectEntry(subject_id=SUBJECT, h2o=H2O, dob=date(2017, 11, 2)),
                  SubjectEntry(subject_id=1002, h2o="dl8", dob=date(2017, 11, 2))])
    for h2o, day in ((H2O, 1), (H2O, 3), ("dl8", 2)):
        start = START.replace(day=day)
        bpodgen.write_session(bpodgen.session_path(rig_root, h2o, "tw", start), h2o=h2o, start=start, n_trials=8)
    assert rescan(config).files["ingested"] == 3
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub-1002").write_text("not a directory")  # dl8's session cannot be written
    result = mapd_here("export", "nwb", "--out", str(out), config=config.source)
    assert result.returncode == 1, result.stderr
    assert "dl8 2018-03-02: failed: " in result.stdout and "sub-1002" in result.stdout
    assert "3 sessions: written 2, exists 0, failed 1" in result.stdout
    assert sorted(p.name for p in (out / f"sub-{SUBJECT}").iterdir()) == [
        f"sub-{SUBJECT}_ses-20180301_behavior.nwb", f"sub-{SUBJECT}_ses-20180303_behavior.nwb"]
    again = mapd_here("export", "nwb", "--out", str(out), "--h2o", H2O, "--until", "2018-03-01", config=config.source)
    assert again.returncode == 0 and "1 sessions: written 0, exists 1, failed 0" in again.stdout
    report = mapd_here("report", "--out", str(tmp_path / "reports"), "--subject-id", "1002", config=config.source)
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "reports" / "sub-1002" / "ses-20180302" / "performance.png").is_file()
    none = mapd_here("report", "--out", str(tmp_path), "--since", "2019-01-01", config=config.source)
    assert none.returncode == 2 and none.stderr.strip() == "mapd: no ingested session matches the selection"
    bad = mapd_here("export", "nwb", "--out", str(tmp_path), "--since", "March", config=config.source)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_timezone_and_export_configuration(write_config):
    from mapd.config import ConfigError, load_config

    loaded = load_config(write_config(timezone="Europe/Lisbon", export={"nwb": "nwb", "reports": "/srv/reports"}))
    assert loaded.timezone == "Europe/Lisbon"
    assert loaded.export.targets == {"nwb": loaded.source.parent / "nwb", "reports": Path("/srv/reports")}
    assert load_config(write_config()).export.targets == {}  # off by default
    with pytest.raises(ConfigError, match="timezone: .*unknown time zone 'Mars/Olympus'"):
        load_config(write_config(timezone="Mars/Olympus"))
    with pytest.raises(ConfigError, match="export.videos: unknown key"):
        load_config(write_config(export={"videos": "v"}))


def test_trial_spikes_joined_by_the_server_are_the_ones_datajoint_decodes(config, rig_root, tmp_path):
    from mapd.export import session as export_session

    def units_of(restriction):
        return {(str(m), int(u)): k for k, (m, u) in enumerate(zip(*(ephys.Unit & restriction).to_arrays(
            "clustering_method", "unit", order_by=("clustering_method", "unit"))))}

    ingest_generated_session(config, rig_root, tmp_path / "ephys", probes=2)
    [key] = select_sessions(SessionSelection())
    for number in (1, 2):
        restriction = {**key.as_dict(), "insertion_number": number}
        joined = export_session._trial_spikes_joined_by_server(restriction, units_of(restriction))
        decoded = export_session._trial_spikes_decoded(restriction, units_of(restriction))
        assert joined is not None and joined.trial.size == len(ephys.TrialSpikes & restriction) > 0
        assert joined.times.size > 1000
        for field in ("unit", "trial", "times", "offsets"):
            np.testing.assert_array_equal(getattr(joined, field), getattr(decoded, field))

    # A blob written by DataJoint's own insert is compressed: the server cannot join it, DataJoint decodes.
    restriction = {**key.as_dict(), "insertion_number": 1}
    units = list(units_of(restriction))
    before = export_session._read_trial_spikes(restriction, units)
    first = (ephys.TrialSpikes & restriction).to_dicts(order_by=("clustering_method", "unit", "trial"), limit=1)[0]
    replaced = np.repeat([0.25, -0.5], 2000)  # compresses well: DataJoint stores it compressed
    ephys.TrialSpikes.update1({**first, "spike_times": replaced})
    assert export_session._trial_spikes_joined_by_server(restriction, units_of(restriction)) is None
    after = export_session._read_trial_spikes(restriction, units)
    np.testing.assert_array_equal(after.times[:replaced.size], replaced)
    np.testing.assert_array_equal(after.times[replaced.size:], before.times[before.offsets[1]:])
    np.testing.assert_array_equal(after.trial, before.trial)


def test_the_file_is_on_disk_before_its_name(config, rig_root, tmp_path, monkeypatch):
    from mapd.export import nwb

    ingest_generated_session(config, rig_root, tmp_path / "ephys", probes=0)
    [key] = select_sessions(SessionSelection())
    steps = []
    real_replace = nwb.os.replace
    monkeypatch.setattr(nwb, "fsync_file", lambda path: steps.append(("fsync file", path.name, path.stat().st_size)))
    monkeypatch.setattr(nwb, "fsync_directory", lambda path: steps.append(("fsync directory", path)))
    monkeypatch.setattr(nwb.os, "replace", lambda a, b: (steps.append(("rename", Path(b).name)), real_replace(a, b)))
    path = write_nwb(read_session(key), tmp_path / "nwb")
    assert [s[0] for s in steps] == ["fsync file", "rename", "fsync directory"]
    assert steps[0][1].endswith(".partial.nwb") and steps[0][2] == path.stat().st_size > 0
    assert steps[1][1] == path.name and steps[2][1] == path.parent


def test_a_session_has_one_file_when_its_probe_arrives_after_its_behavior_file_was_exported(config, rig_root, tmp_path):
    ingest_generated_session(config, rig_root, tmp_path / "ephys", probes=0)
    [key] = select_sessions(SessionSelection())
    behavior_only = write_nwb(read_session(key), tmp_path / "nwb")
    assert behavior_only.name.endswith("_behavior.nwb")
    codes = ephysgen.behavior_bitcodes(next(rig_root.rglob("*.mat")))
    probe = ephysgen.write_probe(tmp_path / "ephys", h2o=H2O, session_date=START.date(), behavior=codes,
                                 skip_first=2, n_spikes=2000, n_units=3, seed=4)
    ingest_probe(inspect_probe_folder(probe.folder))
    with_probe = read_session(key)
    with pytest.raises(NwbExists, match=f"{behavior_only.name} exists"):  # the session's file, under its old name
        write_nwb(with_probe, tmp_path / "nwb")
    path = write_nwb(with_probe, tmp_path / "nwb", overwrite=True)
    assert path.name.endswith("_behavior+ecephys.nwb")
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # the behavior-only file replaced
