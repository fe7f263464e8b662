"""Steps the three modes share: store an event, absorb a duplicate, shadow a copy,
send in line under a span."""

from __future__ import annotations

import dataclasses
from typing import Any

from multidict import CIMultiDict

from relay import forward
from relay.errors import StoreFull, StoreUnavailable
from relay.forward import Result
from relay.intake.replies import STORE_FULL_RETRY_AFTER, STORE_RETRY_AFTER, Reply, queue_ack, reject
from relay.runtime import SHADOW_COPY, Relay, RouteRuntime
from relay.store.base import Ingested, NewEvent, new_token


def mismatch(
    relay: Relay, rt: RouteRuntime, event: NewEvent, event_id: int, stored: str
) -> Reply | None:
    """A copy whose body differs from the first one's (``stored`` fingerprint): counted
    and logged; refused (422) when the route says ``on_payload_mismatch: reject``, else
    None (a duplicate)."""
    if stored == event.fingerprint:
        return None
    relay.metrics.mismatches.labels(rt.cfg.name).inc()
    rt.log.warning("payload_mismatch", key=event.key, event_id=event_id)
    if rt.cfg.on_payload_mismatch == "reject":
        return reject(422, "payload_mismatch", "this key was used with a different body")
    return None


def shadowed(relay: Relay, rt: RouteRuntime, event: NewEvent, stored: str) -> None:
    """``dedupe: shadow`` let a copy through: count what enforcing would have done."""
    source = event.key_source.partition(":")[0]
    relay.metrics.shadow_duplicates.labels(rt.cfg.name, source).inc()
    if stored != event.fingerprint:
        relay.metrics.shadow_mismatches.labels(rt.cfg.name).inc()


def counted_duplicate(relay: Relay, rt: RouteRuntime, event: NewEvent) -> None:
    """A copy absorbed (acked again or replayed), counted by the kind of key that caught it."""
    rt.duplicates(relay.metrics, event.key_source.partition(":")[0]).inc()


def absorbed(relay: Relay, rt: RouteRuntime, event: NewEvent, got: Ingested) -> Reply | None:
    """A queued key seen before: the 422 of a refused mismatch, else None, counted as a
    duplicate."""
    if refused := mismatch(relay, rt, event, got.event_id, got.stored_fingerprint):
        return refused
    counted_duplicate(relay, rt, event)
    return None


def duplicate_ack(relay: Relay, rt: RouteRuntime, event: NewEvent, got: Ingested) -> Reply:
    """The queue's answer to a duplicate; dead deliveries it revived go out now."""
    if got.revived:
        rt.log.info("event_revived", key=event.key, event_id=got.event_id, deliveries=got.revived)
        relay.outbound.wake(rt.cfg.name)
    return Reply(queue_ack(rt.cfg, got.event_id, duplicate=True), "duplicate", event.key)


def shadow_copy(event: NewEvent) -> NewEvent:
    """``dedupe: shadow``: a copy of a seen key, under a key of its own, so it is stored
    and delivered while the key stays claimed by its first copy."""
    return dataclasses.replace(event, key=f"{event.key}{SHADOW_COPY}{new_token()[:16]}")


def store_refused(rt: RouteRuntime, exc: StoreUnavailable, key: str, doing: str) -> Reply:
    """503 for a webhook the store could not take: at its cap (``store_full``, with the
    cap's reason), or unavailable."""
    if isinstance(exc, StoreFull):
        rt.log.error("store_full", key=key, error=str(exc))
        return reject(503, "store_full", str(exc), STORE_FULL_RETRY_AFTER)
    rt.log.error("store_unavailable", key=key, error=str(exc))
    return reject(503, "store_unavailable", doing, STORE_RETRY_AFTER)


async def store_event(relay: Relay, rt: RouteRuntime, event: NewEvent) -> Ingested | Reply:
    """Claim and commit a queued event, counted in the backlog; a 503 (the sender keeps
    it) when the store cannot commit."""
    try:
        got = await relay.store.ingest(event)
    except StoreUnavailable as exc:
        return store_refused(rt, exc, event.key, "could not store the event")
    if event.filtered is None:  # a dropped event is no work for the backlog
        relay.backlog.ingested(rt.cfg.name, got)
    if relay.tracing is not None and not got.first:
        relay.tracing.link(got.stored_trace)  # to the first copy's trace
    return got


async def send_traced(
    relay: Relay, rt: RouteRuntime, headers: CIMultiDict[str], **send: Any
) -> Result:
    """``forward.send`` in line (sync mode), a CLIENT span of the ingest span when tracing."""
    assert relay.session is not None
    send["target"] = rt.target(rt.cfg.upstreams[0])
    if relay.tracing is None:
        return await forward.send(relay.session, headers=headers, **send)
    with relay.tracing.attempt(rt.cfg.name, rt.cfg.upstreams[0], 1, None) as span:
        span.inject(headers)
        result = await forward.send(relay.session, headers=headers, **send)
        span.answered(result.status, result.error, "answered")
        return result
