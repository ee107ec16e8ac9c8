"""ingest: what mapd has found and ingested (the original ``ingest_behavior``/``ingest_ephys``).

``SourceFile`` is mapd's own bookkeeping: one row per data file it has found,
with the file's state. It lives in the database, not on one host, so every
mapd process on the database sees the same work and the same outcomes.
"""

import datajoint as dj

from . import ephys, experiment  # noqa: F401 (named in table definitions)

schema = dj.Schema()


@schema
class BehaviorIngest(dj.Imported):
    definition = """
    -> experiment.Session
    """

    class BehaviorFile(dj.Part):
        # Files in rig-specific storage. A file name carries h2o, date and
        # time, so it is unique: the index makes a second ingest of the same
        # file fail in the database, whichever host tries it.
        definition = """
        -> master
        behavior_file : varchar(255)    # behavior file name
        ---
        rig : varchar(24)
        file_subpath = '' : varchar(4096)   # path relative to the rig data path (Linux PATH_MAX)
        file_size = null : int64            # (bytes) when ingested
        file_mtime = null : float64         # (s since epoch) when ingested
        file_sha256 = null : char(64)       # of the bytes that were parsed
        trial_offset = 0 : int16            # trials of this file start after this many
        unique index (behavior_file)
        """

    class CorrectedTrialEvents(dj.Part):
        # TrialEvents whose duration was NaN in the file and was replaced.
        definition = """
        -> master
        -> experiment.TrialEvent
        """


@schema
class EphysIngest(dj.Imported):
    # mapd: one row per probe (the original: one per session, its files in the
    # part), recording how the probe's trials were found, so that a later
    # change of its files can be detected and the alignment checked.
    definition = """
    # a probe folder's ingest: what was read and how its trials were aligned
    -> ephys.ProbeInsertion
    ---
    data_root : varchar(4096)           # the ephys data path the folder is under (as found)
    probe_folder : varchar(4096)        # the folder, relative to data_root: {h2o}/{date}/{N} or {h2o}/{date}-{N}
    sorter : varchar(16)                # jrclust3 | jrclust4 | kilosort
    alignment : varchar(16)             # bitcode (the offset where codes agree) | trialNum (the file's numbers)
    first_trial = null : int32          # Bpod trial of the first recorded trial (bitcode alignment)
    recorded_trials : int32             # trials in the bitcode file
    matched_trials : int32              # of those, trials of the behavior session (stored with TrialSpikes / UnitTrial)
    agreeing_codes : int32              # recorded bitcodes equal to their behavior trial's
    compared_codes : int32              # recorded trials whose behavior trial has a bitcode
    trial_starts : varchar(16)          # sTrig (bitcode file) | viT_offset_file (JRClust)
    go_cues : varchar(16)               # goCue (bitcode file) | behavior (trial start + go event)
    units : int32
    spikes : int64                      # spikes of the units (noise left out)
    noise_spikes : int64                # spikes of noise clusters, left out
    ingest_seconds : float64
    ingest_time = CURRENT_TIMESTAMP : datetime
    """

    class EphysFile(dj.Part):
        definition = """
        -> master
        ephys_file : varchar(255)       # path relative to the probe folder
        ---
        file_size : int64               # (bytes) when ingested
        file_mtime : float64            # (s since epoch) when ingested
        file_sha256 : char(64)
        """


@schema
class SchemaVersion(dj.Manual):
    # mapd's own: a host running a mapd of other table definitions refuses the database rather
    # than writing rows those tables do not expect (several hosts share one database).
    definition = """
    # the version of mapd's table definitions this database holds (one row)
    schema_version : int32
    ---
    mapd_version : varchar(32)          # the mapd that created the tables
    set_time = CURRENT_TIMESTAMP(3) : datetime(3)
    """


@schema
class TrialUidBlock(dj.Manual):
    # Allocates SessionTrial.trial_uid values in blocks, one short transaction
    # per session, so that concurrent ingests never contend for one counter.
    definition = """
    first_uid : int32
    ---
    uid_count : int32
    """


@schema
class SourceFile(dj.Manual):
    # The durable work queue: a file is 'pending' until a mapd process takes
    # it, and it is taken only after next_attempt (its stat must have been
    # unchanged since seen_time for the settle interval; backoff after a
    # transient failure).
    definition = """
    # a data file mapd has found, and what became of it
    file_id : char(16)                  # hash of kind, data root and path relative to it
    ---
    kind : enum('behavior', 'probe')   # a behavior file, or a probe folder (one unit: its files' total)
    data_root : varchar(4096)           # the rig_data_paths / ephys_data_paths entry it is under
    rig = null : varchar(24)
    subpath : varchar(4096)             # path relative to data_root (any path Linux allows)
    h2o = '' : varchar(255)             # water-restriction number from the path (as found: may be too long)
    session_date = null : date
    file_size : int64                   # (bytes) when last examined
    file_mtime : float64                # (s since epoch) when last examined
    sha256 = null : char(64)            # of the content, when it was last read (ingest)
    state : enum('pending', 'ingested', 'waiting', 'skipped', 'failed', 'changed', 'ignored')
    reason = '' : varchar(2000)         # why it is waiting, skipped, failed, changed or ignored
    detail = null : json                # e.g. skipped trials counted by reason
    attempts = 0 : int32                # ingest attempts since it was found or last changed
    host = '' : varchar(255)            # host that last worked on it
    found_time = CURRENT_TIMESTAMP(3) : datetime(3)
    seen_time = CURRENT_TIMESTAMP(3) : datetime(3)     # when file_size and file_mtime were first seen
    next_attempt = CURRENT_TIMESTAMP(3) : datetime(3)  # not taken before this
    updated_time = CURRENT_TIMESTAMP(3) : datetime(3)
    index (state, next_attempt)
    index (h2o, session_date)
    """


@schema
class Daemon(dj.Manual):
    definition = """
    # a running ``mapd run`` process, alive while its heartbeat is recent
    daemon_id : char(32)
    ---
    host : varchar(255)
    pid : int32
    started_time : datetime(3)
    heartbeat_time : datetime(3)
    activity = '' : varchar(255)        # what it is doing
    """


@schema
class SessionClaim(dj.Manual):
    # Inserting the claim row is the atomic claim: of several processes only
    # one insert succeeds. A claim whose daemon has stopped beating is stale.
    definition = """
    # a unit of work (files of one subject and day) being worked on by one mapd process
    kind : enum('behavior', 'probe', 'archive', 'cleanup', 'export')
    h2o : varchar(16)
    session_date : date
    ---
    daemon_id : char(32)
    host : varchar(255)
    pid : int32
    claimed_time : datetime(3)
    """


@schema
class DataPath(dj.Manual):
    # Per host: a share unmounted on one acquisition host is healthy on another.
    definition = """
    # health of a configured data path, as last checked by a mapd process of that host
    host : varchar(255)
    path_id : char(16)                  # hash of data_root (a key must stay short for MySQL)
    ---
    data_root : varchar(4096)
    kind : enum('behavior', 'ephys')
    rig = null : varchar(24)
    health : enum('ok', 'missing', 'not a directory', 'unreadable')
    problem = '' : varchar(2000)        # what is wrong, in words
    since : datetime(3)                 # health unchanged since
    checked_time : datetime(3)
    scanned_time = null : datetime(3)   # last full scan
    scan_problems = null : json         # entries the last full scan could not use: [{path, reason}]
    scan_problem_count = 0 : int32
    """


@schema
class ArchiveBatch(dj.Manual):
    # The archive stage's queue: a batch goes pending -> submitted -> archived
    # (or failed / blocked, with the reason). The submission id is stored
    # before the transfer is submitted, so a submit repeated after a crash
    # can never start a second transfer.
    definition = """
    # the raw files of one session's behavior, or of one probe, sent to the archive in one transfer
    batch_id : char(16)                 # hash of h2o, session_date and part
    ---
    h2o : varchar(16)
    session_date : date
    part : varchar(16)                  # behavior (behavior and video files) | probe N (raw ephys)
    subject_id : int32
    session : int16
    insertion_number = null : int16     # the probe (part probe N)
    transport : varchar(16)             # local | globus
    state : enum('pending', 'submitted', 'archived', 'failed', 'blocked')
    submission_id = '' : varchar(64)    # the transport's idempotency key
    task_id = '' : varchar(64)
    reason = '' : varchar(2000)         # why failed or blocked, or what the transfer is waiting for
    attempts = 0 : int32                # transient failures in a row
    file_count : int32
    total_bytes : int64
    staged_time : datetime(3)
    next_attempt : datetime(3)          # not looked at before this
    archived_time = null : datetime(3)
    index (state, next_attempt)
    index (h2o, session_date)
    """


@schema
class ArchiveFile(dj.Manual):
    # A file's own state goes on after its batch: archived -> cleaned, or kept
    # (with the reason cleanup left it). The source's size, mtime and sha256
    # are read when staged; the archive copy is verified against them.
    definition = """
    # a raw file in an archive batch, and what became of its source
    -> ArchiveBatch
    file_id : char(16)                  # hash of data_root and subpath
    ---
    kind : enum('behavior', 'ephys_raw', 'video')
    data_root : varchar(4096)           # the rig or ephys data path it is under
    rig = null : varchar(24)
    subpath : varchar(4096)             # path relative to data_root
    destination : varchar(4096)         # path relative to the archive root
    file_size : int64                   # (bytes) when staged
    file_mtime : float64                # (s since epoch) when staged
    sha256 : char(64)                   # of the source when staged; the archived copy's, once verified
    state : enum('pending', 'submitted', 'archived', 'cleaned')
    verified_time = null : datetime(3)  # when the archived copy was verified
    cleaned_time = null : datetime(3)   # when mapd deleted the source
    cleanup_note = '' : varchar(2000)   # why cleanup keeps the source (or how it went)
    index (state)
    """


@schema
class SessionExport(dj.Manual):
    # mapd run's exports after commit (config export: {nwb, reports}), one row per session and target, so that
    # a restarted daemon knows what is done and mapd status shows what failed. A session is exported again
    # when it has more ingested probes (EphysIngest) or behavior files (a file appended later) than the
    # export included.
    definition = """
    # an export of an ingested session: the file written, or why it failed
    -> experiment.Session
    target : enum('nwb', 'reports')
    ---
    state : enum('done', 'failed')
    reason = '' : varchar(2000)         # why it failed
    path = '' : varchar(4096)           # the NWB file or the report's index.html
    probes : int32                      # ingested probes of the session when it was exported
    behavior_files = 0 : int32          # its ingested behavior files then (schema version 2)
    host = '' : varchar(255)
    export_time : datetime(3)
    """
