"""Structured logging for every waferstream process.

structlog renders JSON when stderr is not a TTY (production, CI, containers)
and a readable console otherwise. Correlation ids travel in Kafka headers and
are bound with :func:`bind_correlation` (contextvars), so every log line
written while an event is processed carries the id of the wafer event that
caused it, across services.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from infra.settings import ObservabilitySettings

_configured = False


def configure_logging(settings: ObservabilitySettings | None = None) -> None:
    """Configure structlog and the stdlib root logger once per process."""
    global _configured
    settings = settings or ObservabilitySettings()
    fmt = settings.log_format
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    level = logging.getLevelName(settings.log_level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # Resolve sys.stderr per logger, not once: a redirected stderr (test
        # capture, daemonising) must not leave loggers writing to a closed file.
        logger_factory=lambda *args: structlog.PrintLogger(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr, force=True)
    _configured = True


@contextmanager
def bind_correlation(**ids: str | int | None) -> Iterator[None]:
    """Bind correlation ids (event id, lot, wafer...) for the duration of a block."""
    clean = {k: v for k, v in ids.items() if v is not None}
    with structlog.contextvars.bound_contextvars(**clean):
        yield
