"""Prometheus metrics of ``mapd run`` (prometheus-client), served when ``metrics.listen`` is set.

The HTTP server is prometheus-client's, in a daemon thread: it only reads the
values below and never touches the database (DataJoint connections are not
thread-safe). The main thread sets the gauges at each heartbeat from what it
queried there; counters and the histogram are counted where the work
happens, through the small functions at the end. Labels are kinds, states,
rigs and data paths: never a secret, never row data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server

from .find.health import MISSING, NOT_A_DIRECTORY, OK, UNREADABLE, PathHealth

HEALTHS = (OK, MISSING, NOT_A_DIRECTORY, UNREADABLE)
# A behavior day takes about 0.5 s, a large probe tens of seconds.
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_resident_memory_bytes, process_cpu_seconds_total, ...

FILES = Gauge("mapd_files", "Queued units per kind and state (files of kind behavior, folders of kind probe)",
              ["kind", "state"], registry=REGISTRY)
OLDEST_WAITING = Gauge("mapd_oldest_waiting_seconds", "Age of the oldest waiting unit of each kind (0: none waits)",
                       ["kind"], registry=REGISTRY)
PATH_HEALTH = Gauge("mapd_data_path_health", "1 for each data path's current health (ok, missing, not a directory, "
                    "unreadable), 0 for the others", ["kind", "rig", "path", "health"], registry=REGISTRY)
HEARTBEAT = Gauge("mapd_last_heartbeat_timestamp_seconds", "Unix time of the daemon's last heartbeat",
                  registry=REGISTRY)
DATABASE_OK = Gauge("mapd_database_ok", "1 when the database answered at the last heartbeat, 0 while mapd waits "
                    "for it", registry=REGISTRY)
INGESTED = Counter("mapd_ingested", "Units ingested by this daemon: behavior sessions (created or extended), probes",
                   ["kind"], registry=REGISTRY)
DURATION = Histogram("mapd_ingest_duration_seconds", "Time to parse and ingest one unit (a behavior day, a probe)",
                     ["kind"], buckets=DURATION_BUCKETS, registry=REGISTRY)
RETRIES = Counter("mapd_retries", "Units postponed after a transient failure (share gone, file unreadable), "
                  "to be tried again", ["kind"], registry=REGISTRY)
# Set from the archive's state at each heartbeat (set_archive_bytes); 0 without archive.transport.
ARCHIVED = Gauge("mapd_archive_bytes_archived", "Bytes of raw files archived and verified", registry=REGISTRY)
FREED = Gauge("mapd_cleanup_bytes_freed", "Bytes freed on the data paths by cleanup after archival",
              registry=REGISTRY)

for _kind in ("behavior", "probe"):  # every series exists from the start: rate() and alerts need no first event
    INGESTED.labels(_kind)
    RETRIES.labels(_kind)
    DURATION.labels(_kind)


@dataclass
class MetricsServer:
    """The running endpoint (prometheus-client's WSGI server in its daemon thread)."""

    server: WSGIServer
    thread: Thread

    @property
    def port(self) -> int:
        return self.server.server_port

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(host: str, port: int) -> MetricsServer:
    """Serve the metrics at http://host:port/metrics; OSError if the address cannot be bound."""
    server, thread = start_http_server(port, addr=host, registry=REGISTRY)
    return MetricsServer(server, thread)


# ---- set by the daemon's main thread at each heartbeat ------------------------


def beat(database_ok: bool) -> None:
    HEARTBEAT.set(time.time())
    DATABASE_OK.set(1 if database_ok else 0)


def set_queue(counts: dict[str, dict[str, int]], oldest_waiting: dict[str, float]) -> None:
    """``counts``: kind -> state -> units (queue.state_counts); ``oldest_waiting``: kind -> seconds."""
    for kind, states in counts.items():
        for state, count in states.items():
            FILES.labels(kind, state).set(count)
        OLDEST_WAITING.labels(kind).set(oldest_waiting.get(kind, 0.0))


_shown_paths: set[tuple[str, str, str]] = set()


def set_paths(checks: list[PathHealth]) -> None:
    """Each data path's health; paths no longer configured disappear."""
    now = set()
    for check in checks:
        labels = (check.data_path.kind, check.data_path.rig or "", str(check.data_path.path))
        now.add(labels)
        for health in HEALTHS:
            PATH_HEALTH.labels(*labels, health).set(1 if check.health == health else 0)
    for labels in _shown_paths - now:
        for health in HEALTHS:
            PATH_HEALTH.remove(*labels, health)
    _shown_paths.clear()
    _shown_paths.update(now)


# ---- counted where the work happens -------------------------------------------


def ingested(kind: str, seconds: float) -> None:
    INGESTED.labels(kind).inc()
    DURATION.labels(kind).observe(seconds)


def retried(kind: str) -> None:
    RETRIES.labels(kind).inc()


def set_archive_bytes(archived: int, freed: int) -> None:
    """Totals of archival (bytes archived and verified) and cleanup (bytes deleted from the rigs)."""
    ARCHIVED.set(archived)
    FREED.set(freed)
