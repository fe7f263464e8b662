"""structlog set-up: JSON lines when not on a terminal, readable on one.

Events are stable snake_case names (``webhook_accepted``, ``delivery_failed``);
context such as the route is bound once and carried by the logger.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, TextIO

import structlog
from aiohttp.http_exceptions import HttpProcessingError

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


# Info lines are written in bursts: one write(2) per line cost as much as the rest
# of a webhook's logging. Warnings and errors go out at once.
FLUSH_INTERVAL: Final = 0.05
FLUSH_LINES: Final = 256


class _Sink:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lines: list[str] = []
        self.scheduled = False

    def write(self, line: str, now: bool) -> None:
        self.lines.append(line)
        if now or len(self.lines) >= FLUSH_LINES:
            self.flush()
        elif not self.scheduled:
            try:
                asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self.flush)
                self.scheduled = True
            except RuntimeError:  # no event loop (start-up, CLI): write at once
                self.flush()

    def flush(self) -> None:
        self.scheduled = False
        if self.lines:
            lines, self.lines = self.lines, []
            with contextlib.suppress(OSError, ValueError):
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()


class BufferedLogger:
    """structlog's logger protocol over a shared sink."""

    def __init__(self, sink: _Sink) -> None:
        self._sink = sink

    def msg(self, message: str) -> None:
        self._sink.write(message, now=False)

    def urgent(self, message: str) -> None:
        self._sink.write(message, now=True)

    debug = info = log = msg
    warn = warning = error = err = critical = exception = fatal = failure = urgent


_sink: _Sink | None = None
# Set by relay.tracing.otel while tracing: the current span's (trace_id, span_id), if any.
trace_ids: Callable[[], tuple[str, str] | None] | None = None


# Fields every line of this process carries (a worker's index), set once at start.
_process_fields: dict[str, Any] = {}


def bind_process(**fields: Any) -> None:
    """Add ``fields`` to every line this process writes from now on."""
    _process_fields.update(fields)


def _add_process_fields(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    for name, value in _process_fields.items():
        event.setdefault(name, value)
    return event


def _add_trace_ids(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    if trace_ids is not None and (ids := trace_ids()) is not None:
        event["trace_id"], event["span_id"] = ids
    return event


def _fallback(value: Any) -> Any:
    """What JSON cannot hold, as structlog's renderer writes it."""
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


class _JSONLine:
    """Level, process fields, trace ids, timestamp and the JSON text in one step.

    It writes what structlog's processor chain wrote (the same keys in the same
    order), at a fraction of the cost: a webhook's line was a tenth of its CPU.
    The timestamp's date and time are formatted once a second.
    """

    def __init__(self) -> None:
        self._encode = json.JSONEncoder(default=_fallback).encode
        self._second = -1
        self._prefix = ""

    def _stamp(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"

    def __call__(self, logger: Any, method: str, event: dict[str, Any]) -> str:
        for name, value in _process_fields.items():
            event.setdefault(name, value)
        event["level"] = (
            "warning" if method == "warn" else "error" if method == "exception" else method
        )
        if trace_ids is not None and (ids := trace_ids()) is not None:
            event["trace_id"], event["span_id"] = ids
        event["timestamp"] = self._stamp()
        if "exc_info" in event:
            return self._encode(structlog.processors.format_exc_info(logger, method, event))
        return self._encode(event)


def flush() -> None:
    """Write out buffered lines (shutdown, tests)."""
    if _sink is not None:
        _sink.flush()


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    global _sink
    stream = stream or sys.stderr
    flush()
    sink = _sink = _Sink(stream)
    atexit.register(sink.flush)
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    processors: list[Any] = [_JSONLine()]
    if console:
        processors = [
            _add_process_fields,
            structlog.processors.add_log_level,
            _add_trace_ids,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.dev.ConsoleRenderer(colors=False),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *_args: BufferedLogger(sink),
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
