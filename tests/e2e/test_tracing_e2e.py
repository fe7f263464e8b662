"""The daemon, started with tracing on and the standard OTEL_* variables, exports
its spans over OTLP/HTTP (protobuf) to a collector this test runs (a real
listener that records what it is sent), and the backend gets a traceparent of
the same trace."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .support import Backend, post, queue_route, wait_for


class Collector:
    """POST /v1/traces: every span it is sent, with its resource's service name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Any]] = []
        self.content_types: set[str] = set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/traces", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        self.content_types.add(request.content_type)
        req = ExportTraceServiceRequest()
        req.ParseFromString(await request.read())
        for rs in req.resource_spans:
            service = next(
                a.value.string_value for a in rs.resource.attributes if a.key == "service.name"
            )
            for ss in rs.scope_spans:
                self.spans.extend((service, span) for span in ss.spans)
        return web.Response(status=200, content_type="application/x-protobuf")

    def named(self, prefix: str) -> list[Any]:
        return [span for _, span in self.spans if span.name.startswith(prefix)]


class Recording(Backend):
    """Records each request's traceparent."""

    def __init__(self) -> None:
        super().__init__()
        self.traceparents: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.traceparents.append(request.headers.get("traceparent", ""))
        return await super().handle(request)


async def traced(
    relays: Any, start_backend: Any, aiohttp_server: Any, **top: Any
) -> tuple[Collector, Recording, Any]:
    """A collector, a recording backend and a started relay with tracing on, exporting
    to the collector through the OTEL_* variables."""
    collector = Collector()
    server = await aiohttp_server(collector.app(), host="127.0.0.1")
    backend = Recording()
    await start_backend(backend)
    relay = relays([queue_route(backend, "orders")], tracing={"enabled": True}, **top)
    relay.extra_env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{server.port}",
        OTEL_SERVICE_NAME="relay-under-test",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    await relay.start()
    return collector, backend, relay


async def test_spans_reach_an_otlp_collector_and_the_backend_joins_the_trace(
    relays: Any, start_backend: Any, aiohttp_server: Any
) -> None:
    collector, backend, relay = await traced(relays, start_backend, aiohttp_server)
    async with aiohttp.ClientSession() as s:
        assert (await post(s, relay.url("/orders"), "k-1"))[0] == 202
        assert (await post(s, relay.url("/orders"), "k-1"))[0] == 202  # a duplicate
    await wait_for(lambda: len(collector.named("deliver")) == 1, 10, "the attempt span")
    await wait_for(lambda: len(collector.named("webhook")) == 2, 10, "both ingest spans")
    assert collector.content_types == {"application/x-protobuf"}
    assert {service for service, _ in collector.spans} == {"relay-under-test"}
    first, duplicate = sorted(collector.named("webhook"), key=lambda s: s.start_time_unix_nano)
    (attempt,) = collector.named("deliver")
    assert attempt.trace_id == first.trace_id and attempt.parent_span_id == first.span_id
    assert [link.span_id for link in duplicate.links] == [first.span_id]
    (sent,) = backend.traceparents
    assert sent.startswith(f"00-{attempt.trace_id.hex()}-{attempt.span_id.hex()}-")
    # Log lines written inside a span name it. The span is exported when it ends, which
    # can be before the line reaches the relay's stderr, so wait for the line.
    await wait_for(lambda: bool(relay.logged("delivery_succeeded")), 10, "the delivery's log line")
    (line,) = relay.logged("delivery_succeeded")
    assert (line["trace_id"], line["span_id"]) == (attempt.trace_id.hex(), attempt.span_id.hex())
    assert await relay.stop() == 0


async def test_with_workers_each_worker_exports_and_the_owner_serves_the_console(
    relays: Any, start_backend: Any, aiohttp_server: Any
) -> None:
    collector, _, relay = await traced(relays, start_backend, aiohttp_server, workers=2)
    keys = [f"w-{i}" for i in range(20)]
    async with aiohttp.ClientSession() as s:
        for key in keys:
            assert (await post(s, relay.url("/orders"), key))[0] == 202
        await wait_for(lambda: len(collector.named("deliver")) == len(keys), 15, "20 attempts")
        ingests = {span.span_id: span for span in collector.named("webhook")}
        assert len(ingests) == len(keys)
        for attempt in collector.named("deliver"):
            assert attempt.parent_span_id in ingests  # a child, whichever worker sent it
        # The owner's console reads the workers' counts and the shared store.
        async with s.get(relay.admin_url("/ui/")) as resp:
            assert resp.status == 200
            assert 'data-route="orders"' in await resp.text()
        async with s.get(relay.admin_url("/ui/events?route=orders&limit=50")) as resp:
            assert (await resp.text()).count('<tr data-id="') == len(keys)
    assert await relay.stop() == 0
