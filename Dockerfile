# mapd in a container: `docker build -t mapd .` then
#   docker run -v /etc/mapd:/etc/mapd:ro -v mapd-state:/var/lib/mapd -v /mnt/rigs:/mnt/rigs:ro mapd
# The configuration's state_dir must be /var/lib/mapd (a volume: the embedded database lives there).
FROM python:3.11-slim

RUN useradd --system --create-home --home-dir /var/lib/mapd --shell /usr/sbin/nologin mapd
WORKDIR /opt/mapd
COPY pyproject.toml README.md ./
COPY mapd ./mapd
RUN pip install --no-cache-dir . && rm -rf /opt/mapd

USER mapd
VOLUME ["/var/lib/mapd"]
ENTRYPOINT ["mapd", "--config", "/etc/mapd/mapd.yaml"]
CMD ["run"]
