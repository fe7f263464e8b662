"""structlog set-up: JSON lines when not on a terminal, readable on one.

Events are stable snake_case names (``webhook_accepted``, ``delivery_failed``);
context such as the route is bound once and carried by the logger.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from aiohttp.http_exceptions import HttpProcessingError

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if console:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
    else:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # aiohttp and asyncio log through the stdlib; keep their warnings, route them to the same stream.
    logging.basicConfig(
        level=logging.WARNING, stream=stream, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiohttp.server").addFilter(drop_bad_requests)


def drop_bad_requests(record: logging.LogRecord) -> bool:
    """aiohttp logs every malformed request at ERROR with a traceback; on an
    internet-facing listener that is noise an attacker controls. The sender got its
    400; our own handler never raises, so real errors still get through."""
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, HttpProcessingError)


def get_logger(**context: Any) -> Any:
    # A lazy proxy: modules create loggers at import, before configure() runs.
    return structlog.get_logger("relay", **context)
