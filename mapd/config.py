"""mapd's configuration: one YAML file, validated once at start and passed down.

The key names follow the original MAP pipeline's ``dj_local_conf.json``
(``rig_data_paths``, ``ephys_data_paths``, ``session_user``) so MAP users
recognise them. Relative paths in the file are taken relative to the file's
own directory, so a config next to its data works from any working directory.
"""

from __future__ import annotations

import os
import zoneinfo
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

CONFIG_ENV = "MAPD_CONFIG"
PASSWORD_ENV = "MAPD_DB_PASSWORD"
GLOBUS_SECRET_ENV = "MAPD_GLOBUS_CLIENT_SECRET"
DEFAULT_LOCATIONS = (Path("mapd.yaml"), Path("/etc/mapd/mapd.yaml"))


class ConfigError(Exception):
    """The configuration cannot be found, read or validated.

    The message names the file and, for validation errors, each key and what is wrong.
    """


class _Strict(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Strict):
    backend: Literal["embedded", "postgresql", "mysql"] = "embedded"
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    password_file: Path | None = None
    # PostgreSQL only: the database that holds the schemas.
    name: str | None = None
    schema_prefix: str = Field(default="map_", pattern=r"^[a-z][a-z0-9_]*$")
    # Embedded only: the server's data directory (None: state_dir/pgdata); its lock file lies beside it.
    data_directory: Path | None = None
    # Never serialised with a value; filled from password_file or MAPD_DB_PASSWORD.
    password: SecretStr | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _server_needs_host_and_user(self) -> "DatabaseConfig":
        if self.backend != "embedded" and self.data_directory is not None:
            raise ValueError(f"data_directory is the embedded server's; backend {self.backend} has none")
        if self.backend != "embedded":
            missing = [key for key in ("host", "user") if getattr(self, key) is None]
            if missing:
                raise ValueError(f"backend {self.backend} needs {' and '.join(missing)}")
        return self


class _WatchedPath(_Strict):
    path: Path
    order: int = 0
    # events: inotify; poll: list the tree every poll_interval seconds. Network
    # shares (NFS, CIFS) deliver no events for writes by other machines, which
    # is how rigs write: auto polls there and uses events on local disks.
    watch: Literal["auto", "events", "poll"] = "auto"
    poll_interval: float = Field(default=10.0, gt=0)


class RigDataPath(_WatchedPath):
    rig: str = Field(min_length=1, max_length=24)


class EphysDataPath(_WatchedPath):
    pass


class IngestConfig(_Strict):
    # The original pipeline skipped files under 100 KB as aborted sessions.
    min_behavior_file_bytes: int = Field(default=100 * 1024, ge=0)
    # Processes that parse and ingest in parallel (rescan).
    workers: int = Field(default=2, ge=1, le=64)
    # A file whose declared content would inflate beyond this is refused before
    # it is read (a compressed v5 variable or v7.3 datasets can claim gigabytes).
    # The largest real MAP sessions hold tens of MB: 512 MiB is a wide margin.
    max_inflated_bytes: int = Field(default=512 * 1024**2, ge=1024**2)
    # Address space each parse process may use beyond its start-up size; a file
    # that slips past the declared-size check fails alone when it hits this.
    parse_memory_bytes: int = Field(default=2 * 1024**3, ge=64 * 1024**2)


class RetryConfig(_Strict):
    """Backoff for transient failures (database unreachable, share gone, file locked)."""

    initial_seconds: float = Field(default=2.0, gt=0)
    max_seconds: float = Field(default=300.0, gt=0)
    max_attempts: int = Field(default=10, ge=1)  # then the file is recorded as failed


class DaemonConfig(_Strict):
    # A file is taken once its size and mtime have not changed for this long.
    settle_seconds: float = Field(default=10.0, ge=0)
    # Full scan of every data path, besides watching (catches anything missed).
    reconcile_interval: float = Field(default=3600.0, gt=0)
    # How often files waiting for their subject are looked at again.
    waiting_recheck_seconds: float = Field(default=60.0, gt=0)
    # Liveness in the database (mapd status) and claims held by dead daemons.
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    # On SIGTERM the ingest in progress is finished or rolled back within this.
    shutdown_timeout: float = Field(default=30.0, gt=0)
    retry: RetryConfig = RetryConfig()


class LoggingConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # Optional JSON-lines log file (in addition to stderr).
    file: Path | None = None


class MetricsConfig(_Strict):
    # "host:port" (an IPv6 host in brackets, "[::1]:9464") where `mapd run` serves Prometheus
    # metrics; off by default. 127.0.0.1 keeps them on this machine; 0.0.0.0 in a container.
    listen: str | None = None

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, listen: str | None) -> str | None:
        if listen is not None:
            split_listen(listen)
        return listen

    @property
    def address(self) -> tuple[str, int] | None:
        return split_listen(self.listen) if self.listen is not None else None


def split_listen(listen: str) -> tuple[str, int]:
    """'127.0.0.1:9464' -> ('127.0.0.1', 9464); '[::1]:9464' -> ('::1', 9464); ValueError otherwise."""
    host, colon, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, e.g. 127.0.0.1:9464, not {listen!r}")
    return host, int(port)


class LocalArchiveConfig(_Strict):
    # A mounted archive (NAS): files are copied here and verified.
    path: Path


class GlobusArchiveConfig(_Strict):
    source_endpoint: str = Field(min_length=1)  # the endpoint serving this host's data paths
    # Local path prefix -> the same directory's path on source_endpoint.
    source_paths: dict[Path, str] = Field(min_length=1)
    destination_endpoint: str = Field(min_length=1)
    destination_path: str = Field(pattern=r"^/")
    # A confidential client for the unattended daemon; without one, the tokens
    # of a person's `mapd globus login` (in state_dir) are used.
    client_id: str | None = None
    client_secret_file: Path | None = None
    # Never serialised with a value; read from client_secret_file or MAPD_GLOBUS_CLIENT_SECRET.
    client_secret: SecretStr | None = Field(default=None, exclude=True)
    # The native app `mapd globus login` signs in with (register one at
    # https://app.globus.org/settings/developers): mapd has no client id of its own
    # to ship, and borrowing another application's would misname who asks for access.
    login_client_id: str | None = None
    # Which of the two endpoints are GCS v5 mapped (not high-assurance) collections:
    # they need a data_access consent, which login asks for. Guest collections must
    # not be listed (Globus answers "unknown scope").
    data_access_collections: list[str] = []


class ArchiveFilesConfig(_Strict):
    """Which raw files of a session are archived: globs relative to the data path they are under.

    ``{h2o}``, ``{YYYYMMDD}`` and ``{YYYY-MM-DD}`` are replaced by the session's.
    """

    behavior: list[str] = ["{h2o}/*/Session Data/{h2o}_*_{YYYYMMDD}_*.mat"]  # under each rig data path
    ephys_raw: list[str] = ["{h2o}/{YYYY-MM-DD}/*/*.imec*.bin", "{h2o}/{YYYY-MM-DD}/*/*.imec*.meta"]  # ephys paths
    video: list[str] = []  # under each rig data path


class ArchiveConfig(_Strict):
    transport: Literal["none", "local", "globus"] = "none"
    local: LocalArchiveConfig | None = None
    globus: GlobusArchiveConfig | None = None
    files: ArchiveFilesConfig = ArchiveFilesConfig()
    # How often a submitted transfer is asked how it is going.
    poll_seconds: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _transport_configured(self) -> "ArchiveConfig":
        if self.transport != "none" and getattr(self, self.transport) is None:
            raise ValueError(f"transport {self.transport} needs an archive.{self.transport} section")
        return self


class CleanupConfig(_Strict):
    enabled: bool = False  # off by default: deleting from a rig is the operator's decision
    # Time between verified archival and deletion: room to notice a bad archive.
    grace_seconds: float = Field(default=7 * 24 * 3600, ge=0)
    # Only files whose real path (symlinks resolved) lies below one of these may be deleted.
    roots: list[Path] = []


class ExportConfig(_Strict):
    """What ``mapd run`` writes after a session commits (each target off unless given a directory)."""

    nwb: Path | None = None  # one NWB file per session, below this directory
    reports: Path | None = None  # figures and an index.html per session, below this directory

    @property
    def targets(self) -> dict[str, Path]:
        """target name (nwb | reports) -> its directory, for the targets that are on."""
        return {name: path for name, path in (("nwb", self.nwb), ("reports", self.reports)) if path is not None}


class MapdConfig(_Strict):
    state_dir: Path = Path("/var/lib/mapd")
    database: DatabaseConfig = DatabaseConfig()
    session_user: str = Field(min_length=1, max_length=24)
    rig_data_paths: list[RigDataPath] = []
    ephys_data_paths: list[EphysDataPath] = []
    ingest: IngestConfig = IngestConfig()
    daemon: DaemonConfig = DaemonConfig()
    logging: LoggingConfig = LoggingConfig()
    metrics: MetricsConfig = MetricsConfig()
    archive: ArchiveConfig = ArchiveConfig()
    cleanup: CleanupConfig = CleanupConfig()
    # IANA zone of the rigs' clocks (session start times in NWB files); None: the host's.
    timezone: str | None = None
    export: ExportConfig = ExportConfig()
    # Where this configuration was read from (not a key of the file).
    source: Annotated[Path | None, Field(exclude=True)] = None

    @field_validator("rig_data_paths")
    @classmethod
    def _rigs_unique(cls, paths: list[RigDataPath]) -> list[RigDataPath]:
        seen: set[Path] = set()
        for entry in paths:
            if entry.path in seen:
                raise ValueError(f"path {entry.path} is listed twice")
            seen.add(entry.path)
        return sorted(paths, key=lambda entry: entry.order)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str | None) -> str | None:
        if name is not None:
            try:
                zoneinfo.ZoneInfo(name)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {name!r} (an IANA name such as America/New_York)") from None
        return name

    @field_validator("ephys_data_paths")
    @classmethod
    def _ephys_sorted(cls, paths: list[EphysDataPath]) -> list[EphysDataPath]:
        return sorted(paths, key=lambda entry: entry.order)

    @property
    def rigs(self) -> list[str]:
        return sorted({entry.rig for entry in self.rig_data_paths})

    @property
    def pgdata(self) -> Path:
        """The embedded server's data directory."""
        return self.database.data_directory or self.state_dir / "pgdata"


def find_config_file(explicit: str | os.PathLike | None = None) -> Path:
    """The config file: ``--config``, else ``$MAPD_CONFIG``, else ./mapd.yaml, else /etc/mapd/mapd.yaml."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    for candidate in DEFAULT_LOCATIONS:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(p) for p in DEFAULT_LOCATIONS)
    raise ConfigError(f"no configuration file: pass --config FILE, set ${CONFIG_ENV}, or create one of {tried}")


def load_config(explicit: str | os.PathLike | None = None) -> MapdConfig:
    """Find, read and validate the configuration; raises ConfigError with a readable message."""
    path = find_config_file(explicit)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> MapdConfig:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    try:
        config = MapdConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(path, error)) from None
    return _resolve(config, path)


def _describe(path: Path, error: ValidationError) -> str:
    lines = [f"{path}: invalid configuration"]
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        elif problem["type"] == "missing":
            message = "required key is missing"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def _resolve(config: MapdConfig, path: Path) -> MapdConfig:
    """Make paths absolute (relative to the config file) and read the password secret."""
    base = path.resolve().parent

    def absolute(value: Path) -> Path:
        value = value.expanduser()
        return value if value.is_absolute() else base / value

    database = config.database
    password = _read_password(database, path, absolute)
    database = database.model_copy(
        update={
            "password": password,
            "password_file": absolute(database.password_file) if database.password_file else None,
            "data_directory": absolute(database.data_directory) if database.data_directory else None,
        }
    )
    logging = config.logging
    if logging.file is not None:
        logging = logging.model_copy(update={"file": absolute(logging.file)})
    return config.model_copy(
        update={
            "archive": _resolve_archive(config.archive, path, absolute),
            "cleanup": config.cleanup.model_copy(update={"roots": [absolute(r) for r in config.cleanup.roots]}),
            "state_dir": absolute(config.state_dir),
            "database": database,
            "rig_data_paths": [e.model_copy(update={"path": absolute(e.path)}) for e in config.rig_data_paths],
            "ephys_data_paths": [e.model_copy(update={"path": absolute(e.path)}) for e in config.ephys_data_paths],
            "logging": logging,
            "export": config.export.model_copy(update={name: absolute(target)
                                                       for name, target in config.export.targets.items()}),
            "source": path.resolve(),
        }
    )


def _resolve_archive(archive: ArchiveConfig, path: Path, absolute) -> ArchiveConfig:
    update = {}
    if archive.local is not None:
        update["local"] = archive.local.model_copy(update={"path": absolute(archive.local.path)})
    if archive.globus is not None:
        globus = archive.globus
        secret_file = absolute(globus.client_secret_file) if globus.client_secret_file else None
        update["globus"] = globus.model_copy(update={
            "source_paths": {absolute(local): remote for local, remote in globus.source_paths.items()},
            "client_secret_file": secret_file,
            "client_secret": _read_secret(GLOBUS_SECRET_ENV, secret_file, path, "archive.globus.client_secret_file"),
        })
    return archive.model_copy(update=update)


def _read_password(database: DatabaseConfig, path: Path, absolute) -> SecretStr | None:
    secret_file = absolute(database.password_file) if database.password_file else None
    return _read_secret(PASSWORD_ENV, secret_file, path, "database.password_file")


def _read_secret(env: str, secret_path: Path | None, path: Path, key: str) -> SecretStr | None:
    # The environment wins over the file so that a service manager can inject it.
    if os.environ.get(env):
        return SecretStr(os.environ[env])
    if secret_path is None:
        return None
    try:
        return SecretStr(secret_path.read_text().strip())
    except OSError as error:
        raise ConfigError(f"{path}: {key}: cannot read {secret_path}: {error.strerror or error}") from None
