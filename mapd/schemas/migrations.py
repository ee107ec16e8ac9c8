"""A database made by an older mapd -> this mapd's table definitions, one step per schema version.

Each step is idempotent (a step interrupted half-way is simply run again)
and leaves the data as the new definitions mean it. The schemas must be
bound (:func:`mapd.schemas.activate`); ``mapd migrate`` runs the steps with
every daemon on the database stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import datajoint as dj
from datajoint.declare import compile_attribute
from datajoint.heading import Heading

from . import SCHEMA_VERSION, experiment, ingest

__all__ = ["MigrationError", "Step", "steps_from"]


class MigrationError(Exception):
    """A step could not be applied (the message says why; nothing after it was run)."""


@dataclass(frozen=True)
class Step:
    version: int  # the version the database has after it
    summary: str
    apply: Callable[[], None]


def _add_column(table: dj.Table, name: str) -> None:
    """Add attribute ``name`` of the table's definition to the database's table, as DataJoint declares it.

    Not ``Table.alter``: on PostgreSQL it also rewrites unchanged columns in
    MySQL syntax, which the server rejects.
    """
    if name in table.heading.names:
        return
    [line] = [line.strip() for line in table.definition.splitlines() if line.strip().split(" ")[0] == name]
    adapter = table.connection.adapter
    column, sql, _, comment = compile_attribute(line, False, [], {}, adapter)
    try:
        table.connection.query(f"ALTER TABLE {table.full_table_name} ADD COLUMN {sql}")
        comment_ddl = adapter.column_comment_ddl(table.full_table_name, column, comment) if comment else None
        if comment_ddl:  # PostgreSQL keeps comments (and DataJoint's type of the column) apart
            table.connection.query(comment_ddl)
    except dj.errors.AccessError as error:
        raise MigrationError(f"cannot add {name} to {table.full_table_name}: {error} (run `mapd migrate` with "
                             "the tables' owner as the database user)") from None
    type(table)._heading = Heading(table_info=table.heading.table_info)  # read again, as Table.alter does


def _count_exported_behavior_files() -> None:
    """2: SessionExport.behavior_files, so that a behavior file appended to an exported session redoes the export."""
    table = ingest.SessionExport()
    _add_column(table, "behavior_files")
    # The exports made so far are taken to hold every file their session had: counting the files now
    # (not 0) keeps every session from being exported again at the first start after the upgrade.
    files = experiment.Session.proj().aggr(ingest.BehaviorIngest.BehaviorFile, n="count(behavior_file)")
    rows = (table.proj("behavior_files") * files & "behavior_files <> n").to_dicts()
    with table.connection.transaction:
        for row in rows:
            table.update1({**{k: row[k] for k in table.primary_key}, "behavior_files": int(row["n"])})


STEPS = (
    Step(2, "ingest.SessionExport gains behavior_files (a behavior file appended later outdates an export)",
         _count_exported_behavior_files),
)
assert STEPS[-1].version == SCHEMA_VERSION, "a new schema version needs its step here"


def steps_from(version: int) -> list[Step]:
    """The steps that bring a database of ``version`` to this mapd's, in order."""
    return [step for step in STEPS if step.version > version]
