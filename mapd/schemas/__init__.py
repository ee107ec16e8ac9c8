"""The MAP DataJoint schemas, one module each, bound to a database at run time.

Each module declares ``schema = dj.Schema()`` without a name; :func:`activate`
binds them, in dependency order, to ``{prefix}{module}`` on one connection
(the original pipeline used per-user prefixes such as ``map_`` and ``daveliu_``).
Table classes keep the original pipeline's names so existing MAP queries work.
"""

from __future__ import annotations

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


def activate(connection, prefix: str) -> dict[str, object]:
    """Bind every schema module to ``{prefix}{name}`` (creating missing tables); idempotent."""
    for name, module in MODULES.items():
        schema = module.schema
        if schema.is_activated() and schema.connection is not connection:
            raise RuntimeError("mapd's schemas are already bound to another connection in this process")
        schema.activate(prefix + name, connection=connection)
    return dict(MODULES)
