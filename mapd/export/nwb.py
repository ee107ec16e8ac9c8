"""A session read by :mod:`mapd.export.session` -> one NWB file, named the DANDI way (pynwb).

The file holds the session's start (in the configured time zone), the
subject, lab and experimenter; the trials table; the licks as an events
table; per probe a device, an electrode group and its electrodes (positions
within the probe); and the units table with spike times on the session clock
(see :mod:`mapd.export.session` for how ephys time maps onto it).

It is written to a temporary name beside its final one, flushed to disk and
renamed, so neither a crash nor a power cut leaves half a file under the
final name.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
from hdmf.common import DynamicTableRegion, VectorData, VectorIndex
from pynwb import NWBHDF5IO, NWBFile, get_manager
from pynwb.device import Device, DeviceModel
from pynwb.ecephys import ElectrodeGroup
from pynwb.epoch import TimeIntervals
from pynwb.event import EventsTable, TimestampVectorData
from pynwb.file import ElectrodesTable, Subject
from pynwb.misc import Units

from ..durable import fsync_directory, fsync_file
from .session import ProbeData, SessionData

__all__ = ["NwbExists", "nwb_path", "session_timezone", "write_nwb"]

INSTITUTION = "Janelia Research Campus"
LAB = "Svoboda"  # the MAP pipeline's lab (the original NWB export's)
SPECIES = "Mus musculus"
SEX = {"M": "M", "F": "F", "Unknown": "U"}
# Electrode locations are Allen CCF terms (DANDI's practice): MAP's brain areas (lab.BrainArea) in them.
CCF_LOCATION = {"ALM": "MOs", "vS1": "SSp-bfd", "Thalamus": "TH", "Medulla": "MY", "Striatum": "STR", "Midbrain": "MB"}
UNKNOWN_LOCATION = "root"  # the CCF's whole brain: ephys.ProbeInsertion.InsertionLocation not entered


class NwbExists(Exception):
    """The session's NWB file exists and --overwrite was not given."""


MODALITIES = ("behavior", "behavior+ecephys")  # the file name's: without probes, with


def nwb_path(out: Path, data: SessionData, modality: str | None = None) -> Path:
    """``out/sub-{subject_id}/sub-{subject_id}_ses-{YYYYMMDD}_behavior[+ecephys].nwb`` (DANDI's layout);
    the modality the session's probes give, unless named."""
    subject = f"sub-{data.subject.subject_id}"
    modality = modality or MODALITIES[bool(data.probes)]
    return out / subject / f"{subject}_ses-{data.session_date:%Y%m%d}_{modality}.nwb"


def session_timezone(name: str | None) -> tzinfo | None:
    """The configured IANA zone; None: the host's (applied with its rules for the session's date)."""
    return ZoneInfo(name) if name else None


def write_nwb(data: SessionData, out: Path, zone: tzinfo | None = None, overwrite: bool = False) -> Path:
    """Write the session's NWB file below ``out``; returns its path.

    A file of the session under either name (a behavior-only file written
    before its probes were ingested) is the session's: NwbExists unless
    ``overwrite``, and with it, replaced, so that one session never has two files.
    """
    path = nwb_path(out, data)
    existing = [p for p in (nwb_path(out, data, m) for m in MODALITIES) if p.exists()]
    if existing and not overwrite:
        raise NwbExists(f"{existing[0]} exists (--overwrite replaces it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial.nwb")
    try:
        # pynwb's own type map rather than its default deep copy per file: the copy and the object
        # mappers built anew for it cost ~0.08 s a file, half of pynwb's fixed cost. mapd loads no extension.
        with NWBHDF5IO(str(partial), "w", manager=get_manager(copy=False)) as io:
            # The file is written whole and never appended to (a re-export replaces it): no expandable
            # table columns, so hdmf stores them contiguous instead of in chunks (spike times: ~20 ms less).
            io.write(build_nwbfile(data, zone), expandable=())
        # The daemon records the export as done: the file must be whole on disk before its name is.
        fsync_file(partial)
        os.replace(partial, path)
        for outdated in existing:
            if outdated != path:
                outdated.unlink()
        fsync_directory(path.parent)
    finally:
        partial.unlink(missing_ok=True)
    return path


def build_nwbfile(data: SessionData, zone: tzinfo | None = None) -> NWBFile:
    start = data.start.replace(tzinfo=zone) if zone is not None else data.start.astimezone()
    nwbfile = NWBFile(
        session_description=f"MAP delay-response task: {data.subject.h2o} on {data.session_date}, rig {data.rig}",
        identifier=str(uuid.uuid4()),
        session_start_time=start,
        session_id=f"{data.subject.h2o}-{data.key.session}",
        experimenter=[data.experimenter_name or data.experimenter],
        lab=LAB, institution=INSTITUTION,
        experiment_description="Mesoscale Activity Project (MAP): auditory delayed-response task in head-fixed mice",
        keywords=["MAP", "delayed response", "behavior"] + (["extracellular electrophysiology"] if data.probes else []),
        subject=_subject(data, start.tzinfo),
    )
    _add_trials(nwbfile, data)
    _add_licks(nwbfile, data)
    if data.probes:
        groups = [_add_probe(nwbfile, probe) for probe in data.probes]
        _add_units(nwbfile, data.probes, _add_electrodes(nwbfile, data.probes, groups))
    return nwbfile


def _subject(data: SessionData, zone: tzinfo) -> Subject:
    born = data.subject.date_of_birth
    return Subject(
        subject_id=str(data.subject.subject_id), sex=SEX.get(data.subject.sex, "U"), species=SPECIES,
        description=f"water-restriction number {data.subject.h2o}",
        date_of_birth=datetime(born.year, born.month, born.day, tzinfo=zone) if born else None,
    )


# --------------------------------------------------------------------------
# Behavior.
# --------------------------------------------------------------------------

TRIAL_COLUMNS = (  # (NWB column, Trials attribute, description)
    ("trial", "trial", "Bpod trial number (1-based; gaps: trials skipped at ingest)"),
    ("instruction", "instruction", "the side the mouse was instructed to lick: left | right"),
    ("outcome", "outcome", "hit | miss | ignore (no response)"),
    ("early_lick", "early_lick", "early (during sample or delay) | early, presample only | no early"),
    ("task_protocol", "task_protocol", "MAP task protocol number (experiment.TaskProtocol)"),
    ("auto_water", "auto_water", "water given after the response time, regardless of outcome"),
    ("free_water", "free_water", "water given in an empty trial"),
    ("sample_start_time", "sample", "(s) start of the sample period (first sample event); NaN: none"),
    ("delay_start_time", "delay", "(s) start of the delay period (first delay event); NaN: none"),
    ("go_cue_time", "go", "(s) the go cue (first go event); spike times are anchored to it; NaN: none"),
    ("photostim", "photostim", "the trial had photostimulation (experiment.PhotostimTrial)"),
    ("bitcode", "bitcode", "the trial's bitcode, sent to the ephys recording ('' when none)"),
)


def _add_trials(nwbfile: NWBFile, data: SessionData) -> None:
    """The trials table, its columns built whole from the arrays (no row-by-row append)."""
    trials = data.trials
    if not len(trials):
        return
    columns = [VectorData(name="start_time", description="(s) start of the trial", data=trials.start),
               VectorData(name="stop_time", description="(s) end of the trial", data=trials.stop)]
    for name, attribute, description in TRIAL_COLUMNS:
        values = getattr(trials, attribute)
        columns.append(VectorData(name=name, description=description,
                                  data=values))
    nwbfile.trials = TimeIntervals(name="trials", description="the session's Bpod trials (those ingested)",
                                   columns=columns, id=np.arange(len(trials)))


def _add_licks(nwbfile: NWBFile, data: SessionData) -> None:
    licks = data.licks
    columns = [
        TimestampVectorData(name="timestamp", description="(s) when the lick began, on the session clock",
                            data=licks.time),
        VectorData(name="side", description="lick port: left | right", data=licks.side),
        VectorData(name="trial", description="Bpod trial number", data=licks.trial.astype(np.int64)),
    ]
    nwbfile.add_events_table(EventsTable(
        name="licks", description="licks at the lick ports (Bpod Port1In: left, Port2In: right)",
        source_description="Bpod lick port events", columns=columns, id=np.arange(licks.time.size)))


# --------------------------------------------------------------------------
# Probes and units.
# --------------------------------------------------------------------------


def _add_probe(nwbfile: NWBFile, probe: ProbeData) -> ElectrodeGroup:
    """Device and electrode group of one probe."""
    name = f"probe{probe.insertion_number}"
    model = _device_model(nwbfile, probe.probe_type) if probe.probe_type else None
    device = Device(name=name, description=f"probe {probe.insertion_number} of the session"
                    + (f" ({probe.probe_type})" if probe.probe_type else ""),
                    serial_number=probe.probe, model=model)
    nwbfile.add_device(device)
    return nwbfile.create_electrode_group(
        name=name, device=device, location=_location(probe),
        description=f"the recorded electrodes of probe {probe.insertion_number}"
        + (f" (configuration {probe.electrode_config})" if probe.electrode_config else "")
        + (f" in {probe.brain_area}, {probe.hemisphere} hemisphere" if probe.brain_area else ", location not entered"))


def _location(probe: ProbeData) -> str:
    return CCF_LOCATION.get(probe.brain_area or "", UNKNOWN_LOCATION)


def _add_electrodes(nwbfile: NWBFile, probes: tuple[ProbeData, ...], groups: list[ElectrodeGroup]) -> list[dict]:
    """The electrodes table of every probe, built whole; per probe: lab electrode -> its row."""
    sizes = [p.electrodes.electrode.size for p in probes]
    if not sum(sizes):
        return [{} for _ in probes]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])

    def joined(attribute):
        return _stacked([getattr(p.electrodes, attribute) for p in probes])

    columns = [
        VectorData(name="location", description="Allen CCF term of the probe's brain area ('root': not entered)",
                   data=np.repeat([_location(p) for p in probes], sizes)),
        VectorData(name="group", description="the probe's electrode group",
                   data=[g for g, n in zip(groups, sizes) for _ in range(n)]),
        VectorData(name="group_name", description="the probe's electrode group",
                   data=np.repeat([g.name for g in groups], sizes)),
        VectorData(name="rel_x", description="(um) x within the probe, (0, 0) is the tip", data=joined("x")),
        VectorData(name="rel_y", description="(um) y within the probe, from the tip", data=joined("y")),
        VectorData(name="probe_electrode", description="electrode number on the probe (1-based, "
                   "lab.ProbeType.Electrode)", data=joined("electrode")),
        VectorData(name="shank", description="shank index, from 0, left to right", data=joined("shank")),
    ]
    nwbfile.electrodes = ElectrodesTable(columns=columns, id=np.arange(sum(sizes)))
    return [{int(e): int(start) + k for k, e in enumerate(p.electrodes.electrode)} for p, start in zip(probes, starts)]


def _device_model(nwbfile: NWBFile, probe_type: str) -> DeviceModel:
    if probe_type in nwbfile.device_models:
        return nwbfile.device_models[probe_type]
    model = DeviceModel(name=probe_type, manufacturer="IMEC" if "neuropixels" in probe_type else "unknown",
                        description=f"{probe_type} probe (lab.ProbeType)")
    nwbfile.add_device_model(model)
    return model


def _add_units(nwbfile: NWBFile, probes: tuple[ProbeData, ...], rows: list[dict[int, int]]) -> None:
    """The units table of every probe, its columns built whole from the arrays (no row-by-row append)."""
    times = _stacked([p.spike_times for p in probes])
    ends = _stacked([p.spike_offsets[1:] + base for p, base in zip(probes, _bases(probes))])
    spike_times = VectorData(name="spike_times", data=times,
                             description="(s) on the session clock: each trial's go cue + the spike's time from it")
    columns = [spike_times, VectorIndex(name="spike_times_index", data=ends, target=spike_times)]
    columns += _unit_columns(nwbfile, probes, rows)
    units = Units(name="units", description="sorted units of every probe (noise clusters left out)",
                  id=_stacked([p.unit_uid for p in probes]), columns=columns,
                  waveform_rate=float(probes[0].sampling_rate),
                  waveform_unit="uV (JRClust) or template units (Kilosort)",
                  resolution=max(1.0 / p.sampling_rate for p in probes))  # spike times count in samples
    nwbfile.units = units


def _stacked(arrays: list[np.ndarray]) -> np.ndarray:
    """The arrays one after the other; a lone array itself (no copy of a probe's millions of spike times)."""
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _bases(probes: tuple[ProbeData, ...]) -> list[int]:
    sizes = [p.spike_times.size for p in probes]
    return [int(s) for s in np.concatenate([[0], np.cumsum(sizes)[:-1]])]


def _unit_columns(nwbfile: NWBFile, probes: tuple[ProbeData, ...], rows: list[dict[int, int]]) -> list:
    def joined(attribute):
        return _stacked([getattr(p, attribute) for p in probes])

    columns = [
        VectorData(name="unit", description="the sorter's cluster number", data=joined("unit")),
        VectorData(name="insertion_number", description="the probe's number in the session",
                   data=np.concatenate([np.full(p.n_units, p.insertion_number) for p in probes])),
        VectorData(name="clustering_method", description="sorter", data=joined("clustering_method")),
        VectorData(name="quality", description="good | ok | multi | all (ephys.UnitQualityType)",
                   data=joined("quality")),
        VectorData(name="site", description="recording site of largest amplitude (1-based); -1 unknown",
                   data=joined("site")),
        VectorData(name="position_x", description="(um) x position of the unit on the probe; NaN unknown",
                   data=joined("x")),
        VectorData(name="position_y", description="(um) y position on the probe, from the tip; NaN unknown",
                   data=joined("y")),
        VectorData(name="amplitude", description="(uV) peak-to-peak amplitude; NaN unknown", data=joined("amplitude")),
        VectorData(name="snr", description="signal-to-noise ratio; NaN unknown", data=joined("snr")),
        VectorData(name="electrode_group", description="the probe of the unit",
                   data=[nwbfile.electrode_groups[f"probe{p.insertion_number}"] for p in probes
                         for _ in range(p.n_units)]),
    ]
    waveforms = _waveform_matrix(probes)
    if waveforms.shape[1]:
        columns.append(VectorData(name="waveform_mean", data=waveforms,
                                  description="mean waveform on the unit's site (JRClust: uV; Kilosort: the "
                                              "unwhitened template, template units); NaN: none or shorter"))
    if nwbfile.electrodes is not None and len(nwbfile.electrodes):
        columns += _electrode_columns(nwbfile, probes, rows)
    return columns


def _electrode_columns(nwbfile: NWBFile, probes: tuple[ProbeData, ...], rows: list[dict[int, int]]) -> list:
    """Each unit's electrode (its site's), as a ragged region: empty when the electrode is unknown."""
    refs = [rows[i].get(int(e)) for i, p in enumerate(probes) for e in p.electrode]
    flat = np.array([r for r in refs if r is not None], dtype=np.int64)
    ends = np.cumsum([r is not None for r in refs]).astype(np.int64)
    region = DynamicTableRegion(name="electrodes", data=flat, table=nwbfile.electrodes,
                                description="the electrode of the unit's site")
    return [region, VectorIndex(name="electrodes_index", data=ends, target=region)]


def _waveform_matrix(probes: tuple[ProbeData, ...]) -> np.ndarray:
    width = max(p.waveforms.shape[1] for p in probes)
    out = np.full((sum(p.n_units for p in probes), width), np.nan)
    row = 0
    for p in probes:
        out[row:row + p.n_units, :p.waveforms.shape[1]] = p.waveforms
        row += p.n_units
    return out
