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
# change that a database created before cannot take as it is.
SCHEMA_VERSION = 1


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

    A database without a version (new, or made before versions were kept)
    is given this mapd's.
    """
    from .ingest import SchemaVersion

    rows = SchemaVersion.to_dicts(order_by="schema_version DESC", limit=1)
    if not rows:
        SchemaVersion.insert1({"schema_version": SCHEMA_VERSION, "mapd_version": mapd_version}, skip_duplicates=True)
        rows = SchemaVersion.to_dicts(order_by="schema_version DESC", limit=1)
    return int(rows[0]["schema_version"]), rows[0]["mapd_version"]
