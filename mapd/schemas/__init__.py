"""The MAP DataJoint schemas, one module each, bound to a database at run time.

Each module declares ``schema = dj.Schema()`` without a name; :func:`activate`
binds them, in dependency order, to ``{prefix}{module}`` on one connection
(the original pipeline used per-user prefixes such as ``map_`` and ``daveliu_``).
Table classes keep the original pipeline's names so existing MAP queries work.
"""

from __future__ import annotations

import time

from . import ccf, ephys, experiment, ingest, lab, publication

# Activation order: every schema after the schemas it references.
MODULES = {
    "lab": lab,
    "ccf": ccf,
    "experiment": experiment,
    "ephys": ephys,
    "publication": publication,
    "ingest": ingest,
}


DECLARE_ATTEMPTS = 5
# The version of the table definitions in these modules (ingest.SchemaVersion). Raise it with any
# change that a database created before cannot take as it is, and add its step to migrations.py.
SCHEMA_VERSION = 2
VERSION_BEFORE_TRACKING = 1  # of a database made before ingest.SchemaVersion existed


def activate(connection, prefix: str) -> dict[str, object]:
    """Bind every schema module to ``{prefix}{name}`` (creating missing tables); idempotent."""
    for name, module in MODULES.items():
        schema = module.schema
        if schema.is_activated() and schema.connection is not connection:
            raise RuntimeError("mapd's schemas are already bound to another connection in this process")
        for attempt in range(DECLARE_ATTEMPTS):
            try:
                schema.activate(prefix + name, connection=connection)
                break
            except Exception as error:
                # Two processes creating the tables of a new database at once:
                # the other one won; bind to what it created.
                if "already exists" not in str(error) or attempt == DECLARE_ATTEMPTS - 1:
                    raise
                schema.database = None  # so that activate binds every table again
                time.sleep(0.2 * (attempt + 1))
    return dict(MODULES)


def database_version(mapd_version: str) -> tuple[int, str]:
    """(version, mapd version) of the table definitions the bound database holds.

    A database without a version row is given one. mapd 0.1.0, the only release
    before versions were kept, made ``ingest.SessionExport`` without
    ``behavior_files``: such a database holds version 1. Any other was made by
    a mapd that keeps versions and had not recorded it yet: this process,
    another one opening the new database at the same moment, or one killed
    before it got that far. Telling them apart by the tables themselves, not by
    whether they were there before this process came, gives every one of those
    processes the same answer.
    """
    from .ingest import SchemaVersion, SessionExport

    rows = SchemaVersion.to_dicts(order_by="schema_version DESC", limit=1)
    if not rows:
        made_now = "behavior_files" in SessionExport.heading.names
        version, made_by = (SCHEMA_VERSION, mapd_version) if made_now else (VERSION_BEFORE_TRACKING, "0.1.0")
        SchemaVersion.insert1({"schema_version": version, "mapd_version": made_by}, skip_duplicates=True)
        rows = SchemaVersion.to_dicts(order_by="schema_version DESC", limit=1)
    return int(rows[0]["schema_version"]), rows[0]["mapd_version"]


def set_version(version: int, mapd_version: str) -> None:
    """Record that the database now holds the table definitions of ``version`` (after a migration)."""
    from .ingest import SchemaVersion

    with SchemaVersion.connection.transaction:
        SchemaVersion.delete_quick()
        SchemaVersion.insert1({"schema_version": version, "mapd_version": mapd_version})
