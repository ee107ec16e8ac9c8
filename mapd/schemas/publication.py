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
        # imec* also matches the imec0, imec1 ... that newer SpikeGLX writes.
        ("ap-30kHz", "*.imec*.ap.bin"),
        ("ap-30kHz-meta", "*.imec*.ap.meta"),
        ("lf-2.5kHz", "*.imec*.lf.bin"),
        ("lf-2.5kHz-meta", "*.imec*.lf.meta"),
        ("tracking-video", "*.avi"),
        ("behavior-bpod", "*.mat"),  # mapd: Bpod session files are archived too
        ("other", "*"),  # a file an archive.files pattern matched that none of the above names
    ]


@schema
class DataSetType(dj.Lookup):
    definition = """
    dataset_type : varchar(64)
    """
    contents = zip(["ephys-raw-trialized", "ephys-raw-continuous", "tracking-video", "behavior-raw"])


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
        # (512 characters: with the master's key, the longest MySQL allows.)
        definition = """
        -> master
        file_subpath : varchar(512)     # path within the archive root: {h2o}/{YYYY-MM-DD}/{kind}/{path}
        ---
        -> FileType
        file_size : int64               # (bytes)
        file_sha256 : char(64)          # SHA-256 of the archived file, verified after transfer
        """

    def retrieve(self, to, config=None):
        """Bring these data sets' files back under ``to`` (archive layout), verified; see :mod:`mapd.archive.retrieve`."""
        from ..archive.retrieve import retrieve_physical_files

        return retrieve_physical_files(self.PhysicalFile & self, to, config)


@schema
class ArchivedSession(dj.Manual):
    definition = """
    -> experiment.Session
    ---
    -> GlobusStorageLocation
    """

    class BehaviorData(dj.Part):
        # mapd: the session's Bpod files (and videos), archived as one data set.
        definition = """
        -> master
        ---
        -> DataSet
        """

    def retrieve(self, to, config=None):
        """Bring these sessions' archived behavior files back under ``to``, verified."""
        from ..archive.retrieve import retrieve_physical_files

        return retrieve_physical_files(DataSet.PhysicalFile & (self.BehaviorData & self), to, config)


@schema
class ArchivedRawEphys(dj.Manual):
    definition = """
    -> ArchivedSession
    -> ephys.ProbeInsertion
    ---
    -> DataSet
    """

    def retrieve(self, to, config=None):
        """Bring these probes' archived raw files back under ``to``, verified (the seed's method)."""
        from ..archive.retrieve import retrieve_physical_files

        return retrieve_physical_files(DataSet.PhysicalFile & self, to, config)
