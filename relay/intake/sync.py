"""Sync (pass-through) mode: claim, forward now, store the final answer, replay it.

A 2xx or a final 4xx is stored and replayed to later duplicates. A 5xx, 408,
425, 429, timeout or connection error releases the claim, so the sender's own
retry is processed afresh. A duplicate that arrives while the original is in
flight waits (bounded) for the original's answer.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from relay import forward
from relay.errors import StoreUnavailable
from relay.intake.replies import (
    Reply,
    answer,
    kept,
    queue_ack,
    reject,
    replay,
)
from relay.intake.steps import counted_duplicate, mismatch, send_traced, shadowed, store_refused
from relay.metrics import status_class
from relay.retry import is_retryable_status
from relay.runtime import Relay, RouteRuntime
from relay.store.base import Acquired, Busy, Completed, NewEvent

# A duplicate whose original is held by another replica polls the store; it
# starts fast (the usual forward takes milliseconds) and backs off.
POLL_FIRST: Final = 0.02
POLL_MAX: Final = 0.5


@dataclass(frozen=True, slots=True)
class Answer:
    """What the original's sender got; duplicates that waited get the same."""

    status: int
    content_type: str | None
    body: bytes
    stored: bool  # final: kept in the store and replayable

    def response(self, replayed: bool) -> web.Response:
        return answer(self.status, self.content_type, self.body, replayed)


# Keys (route, key) this process is forwarding in sync mode, awaited by their
# duplicates. Sync's own: a route reloaded into another mode never reads them.
Waiters = dict[tuple[str, str], asyncio.Future[Answer]]


def _completed(rt: RouteRuntime, claim: Completed, event: NewEvent) -> Reply:
    """A duplicate of an answered key: the stored answer again; for an event the queue
    stored (the route was in queue mode then), the queue's duplicate ack."""
    if claim.response is None:
        return Reply(queue_ack(rt.cfg, claim.event_id, duplicate=True), "duplicate", event.key)
    return Reply(replay(claim.response), "replayed", event.key)


def _no_upstream_answer(result: forward.Result) -> Answer:
    status, reason = (
        (504, "upstream_timeout") if result.timed_out else (502, "upstream_unreachable")
    )
    body = json.dumps({"error": reason, "message": result.error or ""}).encode()
    return Answer(status, "application/json", body, stored=False)


async def handle_sync(
    relay: Relay, rt: RouteRuntime, event: NewEvent, via: forward.Via, waiters: Waiters
) -> Reply:
    cfg = rt.cfg
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cfg.sync.wait
    delay = POLL_FIRST
    while True:
        try:
            claim = await relay.store.claim_sync(event, cfg.sync.lease)
        except StoreUnavailable as exc:
            return store_refused(rt, exc, event.key, "could not claim the key")
        if isinstance(claim, Acquired):
            return await _forward(relay, rt, event, claim, via, waiters)
        if relay.tracing is not None:
            relay.tracing.link(claim.trace)  # a duplicate: to the first copy's trace
        if cfg.dedupe == "shadow":
            return await _pass_on(relay, rt, event, claim.fingerprint, via)
        if (refused := mismatch(relay, rt, event, claim.event_id, claim.fingerprint)) is not None:
            return refused
        if isinstance(claim, Completed):
            counted_duplicate(relay, rt, event)
            return _completed(rt, claim, event)
        # Busy: the original is in flight, here or on another replica.
        waited = await _wait(relay, rt, event, deadline, delay, waiters)
        if isinstance(waited, Reply):
            counted_duplicate(relay, rt, event)
            return waited
        if waited is None:
            relay.metrics.sync_waits.labels(cfg.name, "timeout").inc()
            return reject(
                409,
                "in_flight",
                "the original delivery of this key is still in flight",
                retry_after=cfg.sync.busy_retry_after,
            )
        delay = waited  # the key came free (released or lease expired): claim again


async def _pass_on(
    relay: Relay, rt: RouteRuntime, event: NewEvent, first_fingerprint: str, via: forward.Via
) -> Reply:
    """``dedupe: shadow``: a seen key is forwarded again and the backend's own answer
    returned, nothing stored; the first copy's claim and answer stay for enforcing."""
    shadowed(relay, rt, event, first_fingerprint)
    result = await send_traced(
        relay,
        rt,
        rt.upstream_headers(event.headers, event.key, via, event.body, rt.cfg.upstreams[0]),
        method=event.method,
        url=forward.upstream_url(rt.cfg.upstreams[0], event.query),
        body=event.body,
        timeout=rt.timeout,
        keep_body=True,
    )
    relay.metrics.attempt_seconds.labels(rt.cfg.name).observe(result.duration_ms / 1000.0)
    if result.status is None:
        return Reply(_no_upstream_answer(result).response(replayed=False), "released", event.key)
    answer = Answer(result.status, result.content_type, result.body, stored=False)
    return Reply(answer.response(replayed=False), "forwarded", event.key)


async def _wait(
    relay: Relay,
    rt: RouteRuntime,
    event: NewEvent,
    deadline: float,
    delay: float,
    waiters: Waiters,
) -> Reply | float | None:
    """A Reply once the original answered; a poll delay to claim again; None past the bound."""
    loop = asyncio.get_running_loop()
    ident = (rt.cfg.name, event.key)
    local = waiters.get(ident)
    if local is not None:
        try:
            answer: Answer = await asyncio.wait_for(
                asyncio.shield(local), max(0.0, deadline - loop.time())
            )
        except TimeoutError:
            return None
        except asyncio.CancelledError:
            if local.cancelled():  # the original's handler was cancelled, not us
                return delay
            raise
        relay.metrics.sync_waits.labels(rt.cfg.name, "answered").inc()
        return Reply(answer.response(replayed=answer.stored), "replayed", event.key)
    # Held elsewhere (another replica, or a crashed process whose lease will expire).
    while (remaining := deadline - loop.time()) > 0:
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, POLL_MAX)
        try:
            now = await relay.store.peek_sync(rt.cfg.name, event.key)
        except StoreUnavailable:
            continue
        if isinstance(now, Completed):
            relay.metrics.sync_waits.labels(rt.cfg.name, "answered").inc()
            return _completed(rt, now, event)
        if now is None or (isinstance(now, Busy) and now.lease_expires < relay.store.clock()):
            return delay
        if ident in waiters:  # the key is now forwarded by this process
            return POLL_FIRST
    return None


async def _forward(
    relay: Relay,
    rt: RouteRuntime,
    event: NewEvent,
    claim: Acquired,
    via: forward.Via,
    waiters: Waiters,
) -> Reply:
    cfg = rt.cfg
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[Answer] = loop.create_future()
    ident = (cfg.name, event.key)
    waiters[ident] = waiter
    if claim.taken_over:
        rt.log.warning("sync_lease_taken_over", key=event.key, event_id=claim.event_id)
    try:
        result = await send_traced(
            relay,
            rt,
            rt.upstream_headers(event.headers, event.key, via, event.body, rt.cfg.upstreams[0]),
            method=event.method,
            url=forward.upstream_url(cfg.upstreams[0], event.query),
            body=event.body,
            timeout=rt.timeout,
            keep_body=True,
        )
        answer = await _settle(relay, rt, claim, result)
        waiter.set_result(answer)
    finally:
        if not waiter.done():
            waiter.cancel()
            await _release(relay, rt, claim, event.key)
        if waiters.get(ident) is waiter:
            del waiters[ident]
    outcome = "forwarded" if answer.stored else "released"
    return Reply(answer.response(replayed=False), outcome, event.key)


async def _settle(
    relay: Relay, rt: RouteRuntime, claim: Acquired, result: forward.Result
) -> Answer:
    cfg = rt.cfg
    status = result.status
    relay.metrics.attempt_seconds.labels(cfg.name).observe(result.duration_ms / 1000.0)
    if status is None or is_retryable_status(status):
        # Not final: forget the claim so the sender's retry gets a fresh attempt.
        await _release(relay, rt, claim, None)
        relay.metrics.attempts.labels(cfg.name, "retry", status_class(status)).inc()
        if status is None:
            return _no_upstream_answer(result)
        return Answer(status, result.content_type, result.body, stored=False)
    stored = kept(result, cfg.sync.max_stored_body)
    try:
        if not await relay.store.complete_sync(claim.event_id, claim.token, stored):
            rt.log.warning("sync_lease_lost", event_id=claim.event_id)
    except StoreUnavailable as exc:
        # The upstream did answer: give the sender that answer; a duplicate may re-forward.
        rt.log.error("store_unavailable", event_id=claim.event_id, error=str(exc))
    relay.metrics.attempts.labels(
        cfg.name, "delivered" if status < 300 else "dead", status_class(status)
    ).inc()
    return Answer(status, result.content_type, result.body, stored=True)


async def _release(relay: Relay, rt: RouteRuntime, claim: Acquired, key: str | None) -> None:
    try:
        await relay.store.release_sync(claim.event_id, claim.token)
    except StoreUnavailable as exc:
        # The lease expires on its own; until then duplicates wait or get 409.
        rt.log.error("store_unavailable", event_id=claim.event_id, key=key, error=str(exc))
