# mapd in a container; see "Running in a container" in the README. Build: docker build -t mapd .
#   docker run --stop-timeout 45 -v /etc/mapd:/etc/mapd:ro -v mapd-state:/var/lib/mapd -v /mnt/rigs:/mnt/rigs:ro mapd
# The configuration's state_dir must be /var/lib/mapd (a volume: the embedded database lives there).
FROM python:3.11-slim-bookworm

# tini is PID 1: it forwards signals to mapd and reaps the processes that the
# embedded PostgreSQL leaves to PID 1 (mapd would leave them as zombies).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/*

# A fixed, numeric uid: files on the state volume keep one owner across rebuilds.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/mapd \
    --shell /usr/sbin/nologin mapd
WORKDIR /opt/mapd
COPY pyproject.toml README.md ./
COPY mapd ./mapd
RUN pip install --no-cache-dir . && rm -rf /opt/mapd

USER 10001:10001
WORKDIR /var/lib/mapd
VOLUME ["/var/lib/mapd"]
ENV PYTHONUNBUFFERED=1 MAPD_CONFIG=/etc/mapd/mapd.yaml
# mapd finishes or rolls back the ingest in progress on SIGTERM, within
# daemon.shutdown_timeout (30 s): run with --stop-timeout above that (Docker's default is 10 s).
STOPSIGNAL SIGTERM
# Healthy: this container's daemon has a recent heartbeat and all its data paths are usable.
# It reads state_dir/daemon.json only (no database, no DataJoint): cheap, and right while the database is down.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 CMD ["mapd", "status", "--check"]
ENTRYPOINT ["/usr/bin/tini", "--", "mapd"]
CMD ["run"]
