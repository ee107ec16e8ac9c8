"""publication: raw files archived to storage and how to retrieve them (original MAP ``publication``)."""

import datajoint as dj

from . import ephys, experiment  # noqa: F401 (named in table definitions)

schema = dj.Schema()


@schema
class GlobusStorageLocation(dj.Lookup):
    definition = """
    # a place raw data are archived to
    globus_alias : varchar(32)          # name for this location (e.g. raw-ephys)
    ---
    globus_endpoint : varchar(255)      # Globus endpoint id ('local' for a local archive)
    globus_path : varchar(1024)         # path on that endpoint
    """


@schema
class FileType(dj.Lookup):
    definition = """
    file_type : varchar(32)             # e.g. ap-30kHz
    ---
    file_glob : varchar(64)             # file name pattern
    """
    contents = [
        ("ap-30kHz", "*.imec.ap.bin"),
        ("ap-30kHz-meta", "*.imec.ap.meta"),
        ("lf-2.5kHz", "*.imec.lf.bin"),
        ("lf-2.5kHz-meta", "*.imec.lf.meta"),
        ("tracking-video", "*.avi"),
    ]


@schema
class DataSetType(dj.Lookup):
    definition = """
    dataset_type : varchar(64)
    """
    contents = zip(["ephys-raw-trialized", "ephys-raw-continuous", "tracking-video"])


@schema
class DataSet(dj.Manual):
    definition = """
    # a set of archived files
    -> GlobusStorageLocation
    dataset_name : varchar(128)
    ---
    -> DataSetType
    """

    class PhysicalFile(dj.Part):
        # The original recorded no checksum; a verified archive needs one.
        definition = """
        -> master
        file_subpath : varchar(255)     # path within the data set
        ---
        -> FileType
        file_size : int64               # (bytes)
        file_sha1 : char(40)            # SHA-1 of the archived file, verified after transfer
        """


@schema
class ArchivedSession(dj.Imported):
    definition = """
    -> experiment.Session
    ---
    -> GlobusStorageLocation
    """


@schema
class ArchivedRawEphys(dj.Imported):
    definition = """
    -> ArchivedSession
    -> ephys.ProbeInsertion
    ---
    -> DataSet
    """
