"""Opening mapd's database for a command: start or reach the server, bind the schemas."""

from __future__ import annotations

from dataclasses import dataclass

from . import __version__, database, failpoints, schemas
from .config import MapdConfig
from .database import ConnectionParams, DatabaseError


@dataclass
class Database:
    """An open database: how to reach it (for worker processes) and this process's connection."""

    params: ConnectionParams
    instance: object  # dj.Instance
    schema_version: int  # of the tables it holds (ingest.SchemaVersion)
    made_by: str  # the mapd version that created or last migrated them

    @property
    def connection(self):
        return self.instance.connection


# DataJoint binds table classes to one connection per process, so a process
# opens each database once and reuses it.
_opened: dict[ConnectionParams, Database] = {}


def open_database(config: MapdConfig, *, any_schema_version: bool = False) -> Database:
    """Start (embedded) or reach the database, bind the MAP schemas and enter the configured rigs and user.

    A database whose tables are of another schema version than this mapd's is
    refused (DatabaseError), except with ``any_schema_version`` (``mapd migrate``).
    """
    params = database.start(config)
    db = _opened.get(params)
    if db is None:
        instance = database.connect(params)
        schemas.activate(instance.connection, params.schema_prefix)
        failpoints.reached("schemas:activated")
        found, made_by = schemas.database_version(__version__)
        db = _opened[params] = Database(params, instance, found, made_by)
    if not any_schema_version:
        check_schema_version(db.schema_version, db.made_by)
        enter_reference_rows(config)
    return db


def check_schema_version(found: int, made_by: str) -> None:
    held = f"the database holds mapd's tables of version {found} (made by mapd {made_by})"
    if found > schemas.SCHEMA_VERSION:
        raise DatabaseError(f"{held}; this mapd ({__version__}) knows version {schemas.SCHEMA_VERSION}: "
                            "upgrade mapd on this host")
    if found < schemas.SCHEMA_VERSION:
        raise DatabaseError(f"{held}; this mapd ({__version__}) needs version {schemas.SCHEMA_VERSION}: stop every "
                            "`mapd run` on the database, then run `mapd migrate` once")


def enter_reference_rows(config: MapdConfig) -> None:
    """Sessions reference lab.Person and lab.Rig: the configured ones must exist."""
    from .schemas import lab

    lab.Person.insert1({"username": config.session_user}, skip_duplicates=True)
    lab.Rig.insert([{"rig": rig} for rig in config.rigs], skip_duplicates=True)
