"""ephys: probe insertions, sorted units and their spikes per trial (the original MAP ``ephys``)."""

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
    -> [nullable] lab.Probe
    -> [nullable] lab.ElectrodeConfig
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
class Unit(dj.Imported):
    definition = """
    # a sorted unit of one probe insertion
    -> ProbeInsertion
    -> ClusteringMethod
    unit : int32
    ---
    unit_uid : int32                    # unique across sessions and animals
    -> UnitQualityType
    unit_site = null : int32            # electrode site with the largest amplitude
    unit_posx : float64                 # (um) estimated x position of the unit on the probe
    unit_posy : float64                 # (um) estimated y position of the unit on the probe
    unit_amp = null : float64           # (uV) peak-to-peak amplitude
    unit_snr = null : float64           # signal-to-noise ratio
    spike_times : <blob>                # (s) from the start of the recording
    waveform : <blob>                   # average spike waveform (sites x samples)
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
    definition = """
    -> Unit
    -> experiment.SessionTrial
    ---
    spike_times : <blob>                # (s) relative to the trial start
    """
