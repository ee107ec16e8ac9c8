"""Logging: structlog events, readable on a terminal, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from .config import LoggingConfig

SECRET_KEYS = frozenset({"password", "token", "secret", "client_secret", "refresh_token", "access_token"})


def _redact_secrets(_logger, _method, event: dict) -> dict:
    """Never let a secret reach a log line, whatever a caller passes."""
    for key in event.keys() & SECRET_KEYS:
        event[key] = "***"
    return event


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
        structlog.processors.TimeStamper(fmt="iso", utc=False),
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
    # DataJoint reports every connection and native type at INFO/WARNING: noise for mapd's users.
    logging.getLogger("datajoint").setLevel(logging.ERROR)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "mapd"):
    return structlog.get_logger(name)
