"""ccf: the Allen Institute's Common Coordinate Framework, for annotations (original MAP ``ccf``)."""

import datajoint as dj

schema = dj.Schema()


@schema
class CCFLabel(dj.Lookup):
    definition = """
    # CCF annotation labels
    ccf_label_id : int32                # brain region id in the Allen ontology
    ---
    ccf_label = '' : varchar(128)       # brain region name
    """


@schema
class CCF(dj.Lookup):
    definition = """
    # Common Coordinate Framework voxels
    -> CCFLabel
    ccf_x : int32                       # (um)
    ccf_y : int32                       # (um)
    ccf_z : int32                       # (um)
    """


@schema
class AnnotationType(dj.Lookup):
    definition = """
    annotation_type : varchar(16)
    """
    contents = zip(["MAP Generic"])


@schema
class CCFAnnotation(dj.Manual):
    definition = """
    -> CCF
    -> AnnotationType
    ---
    annotation : varchar(1024)
    """
