"""lab: people, rigs, subjects and their procedures (the original MAP ``lab`` schema)."""

import datajoint as dj

schema = dj.Schema()


@schema
class Person(dj.Manual):
    definition = """
    username : varchar(24)
    ----
    fullname = '' : varchar(255)
    """


@schema
class Rig(dj.Manual):
    definition = """
    rig : varchar(24)
    ---
    room = '' : varchar(20)             # example 2w.342
    rig_description = '' : varchar(1024)
    """


@schema
class AnimalStrain(dj.Lookup):
    definition = """
    animal_strain : varchar(30)
    """
    contents = zip(["pl56", "kj18"])


@schema
class AnimalSource(dj.Lookup):
    definition = """
    animal_source : varchar(30)
    """
    contents = zip(["Jackson Labs", "Allen Institute", "Charles River", "MMRRC", "Taconic", "Other"])


@schema
class ModifiedGene(dj.Manual):
    definition = """
    gene_modification : varchar(60)
    ---
    gene_modification_description = '' : varchar(256)
    """


@schema
class Subject(dj.Manual):
    # Fix: the original required cage number and date of birth, which mapd
    # cannot know when a subject is entered from its water-restriction id alone.
    definition = """
    subject_id : int32                  # institution 6 digit animal ID
    ---
    -> [nullable] Person                # person responsible for the animal
    cage_number = null : int32          # institution cage number
    date_of_birth = null : date         # format: yyyy-mm-dd
    sex = 'Unknown' : enum('M', 'F', 'Unknown')
    -> [nullable] AnimalSource          # where the animal was ordered from
    """

    class Strain(dj.Part):
        definition = """
        # Subject strains
        -> master
        -> AnimalStrain
        """

    class GeneModification(dj.Part):
        definition = """
        # Subject gene modifications
        -> master
        -> ModifiedGene
        ---
        zygosity = 'Unknown' : enum('Het', 'Hom', 'Unknown')
        type = 'Unknown' : enum('Knock-in', 'Transgene', 'Unknown')
        """


@schema
class WaterRestriction(dj.Manual):
    # Fix: the water-restriction number ("h2o") names the subject in every file
    # name, so it must identify one subject: unique index added.
    definition = """
    -> Subject
    ---
    water_restriction_number : varchar(16)     # WR number, e.g. dl25
    cage_number = null : int32
    wr_start_date = null : date
    wr_start_weight = null : decimal(6,3)
    unique index (water_restriction_number)
    """


@schema
class VirusSource(dj.Lookup):
    definition = """
    virus_source : varchar(60)
    """
    contents = zip(["Janelia", "UPenn", "Addgene", "UNC", "Other"])


@schema
class Serotype(dj.Manual):
    definition = """
    serotype : varchar(60)
    """


@schema
class Virus(dj.Manual):
    definition = """
    virus_id : int32
    ---
    -> VirusSource
    -> Serotype
    -> Person
    virus_name : varchar(256)
    titer : decimal(20,1)
    order_date : date
    remarks = '' : varchar(256)
    """

    class Notes(dj.Part):
        definition = """
        # Notes for virus
        -> master
        note_id : int32
        ---
        note : varchar(256)
        """


@schema
class SkullReference(dj.Lookup):
    definition = """
    skull_reference : varchar(60)
    """
    contents = zip(["Bregma", "Lambda"])


@schema
class BrainArea(dj.Lookup):
    definition = """
    brain_area : varchar(32)
    ---
    description = null : varchar(4000)  # name of the brain area (lab terms, not necessarily in AIBS)
    """
    contents = [
        ("ALM", "anterior lateral motor cortex"),
        ("vS1", 'vibrissal primary somatosensory cortex ("barrel cortex")'),
        ("Thalamus", "Thalamus"),
        ("Medulla", "Medulla"),
        ("Striatum", "Striatum"),
        ("Midbrain", "Midbrain"),
    ]


@schema
class Hemisphere(dj.Lookup):
    definition = """
    hemisphere : varchar(32)
    """
    contents = zip(["left", "right", "both"])


@schema
class Surgery(dj.Manual):
    definition = """
    -> Subject
    surgery_id : int32                  # surgery number
    ---
    -> Person
    start_time : datetime
    end_time : datetime
    surgery_description : varchar(256)
    """

    class VirusInjection(dj.Part):
        definition = """
        # Virus injections
        -> master
        injection_id : int32
        ---
        -> Virus
        -> SkullReference
        ap_location : decimal(8,3)      # um from ref; anterior is positive
        ml_location : decimal(8,3)      # um from ref; right is positive
        dv_location : decimal(8,3)      # um from dura; dorsal is positive
        volume : decimal(10,3)          # in nl
        dilution : decimal(10,2)        # 1 to how much
        description : varchar(256)
        """

    class Procedure(dj.Part):
        definition = """
        # Other things done to the animal
        -> master
        procedure_id : int32
        ---
        -> SkullReference
        ap_location = null : decimal(8,3)
        ml_location = null : decimal(8,3)
        dv_location = null : decimal(8,3)
        surgery_procedure_description : varchar(1000)
        """


@schema
class SurgeryLocation(dj.Manual):
    definition = """
    -> Surgery.Procedure
    ---
    -> Hemisphere
    -> BrainArea
    """


@schema
class ProbeType(dj.Lookup):
    definition = """
    probe_type : varchar(32)            # e.g. neuropixels 1.0 - 3A
    """
    contents = zip(["silicon_probe", "tetrode_array", "neuropixels 1.0 - 3A", "neuropixels 1.0 - 3B"])

    class Electrode(dj.Part):
        definition = """
        -> master
        electrode : int32               # electrode index, starts at 1
        ---
        shank : int32                   # shank index, starts at 0, left to right
        shank_col : int32               # column index, starts at 0, left to right
        shank_row : int32               # row index, starts at 0, tip to tail
        x_coord = null : float32        # (um) x within the probe, (0, 0) is the tip
        y_coord = null : float32        # (um) y within the probe
        z_coord = 0 : float32           # (um) z within the probe
        """


@schema
class ElectrodeConfig(dj.Lookup):
    definition = """
    -> ProbeType
    electrode_config_name : varchar(64)     # user friendly name
    ---
    electrode_config_hash : char(32)        # hash of the group and its members
    unique index (electrode_config_hash)
    """

    class ElectrodeGroup(dj.Part):
        definition = """
        # electrodes clustered together (e.g. a neuropixels configuration of 384 of 960)
        -> master
        electrode_group : int32
        """

    class Electrode(dj.Part):
        definition = """
        -> master.ElectrodeGroup
        -> ProbeType.Electrode
        ---
        is_used = 1 : bool              # used for spatial average (reference channels are not)
        """


@schema
class Probe(dj.Lookup):
    definition = """
    # a physical probe
    probe : varchar(32)                 # serial number or other unique identifier
    ---
    -> ProbeType
    probe_comment = '' : varchar(1000)
    """


@schema
class PhotostimDevice(dj.Lookup):
    definition = """
    photostim_device : varchar(20)
    ---
    excitation_wavelength : decimal(5,1)        # (nm)
    photostim_device_description : varchar(255)
    """
    contents = [
        ("LaserGem473", 473, "Laser (Laser Quantum, Gem 473)"),
        ("LED470", 470, "LED (Thor Labs, M470F3 - 470 nm, 17.2 mW (Min) Fiber-Coupled LED)"),
        ("OBIS470", 473, "OBIS 473nm LX 50mW Laser System: Fiber Pigtail (Coherent Inc)"),
    ]
