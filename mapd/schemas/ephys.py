"""ephys: probe insertions, sorted units and their spikes per trial (the original MAP ``ephys``).

Rows are entered by :mod:`mapd.ingest.probe`, one probe folder per transaction.
Times: a unit's ``spike_times`` count from the start of the first recorded
trial; ``TrialSpikes.spike_times`` from the trial's go cue.
"""

import datajoint as dj

from . import experiment, lab  # noqa: F401 (named in table definitions)

schema = dj.Schema()


@schema
class ProbeInsertion(dj.Manual):
    # The 2018 pipeline called this ElectrodeGroup (one per probe per session).
    definition = """
    -> experiment.Session
    insertion_number : int8             # probe number (the N of {h2o}/{date}/{N}/)
    ---
    -> [nullable] lab.Probe             # the probe's serial number, from its SpikeGLX .ap.meta
    -> [nullable] lab.ElectrodeConfig   # probe type and the electrodes recorded, from the .meta's channel map
    """

    class RecordingSystemSetup(dj.Part):
        definition = """
        -> master
        ---
        sampling_rate : float64         # (Hz) of the recording the spike times count in
        """

    class InsertionLocation(dj.Part):
        definition = """
        -> master
        ---
        -> lab.SkullReference
        ap_location : decimal(6,2)      # (um) anterior-posterior; ref is 0
        ml_location : decimal(6,2)      # (um) medial axis; ref is 0; right is positive
        depth : decimal(6,2)            # (um) manipulator depth; ventral is negative
        theta = null : decimal(5,2)     # (deg) elevation
        phi = null : decimal(5,2)       # (deg) azimuth
        -> lab.BrainArea
        -> lab.Hemisphere
        """


@schema
class UnitQualityType(dj.Lookup):
    definition = """
    unit_quality : varchar(100)
    ---
    unit_quality_description : varchar(4000)
    """
    contents = [
        ("good", "single unit"),
        ("ok", "probably a single unit, but could be contaminated"),
        ("multi", "multi unit"),
        ("all", "all units"),
    ]


@schema
class CellType(dj.Lookup):
    definition = """
    cell_type : varchar(100)
    ---
    cell_type_description : varchar(4000)
    """
    contents = [
        ("Pyr", "putative pyramidal"),
        ("FS", "fast spiking"),
        ("not classified", "intermediate spike-width that falls between spike-width thresholds"),
        ("all", "all types"),
    ]


@schema
class ClusteringMethod(dj.Lookup):
    definition = """
    clustering_method : varchar(16)
    """
    contents = zip(["jrclust_v3", "jrclust_v4", "kilosort", "kilosort2"])


@schema
class UnitUidBlock(dj.Manual):
    # Reserves Unit.unit_uid values in blocks, one short transaction per probe
    # ingest (as ingest.TrialUidBlock does for trials), so that concurrent
    # ingests never contend for one counter inside their long transactions.
    definition = """
    first_uid : int32
    ---
    uid_count : int32
    """


@schema
class Unit(dj.Imported):
    # Fix: unit_uid was the cluster number, not unique as documented; mapd
    # allocates it from UnitUidBlock and a unique index holds it.
    definition = """
    # a sorted unit of one probe insertion (noise clusters left out)
    -> ProbeInsertion
    -> ClusteringMethod
    unit : int32                        # the sorter's cluster number
    ---
    unit_uid : int32                    # unique across sessions and animals
    -> UnitQualityType
    unit_site = null : int32            # recording site of largest amplitude (1-based, as the sorter numbers sites)
    -> [nullable] lab.ElectrodeConfig.Electrode     # the electrode of unit_site (when the probe's .meta is known)
    unit_posx = null : float64          # (um) estimated x position of the unit on the probe
    unit_posy = null : float64          # (um) estimated y position of the unit on the probe (from the tip)
    unit_amp = null : float64           # (uV) peak-to-peak amplitude
    unit_snr = null : float64           # signal-to-noise ratio
    spike_times : <blob>                # (s) every spike of the unit, from the start of the first recorded trial
    waveform = null : <blob>            # mean waveform on unit_site (samples; JRClust: uV, Kilosort: template units)
    unique index (unit_uid)
    """

    class UnitTrial(dj.Part):
        definition = """
        # the trials in which this unit has spikes
        -> master
        -> experiment.SessionTrial
        """


@schema
class UnitCellType(dj.Computed):
    definition = """
    -> Unit
    ---
    -> CellType
    """


@schema
class TrialSpikes(dj.Imported):
    # One row per unit and stored trial with a go cue, also when the unit has
    # no spike in it (an empty array), as the original: a PSTH divides by the
    # number of rows. The go cue is the bitcode file's goCue, else the trial's
    # start in the recording plus its behavior go event.
    definition = """
    -> Unit
    -> experiment.SessionTrial
    ---
    spike_times : <blob>                # (s) relative to the trial's go cue (bitcode goCue, else start + go event)
    """
