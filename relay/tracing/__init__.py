"""What the hot path asks of tracing, with no OpenTelemetry in it.

``Relay.tracing`` is None unless ``tracing.enabled``: then every call site is one
``is None`` test and nothing of OpenTelemetry is imported. Switched on, the app
loads ``relay.tracing.otel`` (the ``otel`` extra), which implements this protocol.

The ingest span is the current span while a webhook is handled, so what ingest
learns on the way (the key's source, a duplicate's original) is added to the
current span rather than passed down.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from contextlib import AbstractContextManager
from typing import Protocol

Attribute = str | int | float | bool


class ClientSpan(Protocol):
    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Add this span's ``traceparent`` (the backend joins the trace)."""

    def answered(self, status: int | None, error: str | None, outcome: str) -> None: ...


class Tracing(Protocol):
    def ingest(
        self, route: str, mode: str, method: str, headers: Mapping[str, str]
    ) -> AbstractContextManager[None]:
        """A SERVER span around one webhook, current while it is handled."""

    def note(self, attributes: Mapping[str, Attribute]) -> None:
        """Attributes on the current span."""

    def link(self, traceparent: str | None) -> None:
        """A link from the current span to another trace (a duplicate's original)."""

    def traceparent(self) -> str | None:
        """The current span's context, to store with the event."""

    def attempt(
        self, route: str, upstream: str, attempt: int, parent: str | None, **attributes: Attribute
    ) -> AbstractContextManager[ClientSpan]:
        """A CLIENT span around one attempt; ``parent`` a stored traceparent (None: the
        current span, as in sync mode)."""

    def shutdown(self) -> None:
        """Export what is buffered (blocking); at exit."""
