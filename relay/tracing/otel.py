"""Tracing with OpenTelemetry (the ``otel`` extra), behind ``relay.tracing.Tracing``.

Configured as OpenTelemetry programs are, by the OTEL_* variables: the exporter
(``OTEL_TRACES_EXPORTER``: otlp, the default, over HTTP/protobuf to
``OTEL_EXPORTER_OTLP_ENDPOINT``; console; none), the sampler
(``OTEL_TRACES_SAMPLER``), the service name (``OTEL_SERVICE_NAME``, default
webhook-relay) and the batch processor (``OTEL_BSP_*``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from relay import __version__
from relay import logging as relay_logging
from relay.config import TracingConfig
from relay.errors import ConfigError
from relay.forward import shown_url
from relay.tracing import Attribute

_PROPAGATOR = TraceContextTextMapPropagator()


def from_environment(cfg: TracingConfig) -> OtelTracing:
    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME", "webhook-relay"),
            "service.version": __version__,
        }
    )
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    elif exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter != "none":
        raise ConfigError(
            [f"OTEL_TRACES_EXPORTER: expected otlp, console or none, got {exporter!r}"]
        )
    return OtelTracing(provider, cfg.trust_incoming)


def _context_of(traceparent: str | None) -> otel_context.Context | None:
    if not traceparent:
        return None
    return _PROPAGATOR.extract({"traceparent": traceparent})


class _Client:
    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def inject(self, headers: MutableMapping[str, str]) -> None:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(self.span))
        headers.update(carrier)

    def answered(self, status: int | None, error: str | None, outcome: str) -> None:
        if status is not None:
            self.span.set_attribute("http.response.status_code", status)
        self.span.set_attribute("relay.outcome", outcome)
        if error is not None:
            self.span.set_attribute("error.type", error.split(":")[0])
            self.span.set_status(Status(StatusCode.ERROR, error))
        elif status is not None and status >= 500:
            self.span.set_status(Status(StatusCode.ERROR))


class OtelTracing:
    def __init__(self, provider: TracerProvider, trust_incoming: bool) -> None:
        self.provider = provider
        self.trust_incoming = trust_incoming
        self.tracer = provider.get_tracer("webhook-relay", __version__)
        relay_logging.trace_ids = _current_ids  # every log line in a span names it

    @contextmanager
    def ingest(
        self, route: str, mode: str, method: str, headers: Mapping[str, str]
    ) -> Iterator[None]:
        # A stranger's traceparent would let it pick our trace ids: a new trace
        # unless the senders are trusted.
        parent = _PROPAGATOR.extract(headers) if self.trust_incoming else otel_context.Context()
        attributes: dict[str, Any] = {
            "relay.route": route,
            "relay.mode": mode,
            "http.request.method": method,
        }
        with self.tracer.start_as_current_span(
            f"webhook {route}", context=parent, kind=SpanKind.SERVER, attributes=attributes
        ):
            yield

    def note(self, attributes: Mapping[str, Attribute]) -> None:
        trace.get_current_span().set_attributes(attributes)

    def link(self, traceparent: str | None) -> None:
        ctx = _context_of(traceparent)
        if ctx is not None:
            original = trace.get_current_span(ctx).get_span_context()
            if original.is_valid:
                trace.get_current_span().add_link(original, {"relay.link": "original"})

    def traceparent(self) -> str | None:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier.get("traceparent")

    @contextmanager
    def attempt(
        self, route: str, upstream: str, attempt: int, parent: str | None, **attributes: Attribute
    ) -> Iterator[_Client]:
        attrs: dict[str, Any] = {
            "relay.route": route,
            "relay.attempt": attempt,
            "url.full": shown_url(upstream),
            **attributes,
        }
        with self.tracer.start_as_current_span(
            f"deliver {route}", context=_context_of(parent), kind=SpanKind.CLIENT, attributes=attrs
        ) as span:
            yield _Client(span)

    def shutdown(self) -> None:
        relay_logging.trace_ids = None
        self.provider.shutdown()


def _current_ids() -> tuple[str, str] | None:
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
