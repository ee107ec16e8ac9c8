"""Bpod ``SessionData`` files -> MAP delay-response trial records (no database).

The extraction rules are those of FORMATS.md section 1 (the original MAP
pipeline's rules, with its known bugs fixed). Two functions matter:

* :func:`parse_behavior_file` reads one file into a :class:`BehaviorFileRecords`;
* :func:`merge_session` joins the files of one subject and day (a split
  session, Bpod restarted) into one :class:`SessionRecords`, trials in time
  order and numbered as Bpod counted them, and fills NaN event durations.

A file whose name's date is not its own ``Info.SessionDate`` (a renamed
copy) is refused; a Bpod session of another protocol (no ``TrialTypes`` or
``TrialSettings``) is not a bad file: its records have no trials, every
trial counted as skipped for that reason. A ``StimTrials`` code that is no
photostim protocol is no failure either: the trial keeps it as a note and the
records count it among their warnings.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path, PurePath
from typing import Any, Iterable, Sequence

import numpy as np

from .matfile import MatFileError, read_mat

TASK = "audio delay"
TASK_PROTOCOL = 1

# The original pipeline's file-name test; h2o is the first token, date and time the last two.
FILE_NAME_PATTERN = re.compile(r"^[a-zA-Z]{2}.*_.*_[0-9]{8}_[0-9]{6}\.mat$")
SESSION_DATA_DIR = "Session Data"

REQUIRED_STATES = ("PreSamplePeriod", "SamplePeriod", "DelayPeriod", "ResponseCue", "StopLicking", "TrialEnd")
REQUIRED_FIELDS = ("TrialStartTimestamp", "TrialTypes", "TrialSettings", "RawData")
RAW_DATA_FIELDS = ("OriginalStateNamesByNumber", "OriginalStateData", "OriginalStateTimestamps")
# Every Bpod session has these; a file lacking them is a bad file. A Bpod file with
# them but without the MAP protocol's own fields is another protocol's session:
# not a bad file, just nothing to ingest (its trials are counted as skipped).
BPOD_CORE_FIELDS = ("TrialStartTimestamp", "RawData")
MAP_FIELDS = ("TrialTypes", "TrialSettings")

# Info.SessionDate is written by Bpod as e.g. 25-Feb-2018 (English month names
# whatever the rig's locale, so they are not parsed with the local %b).
SESSION_DATE_PATTERN = re.compile(r"\s*(\d{1,2})-([A-Za-z]{3})-(\d{4})\s*")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# Licks are taken by event name, not code: Bpod's event codes depend on its
# version. In the real MAP file (Bpod 0.7-0.9) code 70 is Port1Out, so the
# original pipeline's "70 = right lick" counted left-port exits as right licks.
LICK_EVENTS = (("Port1In", "left lick"), ("Port2In", "right lick"))

# Trial events: (type, state entered, GUI field holding the duration, every entry or the first).
# presample's duration is measured instead: SamplePeriod entry - PreSamplePeriod entry.
GUI_TIMED_EVENTS = (
    ("sample", "SamplePeriod", "SamplePeriod", True),  # re-entered after each early lick
    ("delay", "DelayPeriod", "DelayPeriod", True),
    ("go", "ResponseCue", "AnswerPeriod", False),  # the go cue of the trial, not its repeats
)
# trialend: the first TrialEnd entry, a point event of duration 0.0, as the original wrote it
# with the rules above (its analysis takes this time as the trial's length, e.g. for spike
# rates). Its 2020 rewrite, reading RawEvents, gave every event its state's span instead
# (TrialEnd: 0.25 s in the real file) and changed the other durations too; mapd keeps one rule set.
TRIAL_END_EVENT = ("trialend", "TrialEnd", 0.0)

# Photostim. SessionData.StimTrials holds one code per trial, 0 for none. The original pipeline
# declared protocols 4, 5 and 6: the OBIS470 laser for 0.5 s at 5.5 mW (the power its
# fix_0001 set), onto the left, the right or both ALMs (2.5 mm anterior, 1.5 mm lateral of
# Bregma, at the surface, theta = phi = 15 deg), starting at the first DelayPeriod entry (its
# "early-delay" period). It failed the whole session on any other code; the real dl25 session
# has code 2 in trials 2 and 9, so another code is kept as a trial note and counted as a
# warning, and the trial gets no photostim rows.
PHOTOSTIM_STATE = "DelayPeriod"
PHOTOSTIM_POWER = 5.5  # (mW)
PHOTOSTIM_CODE_NOTE = "photostim code"


@dataclass(frozen=True)
class PhotostimSite:
    """One place a photostim protocol shines on (``experiment.Photostim.PhotostimLocation``)."""

    skull_reference: str
    brain_area: str
    ap_location: float  # (um) from the skull reference; anterior is positive
    ml_location: float  # (um); right is positive
    depth: float  # (um) below the brain surface; ventral is negative
    theta: float  # (deg) elevation
    phi: float  # (deg) azimuth


@dataclass(frozen=True)
class PhotostimProtocol:
    """A photostim protocol (``experiment.Photostim``), named by its StimTrials code."""

    photo_stim: int
    device: str  # lab.PhotostimDevice
    duration: float  # (s)
    sites: tuple[PhotostimSite, ...]


LEFT_ALM = PhotostimSite("Bregma", "ALM", 2500.0, -1500.0, 0.0, 15.0, 15.0)
RIGHT_ALM = PhotostimSite("Bregma", "ALM", 2500.0, 1500.0, 0.0, 15.0, 15.0)
PHOTOSTIM_PROTOCOLS = {
    4: PhotostimProtocol(4, "OBIS470", 0.5, (LEFT_ALM,)),
    5: PhotostimProtocol(5, "OBIS470", 0.5, (RIGHT_ALM,)),
    6: PhotostimProtocol(6, "OBIS470", 0.5, (LEFT_ALM, RIGHT_ALM)),
}


class BehaviorFormatError(Exception):
    """A behavior file that cannot be ingested; the message names the file and the problem."""

    def __init__(self, path: str | PurePath, problem: str, *, transient: bool = False) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem
        self.transient = transient  # could not be read now (gone, locked): may work later


@dataclass(frozen=True)
class BehaviorFileName:
    """What a behavior file's name says: ``{h2o}_{protocol}_{YYYYMMDD}_{HHMMSS}.mat``."""

    h2o: str
    protocol: str
    start: datetime

    @property
    def session_date(self) -> date:
        return self.start.date()

    @classmethod
    def parse(cls, name: str) -> "BehaviorFileName":
        if not FILE_NAME_PATTERN.match(name):
            raise BehaviorFormatError(name, "file name does not match {h2o}_{protocol}_{YYYYMMDD}_{HHMMSS}.mat")
        tokens = name[: -len(".mat")].split("_")
        try:
            start = datetime.strptime(tokens[-2] + tokens[-1], "%Y%m%d%H%M%S")
        except ValueError:
            raise BehaviorFormatError(name, f"file name has no valid date and time ({tokens[-2]}_{tokens[-1]})") from None
        return cls(h2o=tokens[0], protocol="_".join(tokens[1:-2]), start=start)


def is_behavior_path(subpath: PurePath) -> bool:
    """True for ``{h2o}/{anything}/Session Data/{name}.mat`` below a rig data path."""
    parts = subpath.parts
    return len(parts) >= 4 and parts[-2] == SESSION_DATA_DIR and subpath.suffix == ".mat"


@dataclass(frozen=True)
class TrialEventRecord:
    event_type: str  # presample | sample | delay | go | trialend
    time: float  # (s) from trial start
    duration: float  # (s); NaN until merge_session fills it
    corrected: bool = False  # duration was NaN in the file and was filled


@dataclass(frozen=True)
class ActionEventRecord:
    action_event_type: str  # left lick | right lick
    time: float  # (s) from trial start


@dataclass(frozen=True)
class PhotostimRecord:
    photo_stim: int  # a key of PHOTOSTIM_PROTOCOLS
    time: float  # (s) from trial start
    power: float  # (mW)


@dataclass(frozen=True)
class TrialRecord:
    index_in_file: int  # Bpod's trial number in its file (1-based, skipped trials counted)
    start: float  # (s) from the start of its file's first trial
    stop: float  # (s) from the start of its file's first trial
    instruction: str
    early_lick: str
    outcome: str
    notes: dict[str, str]
    events: tuple[TrialEventRecord, ...]
    actions: tuple[ActionEventRecord, ...]
    photostim: PhotostimRecord | None = None


@dataclass(frozen=True)
class BehaviorFileRecords:
    """One parsed behavior file."""

    path: Path
    name: BehaviorFileName
    session_date: date
    session_time: time
    trials: tuple[TrialRecord, ...]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> trials skipped
    warnings: dict[str, int] = field(default_factory=dict)  # reason -> trials ingested despite it
    # What was read and parsed (one read: the checksum is of the parsed bytes).
    sha256: str = ""  # hex digest of the file's bytes
    size: int = 0  # (bytes)
    mtime: float = 0.0  # (s since the epoch) of the file when it was read

    @property
    def trial_count(self) -> int:
        """Bpod's trials in the file, ingested or skipped."""
        return len(self.trials) + sum(self.skipped.values())


@dataclass(frozen=True)
class SessionTrialRecord:
    trial: int  # Bpod's trial number over the session's files in time order (1-based, skipped ones counted)
    start_time: float  # (s) from the session's beginning
    stop_time: float
    source: TrialRecord
    events: tuple[TrialEventRecord, ...]  # durations filled


@dataclass(frozen=True)
class SessionRecords:
    """Everything one session (one subject, one day) contributes to the database."""

    h2o: str
    session_date: date
    session_time: time
    files: tuple[BehaviorFileRecords, ...]  # in time order
    trials: tuple[SessionTrialRecord, ...]
    file_trial_offsets: tuple[int, ...]  # Bpod trials (ingested or skipped) before each file

    @property
    def trial_count(self) -> int:
        """Bpod's trials in the session's files, ingested or skipped."""
        return sum(records.trial_count for records in self.files)

    @property
    def skipped(self) -> dict[str, int]:
        return _total(records.skipped for records in self.files)

    @property
    def warnings(self) -> dict[str, int]:
        return _total(records.warnings for records in self.files)

    @property
    def photostim_protocols(self) -> tuple[PhotostimProtocol, ...]:
        """The photostim protocols the session's trials use, by code."""
        used = {trial.source.photostim.photo_stim for trial in self.trials if trial.source.photostim}
        return tuple(PHOTOSTIM_PROTOCOLS[code] for code in sorted(used))


def _total(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for count in counts:
        total.update(count)
    return dict(total)


def parse_behavior_file(path: str | Path, *, max_inflated_bytes: int | None = None) -> BehaviorFileRecords:
    """Read one Bpod file; raises BehaviorFormatError naming the file and the problem.

    ``max_inflated_bytes``: refuse a file declaring more content than this
    (see :func:`mapd.formats.matfile.read_mat`). A Bpod session of another
    protocol gives records with no trials, all counted as skipped.
    """
    path = Path(path)
    name = BehaviorFileName.parse(path.name)
    try:
        mat = read_mat(path, ["SessionData"], max_inflated_bytes=max_inflated_bytes)
    except MatFileError as error:
        raise BehaviorFormatError(path, error.problem, transient=error.transient) from None
    session_data = mat.variables["SessionData"]
    if not isinstance(session_data, dict):
        raise BehaviorFormatError(path, "SessionData is not a struct")
    _check_bpod_core(path, session_data)
    _check_session_date(path, name, session_data.get("Info"))
    read = dict(sha256=mat.sha256, size=mat.size, mtime=mat.mtime)
    missing = [key for key in MAP_FIELDS if key not in session_data]
    try:
        if missing:
            return _other_protocol(path, name, session_data, missing, read)
        return _parse_session_data(path, name, session_data, read)
    except (TypeError, ValueError, KeyError, IndexError) as error:
        # A field of the wrong shape or type deep inside the struct.
        raise BehaviorFormatError(path, f"malformed SessionData: {type(error).__name__}: {error}") from None


def _check_bpod_core(path: Path, data: dict[str, Any]) -> None:
    """A file without Bpod's own fields is a bad file (the MAP fields are named too when missing)."""
    missing = [key for key in REQUIRED_FIELDS if key not in data]
    raw_data = data.get("RawData")
    if isinstance(raw_data, dict):
        missing += [f"RawData.{key}" for key in RAW_DATA_FIELDS if key not in raw_data]
    if any(key not in MAP_FIELDS for key in missing):
        raise BehaviorFormatError(path, f"SessionData lacks {', '.join(missing)}")


def _other_protocol(path: Path, name: BehaviorFileName, data: dict[str, Any], missing: list[str],
                    read: dict[str, Any]) -> BehaviorFileRecords:
    """Records of a Bpod session of another protocol: no trials, all of them skipped for that reason."""
    reason = f"not a MAP delay-response session (no {', '.join(missing)})"
    return BehaviorFileRecords(path=path, name=name, session_date=name.session_date,
                               session_time=_session_time(data.get("Info"), name), trials=(),
                               skipped={reason: _trial_count(data)}, **read)


def _check_session_date(path: Path, name: BehaviorFileName, info: Any) -> None:
    """A file whose name's date is not its own session date is a renamed copy: not ingested."""
    text = info.get("SessionDate") if isinstance(info, dict) else None
    found = SESSION_DATE_PATTERN.fullmatch(text) if isinstance(text, str) else None
    month = found[2].title() if found else None
    if month not in MONTHS:
        return  # no usable Info.SessionDate: the name alone dates the file
    try:
        written = date(int(found[3]), MONTHS.index(month) + 1, int(found[1]))
    except ValueError:
        return
    if written != name.session_date:
        raise BehaviorFormatError(
            path, f"the file name's date {name.session_date} disagrees with SessionData.Info.SessionDate "
                  f"{text.strip()} ({written}): a renamed copy of another session?")


def _trial_count(data: dict[str, Any]) -> int:
    declared = _number(data.get("nTrials"))
    if declared is not None and declared >= 0:
        return int(declared)
    return int(np.atleast_1d(np.asarray(data["TrialStartTimestamp"])).size)


def _parse_session_data(path: Path, name: BehaviorFileName, data: dict[str, Any],
                        read: dict[str, Any]) -> BehaviorFileRecords:
    starts = np.atleast_1d(np.asarray(data["TrialStartTimestamp"], dtype=float))
    n = starts.size
    raw = data["RawData"]
    per_trial = {
        "trial_type": _per_trial(data["TrialTypes"], n),
        "settings": _per_trial(data["TrialSettings"], n),
        "state_names": _per_trial(raw["OriginalStateNamesByNumber"], n),
        "state_data": _per_trial(raw["OriginalStateData"], n),
        "state_times": _per_trial(raw["OriginalStateTimestamps"], n),
        "events": _per_trial(_raw_event_trials(data), n),
    }
    # StimTrials is optional (the original: "optional special case"); a trial it does not
    # reach has no code, like a trial of a file without it.
    stim_codes = list(_per_trial(data["StimTrials"], n)) if "StimTrials" in data else []
    stim_codes += [None] * (n - len(stim_codes))
    # nTrials and the per-trial arrays can disagree (a session cut short):
    # only trials present in every array are parsed, the rest are counted.
    usable = min(n, *(len(values) for values in per_trial.values()))
    skipped: Counter[str] = Counter()
    declared = _scalar(data.get("nTrials", n))
    if declared is not None and int(declared) > usable:
        skipped["trial data incomplete"] += int(declared) - usable
    elif n > usable:
        skipped["trial data incomplete"] += n - usable

    first_start = float(starts[0]) if n else 0.0
    trials: list[TrialRecord] = []
    warnings: Counter[str] = Counter()
    for i in range(usable):
        outcome = _parse_trial(
            index=i + 1,
            start=float(starts[i]) - first_start,
            trial_type=per_trial["trial_type"][i],
            settings=per_trial["settings"][i],
            state_names=per_trial["state_names"][i],
            state_data=per_trial["state_data"][i],
            state_times=per_trial["state_times"][i],
            events=per_trial["events"][i],
            stim_code=stim_codes[i],
        )
        if isinstance(outcome, str):
            skipped[outcome] += 1
            continue
        trials.append(outcome)
        if PHOTOSTIM_CODE_NOTE in outcome.notes:
            warnings[_stim_warning(outcome.notes[PHOTOSTIM_CODE_NOTE])] += 1
    return BehaviorFileRecords(
        path=path,
        name=name,
        session_date=name.session_date,
        session_time=_session_time(data.get("Info"), name),
        trials=tuple(trials),
        skipped=dict(skipped),
        warnings=dict(warnings),
        **read,
    )


def _parse_trial(*, index, start, trial_type, settings, state_names, state_data, state_times, events,
                 stim_code) -> TrialRecord | str:
    """One trial's records, or the reason it is skipped."""
    names = [str(state) for state in np.atleast_1d(state_names)]
    missing = [state for state in REQUIRED_STATES if state not in names]
    if missing:
        return f"missing states {', '.join(missing)}"
    gui = settings.get("GUI") if isinstance(settings, dict) else None
    if not isinstance(gui, dict) or "ProtocolType" not in gui:
        return "no GUI.ProtocolType"
    protocol_type = _number(gui["ProtocolType"])
    if protocol_type is None or protocol_type < 3:
        return "GUI.ProtocolType < 3"

    # Entry times of each visited state, by name (Bpod numbers states from 1).
    entries: dict[str, list[float]] = {}
    visited = np.atleast_1d(state_data).astype(int).tolist()
    times = np.atleast_1d(state_times).astype(float).tolist()
    for state_number, entered in zip(visited, times):
        entries.setdefault(names[state_number - 1], []).append(entered)
    for state in ("PreSamplePeriod", "StopLicking"):
        if state not in entries:
            return f"state {state} not visited"

    reversal = _number(gui.get("Reversal"))
    trial_type = _number(trial_type)
    instruction = {(1, 1): "left", (1, 0): "right", (2, 1): "right", (2, 0): "left"}.get((reversal, trial_type), "none")

    early = (protocol_type >= 5 and "EarlyLickDelay" in entries) or (protocol_type > 5 and "EarlyLickSample" in entries)
    outcome = "hit" if "Reward" in entries else "miss" if "TimeOut" in entries else "ignore"

    notes = {"protocol #": _note(gui["ProtocolType"]), "autolearn": _note(gui.get("Autolearn"))}
    if gui.get("randomID") is not None:
        notes["bitcode"] = str(gui["randomID"])
    notes = {key: value for key, value in notes.items() if value != ""}

    presample = entries["PreSamplePeriod"][0]
    sample_entries = entries.get("SamplePeriod", [])
    trial_events = [
        TrialEventRecord("presample", presample, sample_entries[0] - presample if sample_entries else math.nan)
    ]
    for event_type, state, gui_field, every_entry in GUI_TIMED_EVENTS:
        duration = _number(gui.get(gui_field))
        entered = entries.get(state, [])
        trial_events += [
            TrialEventRecord(event_type, time, math.nan if duration is None else float(duration))
            for time in (entered if every_entry else entered[:1])
        ]
    event_type, state, duration = TRIAL_END_EVENT
    trial_events += [TrialEventRecord(event_type, time, duration) for time in entries.get(state, [])[:1]]
    trial_events.sort(key=lambda event: event.time)
    photostim = _photostim(stim_code, entries, notes)

    actions = sorted(
        (
            ActionEventRecord(action, float(when))
            for event_name, action in LICK_EVENTS
            for when in np.atleast_1d(events.get(event_name, [])).astype(float).tolist()
            if not math.isnan(when)
        ),
        key=lambda action: action.time,
    ) if isinstance(events, dict) else []

    return TrialRecord(
        index_in_file=index,
        start=start,
        # As the original pipeline: a trial ends, for MAP, when StopLicking begins.
        stop=start + entries["StopLicking"][0],
        instruction=instruction,
        early_lick="early" if early else "no early",
        outcome=outcome,
        notes=notes,
        events=tuple(trial_events),
        actions=tuple(actions),
        photostim=photostim,
    )


def _photostim(stim_code: Any, entries: dict[str, list[float]], notes: dict[str, str]) -> PhotostimRecord | None:
    """The trial's photostim for a known code; another non-zero code goes into ``notes``."""
    code = _number(stim_code)
    if code is None or code == 0:
        return None
    if code in PHOTOSTIM_PROTOCOLS and entries.get(PHOTOSTIM_STATE):
        return PhotostimRecord(int(code), entries[PHOTOSTIM_STATE][0], PHOTOSTIM_POWER)
    notes[PHOTOSTIM_CODE_NOTE] = _note(code)
    return None


def _stim_warning(code: str) -> str:
    known = ", ".join(map(str, PHOTOSTIM_PROTOCOLS))
    why = (f"in a trial that never entered {PHOTOSTIM_STATE}" if code in map(str, PHOTOSTIM_PROTOCOLS)
           else f"is no photostim protocol ({known})")
    return f"StimTrials code {code} {why}: kept as trial note '{PHOTOSTIM_CODE_NOTE}', no photostim recorded"


def merge_session(files: Iterable[BehaviorFileRecords]) -> SessionRecords:
    """Join the files of one subject and day into one session, trials in time order.

    Each file's trial times are offset by the file's start (from its name)
    relative to the first file. Trials are numbered as Bpod counted them,
    skipped ones included: a file's trials continue after all the trials of
    the files before it. A NaN duration takes the last good duration of its
    event type in the session (else 0.0) and is marked corrected.
    """
    ordered = sorted(files, key=lambda records: records.name.start)
    if not ordered:
        raise ValueError("merge_session needs at least one file")
    keys = {(records.name.h2o, records.session_date) for records in ordered}
    if len(keys) != 1:
        raise ValueError(f"files of different sessions cannot be merged: {sorted(keys)}")
    first = ordered[0]
    last_good: dict[str, float] = {}
    trials: list[SessionTrialRecord] = []
    offsets: list[int] = []
    trial_offset = 0
    for records in ordered:
        offsets.append(trial_offset)
        file_offset = (records.name.start - first.name.start).total_seconds()
        for trial in records.trials:
            events = []
            for event in trial.events:
                if math.isnan(event.duration):
                    event = TrialEventRecord(event.event_type, event.time, last_good.get(event.event_type, 0.0), True)
                else:
                    last_good[event.event_type] = event.duration
                events.append(event)
            trials.append(
                SessionTrialRecord(
                    trial=trial_offset + trial.index_in_file,
                    start_time=file_offset + trial.start,
                    stop_time=file_offset + trial.stop,
                    source=trial,
                    events=tuple(events),
                )
            )
        trial_offset += records.trial_count
    return SessionRecords(
        h2o=first.name.h2o,
        session_date=first.session_date,
        session_time=first.session_time,
        files=tuple(ordered),
        trials=tuple(trials),
        file_trial_offsets=tuple(offsets),
    )


def _raw_event_trials(data: dict[str, Any]) -> Any:
    raw_events = data.get("RawEvents")
    trials = raw_events.get("Trial") if isinstance(raw_events, dict) else None
    if trials is None:
        return [None] * np.atleast_1d(np.asarray(data["TrialStartTimestamp"])).size
    # Each trial's Events struct; the States struct duplicates RawData.
    if isinstance(trials, dict):
        return trials.get("Events") or {}
    return [trial.get("Events") or {} if isinstance(trial, dict) else {} for trial in trials]


def _per_trial(value: Any, n: int) -> Sequence[Any]:
    """A per-trial field as a sequence of n items.

    With one trial, MATLAB's 1x1 cell/struct array is squeezed away on load and
    the value is the single trial's item itself.
    """
    if n == 1:
        return [value]
    if isinstance(value, np.ndarray) and value.dtype != object:
        return np.atleast_1d(value)
    return list(value)


def _session_time(info: Any, name: BehaviorFileName) -> time:
    # The original pipeline took the time from Info.SessionStartTime_UTC; keep
    # that for continuity, falling back to the file name's time.
    if isinstance(info, dict) and info.get("SessionStartTime_UTC"):
        try:
            return datetime.strptime(str(info["SessionStartTime_UTC"]).strip(), "%H:%M:%S").time()
        except ValueError:
            pass
    return name.start.time()


def _scalar(value: Any) -> Any:
    array = np.asarray(value)
    return array.item() if array.size == 1 else None


def _number(value: Any) -> float | None:
    """A MATLAB numeric scalar as a Python number (None when empty or not numeric)."""
    if value is None:
        return None
    try:
        number = float(np.asarray(value, dtype=float).reshape(-1)[0])
    except (ValueError, TypeError, IndexError):
        return None
    return None if math.isnan(number) else number


def _note(value: Any) -> str:
    number = _number(value)
    if number is None:
        return ""
    return str(int(number)) if number.is_integer() else repr(number)
