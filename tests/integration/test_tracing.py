"""Tracing over real sockets, spans caught by the OpenTelemetry SDK's in-memory
exporter: the ingest span of every mode, the attempt spans that are its children,
the traceparent the backend gets, a duplicate's link to its original, incoming
context ignored unless trusted, and trace ids in the log lines."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from relay import logging as relay_logging
from relay.tracing.otel import OtelTracing
from tests.integration.conftest import Backend, RelayFactory, eventually, route

SENDER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SENDER_SPAN = "00f067aa0ba902b7"
SENDER_TRACEPARENT = f"00-{SENDER_TRACE}-{SENDER_SPAN}-01"


class Spans:
    def __init__(self, trust_incoming: bool = False) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracing = OtelTracing(provider, trust_incoming)

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name.startswith(prefix)]


@pytest.fixture
def spans() -> Iterator[Spans]:
    made = Spans()
    yield made
    relay_logging.trace_ids = None


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    ctx = span.get_span_context()
    assert ctx is not None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def traceparents(upstream: Backend) -> list[str]:
    """Version, trace id and parent id of each request's traceparent (the flags vary)."""
    return [dict(s.headers).get("traceparent", "")[:52] for s in upstream.seen]


async def post(client: Any, key: str, path: str = "/hooks/orders", **headers: str) -> int:
    resp = await client.post(path, data=b'{"a": 1}', headers={"Idempotency-Key": key, **headers})
    return int(resp.status)


async def test_queue_attempts_are_children_of_the_ingest_span_and_the_backend_joins(
    make_relay: RelayFactory, upstream: Backend, spans: Spans
) -> None:
    async def busy_once(_request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=503 if n == 1 else 200)

    upstream.behaviour = busy_once
    public = await make_relay(
        route(upstream, retry={"initial": "10ms", "max": "10ms"}), tracing=spans.tracing
    )
    assert await post(public, "k1", **{"traceparent": SENDER_TRACEPARENT}) == 202

    async def two_attempts() -> bool:
        return len(spans.named("deliver")) == 2

    await eventually(two_attempts, "two attempt spans")
    (ingest,) = spans.named("webhook")
    assert ingest.kind is SpanKind.SERVER
    assert ingest.parent is None  # a sender's traceparent is not trusted by default
    trace_id, ingest_id = hex_ids(ingest)
    assert trace_id != SENDER_TRACE
    assert dict(ingest.attributes or {}) == {
        "relay.route": "orders",
        "relay.mode": "queue",
        "http.request.method": "POST",
        "relay.key_source": "header:Idempotency-Key",
        "relay.outcome": "accepted",
        "relay.duplicate": False,
        "http.response.status_code": 202,
    }
    first, second = sorted(spans.named("deliver"), key=lambda s: s.start_time or 0)
    for n, attempt in enumerate((first, second), 1):
        assert attempt.kind is SpanKind.CLIENT
        assert hex_ids(attempt)[0] == trace_id
        assert attempt.parent is not None and format(attempt.parent.span_id, "016x") == ingest_id
        assert (attempt.attributes or {})["relay.attempt"] == n
    assert (first.attributes or {})["http.response.status_code"] == 503
    assert (first.attributes or {})["relay.outcome"] == "pending"
    assert (second.attributes or {})["relay.outcome"] == "delivered"
    # Each attempt sends its own span as the parent: an instrumented backend joins.
    assert traceparents(upstream) == [
        f"00-{trace_id}-{hex_ids(first)[1]}",
        f"00-{trace_id}-{hex_ids(second)[1]}",
    ]


async def test_a_duplicate_links_to_its_original(
    make_relay: RelayFactory, upstream: Backend, spans: Spans
) -> None:
    public = await make_relay(route(upstream), tracing=spans.tracing)
    assert await post(public, "k1") == 202
    assert await post(public, "k1") == 202
    original, duplicate = sorted(spans.named("webhook"), key=lambda s: s.start_time or 0)
    assert (duplicate.attributes or {})["relay.duplicate"] is True
    assert (duplicate.attributes or {})["relay.outcome"] == "duplicate"
    (link,) = duplicate.links
    assert format(link.context.trace_id, "032x") == hex_ids(original)[0]
    assert format(link.context.span_id, "016x") == hex_ids(original)[1]
    assert hex_ids(duplicate)[0] != hex_ids(original)[0]  # a trace of its own


async def test_sync_mode_forward_is_a_child_and_a_replayed_duplicate_links(
    make_relay: RelayFactory, upstream: Backend, spans: Spans
) -> None:
    public = await make_relay(route(upstream, "pay", mode="sync"), tracing=spans.tracing)
    assert await post(public, "s1", "/hooks/pay") == 200
    assert await post(public, "s1", "/hooks/pay") == 200  # replayed from the store
    original, duplicate = sorted(spans.named("webhook"), key=lambda s: s.start_time or 0)
    (attempt,) = spans.named("deliver")
    assert attempt.parent is not None
    assert format(attempt.parent.span_id, "016x") == hex_ids(original)[1]
    assert traceparents(upstream) == [f"00-{hex_ids(original)[0]}-{hex_ids(attempt)[1]}"]
    assert (duplicate.attributes or {})["relay.outcome"] == "replayed"
    assert [format(link.context.span_id, "016x") for link in duplicate.links] == [
        hex_ids(original)[1]
    ]


async def test_a_trusted_sender_context_is_the_parent(
    make_relay: RelayFactory, upstream: Backend
) -> None:
    trusting = Spans(trust_incoming=True)
    try:
        public = await make_relay(route(upstream), tracing=trusting.tracing)
        assert await post(public, "k1", **{"traceparent": SENDER_TRACEPARENT}) == 202
        (ingest,) = trusting.named("webhook")
        assert hex_ids(ingest)[0] == SENDER_TRACE
        assert ingest.parent is not None
        assert format(ingest.parent.span_id, "016x") == SENDER_SPAN
    finally:
        relay_logging.trace_ids = None


async def test_rejected_webhooks_are_traced_with_their_reason(
    make_relay: RelayFactory, upstream: Backend, spans: Spans
) -> None:
    public = await make_relay(
        route(upstream, idempotency={"key": ["header:X-Id"], "require_key": True}),
        tracing=spans.tracing,
    )
    resp = await public.post("/hooks/orders", data=b"{}")
    assert resp.status == 400
    (ingest,) = spans.named("webhook")
    attributes = dict(ingest.attributes or {})
    assert (attributes["relay.outcome"], attributes["relay.reason"]) == ("rejected", "missing_key")
    assert attributes["http.response.status_code"] == 400


def test_log_lines_inside_a_span_name_it(spans: Spans) -> None:
    out = io.StringIO()
    relay_logging.configure(level="info", fmt="json", stream=out)
    log = relay_logging.get_logger()
    try:
        with spans.tracing.ingest("orders", "queue", "POST", {}):
            log.info("inside")
            ids = (spans.tracing.traceparent() or "").split("-")[1:3]
        log.info("outside")
        relay_logging.flush()
    finally:
        relay_logging.configure(level="info", fmt="json")
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines()[-2:])
    assert [inside["trace_id"], inside["span_id"]] == ids
    assert "trace_id" not in outside and "span_id" not in outside
