"""/metrics after real traffic, parsed with prometheus-client's own parser: values, not names."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from relay.errors import StoreUnavailable
from relay.metrics import Metrics
from relay.serve import OWN_STORE
from relay.store.batch import BatchStats, GroupCommitter
from tests.conftest import FakeClock
from tests.integration.conftest import Backend, RelayFactory, dispatcher_of, eventually, route

Client = TestClient[web.Request, web.Application]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
WAIT = 10.0


class Scrape:
    """One parsed exposition: look samples up by name and labels."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: Samples = {}
        for family in self.families.values():
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def __call__(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        assert key in self.samples, f"no sample {name}{labels}; have {self.names(name)}"
        return self.samples[key]

    def names(self, prefix: str) -> list[str]:
        return sorted(f"{n}{dict(ls)}" for n, ls in self.samples if n.startswith(prefix))

    def total(self, name: str, **labels: str) -> float:
        """Sum over every sample of ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and want <= ls)


async def scrape(admin: Client) -> Scrape:
    resp = await admin.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    return Scrape(await resp.text())


async def test_a_short_run_with_duplicates_a_mismatch_and_a_dead_letter(
    upstream: Backend, make_relay: RelayFactory, make_admin: Callable[[Client], Awaitable[Client]]
) -> None:
    async def behaviour(request: web.Request, _n: int) -> web.StreamResponse:
        return web.Response(status=410 if request.headers["Idempotency-Key"] == "bad" else 200)

    upstream.behaviour = behaviour
    secret = "gh-secret"
    public = await make_relay(
        route(upstream, "orders"),
        route(upstream, "github", preset="github", verify={"secret_env": "GH"}),
        route(upstream, "quiet"),
        env={"GH": secret},
    )
    admin = await make_admin(public)
    store = public.app[OWN_STORE]

    async def post(path: str, key: str, body: bytes, **headers: str) -> int:
        resp = await public.post(path, data=body, headers={"Idempotency-Key": key, **headers})
        return resp.status

    # 3 accepted (one of them goes dead), 2 duplicates (one with another body).
    for key in ("k1", "k2", "bad"):
        assert await post("/hooks/orders", key, b'{"a": 1}') == 202
    assert await post("/hooks/orders", "k1", b'{"a": 1}') == 202
    assert await post("/hooks/orders", "k2", b'{"a": 2}') == 202
    # A forged GitHub delivery, and a genuine one.
    gh_body = b'{"zen": "ok"}'
    good = "sha256=" + hmac.new(secret.encode(), gh_body, hashlib.sha256).hexdigest()
    assert (
        await post("/hooks/github", "x", gh_body, **{"X-Hub-Signature-256": "sha256=" + "0" * 64})
        == 401
    )
    assert (
        await post(
            "/hooks/github",
            "",
            gh_body,
            **{"X-GitHub-Delivery": "d-1", "X-Hub-Signature-256": good},
        )
        == 202
    )
    await upstream.wait_for(4)

    async def settled() -> bool:
        backlog = await store.backlog()
        return (
            "orders" in backlog
            and backlog["orders"].dead == 1
            and not any(b.pending or b.in_flight for b in backlog.values())
        )

    await eventually(settled, "one dead letter and nothing open")
    m = await scrape(admin)

    assert m("relay_webhooks_received_total", route="orders", outcome="accepted") == 3
    assert m("relay_webhooks_received_total", route="orders", outcome="duplicate") == 2
    assert m("relay_duplicates_total", route="orders", source="header") == 2
    assert m("relay_payload_mismatches_total", route="orders") == 1
    assert m("relay_webhooks_received_total", route="github", outcome="accepted") == 1
    assert m("relay_webhooks_received_total", route="github", outcome="rejected") == 1
    assert m("relay_webhooks_rejected_total", route="github", reason="bad_signature") == 1
    assert m.total("relay_signature_failures_total", route="github") == 1
    assert m.total("relay_signature_failures_total", route="orders") == 0

    assert (
        m("relay_delivery_attempts_total", route="orders", result="delivered", status_class="2xx")
        == 2
    )
    assert (
        m("relay_delivery_attempts_total", route="orders", result="dead", status_class="4xx") == 1
    )
    assert m.total("relay_delivery_attempts_total", route="orders", result="retry") == 0
    assert m("relay_delivery_attempt_duration_seconds_count", route="orders") == 3
    assert m("relay_delivery_attempt_duration_seconds_sum", route="orders") > 0
    assert m("relay_ingest_duration_seconds_count", route="orders", mode="queue") == 5
    assert m("relay_ingest_duration_seconds_bucket", route="orders", mode="queue", le="+Inf") == 5

    assert m("relay_events", route="orders", state="dead") == 1
    assert m("relay_events", route="orders", state="pending") == 0
    assert m("relay_events", route="orders", state="in_flight") == 0
    assert m("relay_events", route="quiet", state="pending") == 0  # configured, no traffic
    assert m("relay_oldest_pending_age_seconds", route="orders") == 0

    # Group commit: every ingest (firsts and duplicates, 6 in all) went through a batch.
    stats = store.stats  # type: ignore[attr-defined]
    assert stats.rows == 6
    assert m("relay_store_batch_size_sum") == 6
    assert m("relay_store_batch_size_count") == stats.batches
    assert m("relay_store_commit_duration_seconds_count") == stats.batches
    assert m("relay_store_commit_duration_seconds_sum") == pytest.approx(stats.commit_seconds)
    assert m("relay_store_commit_failures_total") == 0
    assert m("relay_build_info", version=__import__("relay").__version__) == 1


async def test_backlog_gauges_count_open_work_and_the_oldest_pending_age(
    upstream: Backend,
    make_relay: RelayFactory,
    make_admin: Callable[[Client], Awaitable[Client]],
    now_clock: Any,
) -> None:
    # No dispatcher runs: stored events stay pending until the test leases them.
    public = await make_relay(
        route(upstream, "orders"), route(upstream, "other"), start_dispatcher=False
    )
    admin = await make_admin(public)
    store = public.app[OWN_STORE]
    m = await scrape(admin)
    assert m("relay_events", route="orders", state="pending") == 0
    assert m("relay_oldest_pending_age_seconds", route="orders") == 0

    for key in ("a", "b"):
        assert (await public.post("/hooks/orders", headers={"Idempotency-Key": key})).status == 202
    now_clock.advance(100)
    assert (await public.post("/hooks/orders", headers={"Idempotency-Key": "c"})).status == 202
    assert (await public.post("/hooks/other", headers={"Idempotency-Key": "d"})).status == 202

    m = await scrape(admin)
    assert m("relay_events", route="orders", state="pending") == 3
    assert m("relay_events", route="other", state="pending") == 1
    assert 100 <= m("relay_oldest_pending_age_seconds", route="orders") < 130
    assert m("relay_oldest_pending_age_seconds", route="other") < 30

    assert len(await store.lease_due("orders", upstream.url("/orders"), 1, 60)) == 1
    m = await scrape(admin)
    assert m("relay_events", route="orders", state="pending") == 2
    assert m("relay_events", route="orders", state="in_flight") == 1
    assert 100 <= m("relay_oldest_pending_age_seconds", route="orders") < 130  # in flight: open


def test_names_follow_prometheus_conventions() -> None:
    m = Metrics()
    m.received.labels("r", "accepted").inc()
    m.attempts.labels("r", "delivered", "2xx").inc()
    m.attempt_seconds.labels("r").observe(0.1)
    families = list(text_string_to_metric_families(_exposition(m)))
    assert families
    for f in families:
        assert f.name.startswith("relay_"), f.name
        assert f.documentation, f.name
        assert f.name == f.name.lower()
        for s in f.samples:
            assert not s.name.endswith("_created"), s.name
        if f.type == "counter":
            assert all(s.name.endswith("_total") for s in f.samples), f.name
        if f.type == "histogram" and "duration" in f.name:
            assert f.name.endswith("_seconds"), f.name
        if f.type == "gauge" and "age" in f.name:
            assert f.name.endswith("_seconds"), f.name


def _exposition(m: Metrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(m.registry).decode()


async def test_commit_observer_counts_batches_and_failures() -> None:
    metrics = Metrics()
    stats = BatchStats()

    class Holder:
        def __init__(self) -> None:
            self.stats = stats

    metrics.bind_store(Holder())
    fail = True

    async def commit(items: Sequence[int]) -> list[int]:
        await asyncio.sleep(0)
        if fail:
            raise OSError("disk full")
        return [i * 2 for i in items]

    batcher: GroupCommitter[int, int] = GroupCommitter(
        commit,
        max_batch=8,
        on_error=lambda exc: StoreUnavailable(str(exc)),
        closed_error=StoreUnavailable,
        stats=stats,
    )
    with pytest.raises(StoreUnavailable):
        await batcher.submit(1)
    fail = False
    assert await asyncio.gather(*(batcher.submit(i) for i in range(5))) == [0, 2, 4, 6, 8]
    await batcher.close()
    m = Scrape(_exposition(metrics))
    assert m("relay_store_commit_failures_total") == 1
    assert m("relay_store_batch_size_sum") == 5 == stats.rows
    assert m("relay_store_batch_size_count") == stats.batches
    assert m("relay_store_commit_duration_seconds_count") == stats.batches


def test_each_metrics_object_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.received.labels("r", "accepted").inc(3)
    assert (
        Scrape(_exposition(a))("relay_webhooks_received_total", route="r", outcome="accepted") == 3
    )
    assert Scrape(_exposition(b)).total("relay_webhooks_received_total") == 0


async def test_delivery_lag_from_acceptance_to_first_attempt_and_delivery(
    upstream: Backend,
    make_relay: RelayFactory,
    make_admin: Callable[[Client], Awaitable[Client]],
    now_clock: FakeClock,
) -> None:
    async def busy_once(_request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=503 if n == 1 else 200)

    upstream.behaviour = busy_once
    public = await make_relay(route(upstream), start_dispatcher=False)
    admin = await make_admin(public)
    resp = await public.post("/hooks/orders", data=b"{}", headers={"Idempotency-Key": "k1"})
    assert resp.status == 202
    now_clock.advance(120)  # the backlog waited two minutes
    dispatcher = dispatcher_of(public)
    dispatcher.rand = lambda: 0.0
    assert await dispatcher.burst() == 1  # 503: retried later
    now_clock.advance(3600)
    assert await dispatcher.burst() == 1
    m = await scrape(admin)
    first = {"route": "orders", "to": "first_attempt"}
    assert m("relay_delivery_lag_seconds_count", **first) == 1
    assert m("relay_delivery_lag_seconds_bucket", **first, le="60.0") == 0
    assert m("relay_delivery_lag_seconds_bucket", **first, le="300.0") == 1
    done = {"route": "orders", "to": "delivered"}
    assert m("relay_delivery_lag_seconds_count", **done) == 1
    assert m("relay_delivery_lag_seconds_bucket", **done, le="3600.0") == 0
    assert m("relay_delivery_lag_seconds_bucket", **done, le="7200.0") == 1


async def test_every_labelled_counter_is_there_at_zero_before_the_first_event(
    upstream: Backend, make_relay: RelayFactory, make_admin: Callable[[Client], Awaitable[Client]]
) -> None:
    public = await make_relay(
        route(upstream, "orders"),
        route(upstream, "github", preset="github", verify={"secret_env": "GH"}, mode="sync"),
        route(
            upstream,
            "shadowed",
            dedupe="shadow",
            ordering={"key": "json:$.account"},
            stale={"version": "json:$.version"},
        ),
        env={"GH": "gh-secret"},
    )
    m = await scrape(await make_admin(public))
    # The first mismatch after a start is an increase from 0, not a series born at 1.
    for name in ("orders", "github", "shadowed"):
        assert m("relay_payload_mismatches_total", route=name) == 0
        assert m("relay_duplicates_total", route=name, source="sha256") == 0
        assert m("relay_webhooks_received_total", route=name, outcome="rejected") == 0
    assert m("relay_duplicates_total", route="orders", source="header") == 0
    assert m("relay_webhooks_received_total", route="orders", outcome="accepted") == 0
    assert m("relay_webhooks_received_total", route="github", outcome="forwarded") == 0
    assert m("relay_signature_failures_total", route="github", reason="signature_mismatch") == 0
    assert m("relay_webhooks_rejected_total", route="github", reason="bad_signature") == 0
    assert m("relay_webhooks_rejected_total", route="orders", reason="backpressure") == 0
    for result, status in (("delivered", "2xx"), ("retry", "5xx"), ("retry", "error")):
        attempts = m(
            "relay_delivery_attempts_total", route="orders", result=result, status_class=status
        )
        assert attempts == 0
    up = upstream.url("/orders")
    for to in ("open", "half_open", "closed"):
        assert (
            m("relay_upstream_breaker_transitions_total", route="orders", upstream=up, to=to) == 0
        )
    assert m("relay_shadow_duplicates_total", route="shadowed", key_source="sha256") == 0
    assert m("relay_shadow_mismatches_total", route="shadowed") == 0
    assert m("relay_deliveries_stale_total", route="shadowed", action="drop") == 0
    assert m("relay_ordering_dead_heads_total", route="shadowed", on_dead="skip") == 0
    # Sync mode delivers nothing later: no queue-delivery series for it.
    labelled = [dict(ls) for n, ls in m.samples if n == "relay_delivery_attempts_total"]
    assert {a["route"] for a in labelled} == {"orders", "shadowed"}
