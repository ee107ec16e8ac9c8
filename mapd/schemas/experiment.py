"""experiment: sessions, trials and their behavior (the original MAP ``experiment`` schema)."""

from dataclasses import dataclass

import datajoint as dj

from . import lab  # noqa: F401 (named in table definitions)

schema = dj.Schema()


@dataclass(frozen=True)
class SessionKey:
    """The primary key of a Session, typed (ingest and export pass it around)."""

    subject_id: int
    session: int

    def as_dict(self) -> dict[str, int]:
        return {"subject_id": self.subject_id, "session": self.session}


@schema
class Session(dj.Manual):
    # Fix: MAP records at most one session per subject and day (split Bpod
    # files are merged), so (subject_id, session_date) is unique: the database
    # itself then refuses a second session for a day, even from another host.
    # mapd: bpod_trials counts the trials Bpod ran in the session's files,
    # skipped ones included, so that a later file's trials continue Bpod's
    # count (SessionTrial.trial) after it.
    definition = """
    -> lab.Subject
    session : int16                     # session number, 1-based per subject
    ---
    session_date : date
    session_time : time
    -> lab.Person
    -> lab.Rig
    bpod_trials = null : int32          # Bpod trials in the session's files, skipped ones too (null: not by mapd)
    unique index (subject_id, session_date)
    """

    @classmethod
    def selected(cls, subject_id=None, h2o=None, since=None, until=None):
        """Sessions with their h2o, restricted by whichever of subject, h2o and dates (inclusive) are given."""
        sessions = cls * lab.WaterRestriction.proj("water_restriction_number")
        if subject_id is not None:
            sessions &= {"subject_id": subject_id}
        if h2o is not None:
            sessions &= {"water_restriction_number": h2o}
        if since is not None:
            sessions &= f"session_date >= '{since.isoformat()}'"
        if until is not None:
            sessions &= f"session_date <= '{until.isoformat()}'"
        return sessions


@schema
class Task(dj.Lookup):
    definition = """
    # Type of tasks
    task : varchar(24)                  # task type
    ----
    task_description : varchar(4000)
    """
    contents = [
        ("audio delay", "auditory delayed response task (2AFC)"),
        ("audio mem", "auditory working memory task"),
        ("s1 stim", "S1 photostimulation task (2AFC)"),
    ]


@schema
class TaskProtocol(dj.Lookup):
    definition = """
    # SessionType
    -> Task
    task_protocol : int8                # task protocol
    ---
    task_protocol_description : varchar(4000)
    """
    contents = [
        ("audio delay", 1, "high tone vs. low tone"),
        ("s1 stim", 2, "mini-distractors"),
        ("s1 stim", 3, "full distractors, with 2 distractors (at different times) on some of the left trials"),
        ("s1 stim", 4, "full distractors"),
    ]


@schema
class Photostim(dj.Manual):
    definition = """
    # Photostim protocol
    -> Session
    photo_stim : int16                  # photostim protocol number
    ---
    -> lab.PhotostimDevice
    duration = null : decimal(8,4)      # (s)
    waveform = null : <blob>            # normalized to maximal power
    """

    class PhotostimLocation(dj.Part):
        definition = """
        -> master
        -> lab.SkullReference
        ap_location : decimal(6,2)      # (um) anterior-posterior; ref is 0; anterior is positive
        ml_location : decimal(6,2)      # (um) medial axis; ref is 0; right is positive
        depth : decimal(6,2)            # (um) manipulator depth below the brain surface; ventral is negative
        theta : decimal(5,2)            # (deg) elevation
        phi : decimal(5,2)              # (deg) azimuth
        ---
        -> lab.BrainArea                # target brain area for photostim
        """


@schema
class SessionTrial(dj.Imported):
    # Fix: the original stored the PreSamplePeriod offset inside the trial as
    # start_time; it is the trial's start (TrialStartTimestamp), in seconds from
    # the session's beginning, offset by each file's start in a split session.
    # Fix: trial_uid was set to the trial number, not unique as documented;
    # mapd allocates it from ingest.TrialUidBlock and a unique index holds it.
    # trial is Bpod's trial number (as the original's): skipped trials keep
    # their numbers, so numbers have gaps; over a split session's files in
    # time order, each file's trials continue after all those of the files before.
    definition = """
    -> Session
    trial : int16                       # Bpod trial number (1-based, over the session's files; gaps: skipped trials)
    ---
    trial_uid : int32                   # unique across sessions and animals
    start_time : decimal(10,4)          # (s) relative to session beginning
    stop_time : decimal(10,4)           # (s) relative to session beginning
    unique index (trial_uid)
    """


@schema
class TrialNoteType(dj.Lookup):
    definition = """
    trial_note_type : varchar(24)
    """
    # mapd: "photostim code", a StimTrials code that is no photostim protocol.
    contents = zip(("autolearn", "protocol #", "bad", "bitcode", "autowater", "random_seed_start", "photostim code"))


@schema
class TrialNote(dj.Imported):
    definition = """
    -> SessionTrial
    -> TrialNoteType
    ---
    trial_note : varchar(255)
    """


@schema
class TrialInstruction(dj.Lookup):
    definition = """
    # Instruction to mouse
    trial_instruction : varchar(8)
    """
    contents = zip(("left", "right", "middle", "none"))


@schema
class Outcome(dj.Lookup):
    definition = """
    outcome : varchar(32)
    """
    contents = zip(("hit", "miss", "ignore", "N/A"))


@schema
class EarlyLick(dj.Lookup):
    definition = """
    early_lick : varchar(32)
    ---
    early_lick_description : varchar(4000)
    """
    contents = [
        ("early", "early lick during sample and/or delay"),
        ("early, presample only", "early lick in the presample period, after the onset of the scheduled wave"),
        ("no early", ""),
    ]


@schema
class BehaviorTrial(dj.Imported):
    definition = """
    -> SessionTrial
    ----
    -> TaskProtocol
    -> TrialInstruction
    -> EarlyLick
    -> Outcome
    auto_water = 0 : bool               # water given after response time, regardless of outcome
    free_water = 0 : bool               # empty trial with water given (no go cue, no trial structure)
    """


@schema
class TrialEventType(dj.Lookup):
    definition = """
    trial_event_type : varchar(12)
    """
    contents = zip(("delay", "go", "sample", "presample", "trialend", "bitcodestart"))


@schema
class TrialEvent(dj.Imported):
    definition = """
    -> BehaviorTrial
    trial_event_id : int16
    ---
    -> TrialEventType
    trial_event_time : decimal(8,4)     # (s) from trial start, not session start
    duration : decimal(8,4)             # (s)
    """


@schema
class ActionEventType(dj.Lookup):
    definition = """
    action_event_type : varchar(32)
    ----
    action_event_description : varchar(1000)
    """
    contents = [("left lick", ""), ("right lick", ""), ("middle lick", "")]


@schema
class ActionEvent(dj.Imported):
    definition = """
    -> BehaviorTrial
    action_event_id : int16
    ---
    -> ActionEventType
    action_event_time : decimal(8,4)    # (s) from trial start
    """


@schema
class PhotostimTrial(dj.Imported):
    definition = """
    -> SessionTrial
    """


@schema
class PhotostimEvent(dj.Imported):
    definition = """
    -> PhotostimTrial
    photostim_event_id : int16
    ---
    -> Photostim
    photostim_event_time : decimal(8,3) # (s) from trial start
    power : decimal(8,3)                # maximal power (mW)
    """


@schema
class SessionComment(dj.Manual):
    definition = """
    -> Session
    session_comment : varchar(767)
    """


@schema
class SessionDetails(dj.Manual):
    definition = """
    -> Session
    ---
    session_weight : decimal(8,4)       # weight of the mouse at the beginning of the session
    session_water_earned : decimal(8,4) # water earned by the mouse during the session
    session_water_extra : decimal(8,4)  # extra water provided after the session
    """


@schema
class Period(dj.Lookup):
    definition = """
    # time period between two trial events (e.g. the delay period is between delay and go)
    period : varchar(12)
    ---
    -> TrialEventType.proj(start_event_type='trial_event_type')
    start_time_shift : float32          # (s) shift with respect to the start event
    -> TrialEventType.proj(end_event_type='trial_event_type')
    end_time_shift : float32            # (s) shift with respect to the end event
    """
    contents = [
        ("sample", "sample", 0, "delay", 0),
        ("delay", "delay", 0, "go", 0),
        ("response", "go", 0, "go", 1.2),
    ]
