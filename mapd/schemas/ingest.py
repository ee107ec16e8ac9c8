"""ingest: what mapd has found and ingested (the original ``ingest_behavior``/``ingest_ephys``).

``SourceFile`` is mapd's own bookkeeping: one row per data file it has found,
with the file's state. It lives in the database, not on one host, so every
mapd process on the database sees the same work and the same outcomes.
"""

import datajoint as dj

from . import ephys, experiment

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
        file_subpath = '' : varchar(1024)   # path relative to the rig data path
        file_size = null : int64            # (bytes) when ingested
        file_mtime = null : float64         # (s since epoch) when ingested
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
    definition = """
    -> experiment.Session
    """

    class EphysFile(dj.Part):
        definition = """
        -> master
        insertion_number : int8         # probe number
        ephys_file : varchar(255)       # path relative to the ephys data path
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
    definition = """
    # a data file mapd has found, and what became of it
    file_id : char(16)                  # hash of kind and path relative to its data root
    ---
    kind : enum('behavior', 'ephys')
    data_root : varchar(1024)           # the rig_data_paths / ephys_data_paths entry it is under
    rig = null : varchar(24)
    subpath : varchar(1024)             # path relative to data_root
    h2o = '' : varchar(16)              # water-restriction number from the path
    session_date = null : date
    file_size : int64                   # (bytes) when last examined
    file_mtime : float64                # (s since epoch) when last examined
    state : enum('pending', 'ingested', 'waiting', 'skipped', 'failed')
    reason = '' : varchar(2000)         # why it is waiting, skipped or failed
    detail = null : json                # e.g. skipped trials counted by reason
    attempts = 0 : int32
    host = '' : varchar(255)            # host that last worked on it
    found_time = CURRENT_TIMESTAMP : datetime
    updated_time = CURRENT_TIMESTAMP : datetime
    index (state)
    index (h2o, session_date)
    """
