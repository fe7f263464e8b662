"""Hybrid mode: commit first, as the queue does, then forward at once.

The sender gets the backend's answer (status, content type, body) when it is
final (a 2xx or a non-retryable 4xx) and comes within ``hybrid.wait``, and
later duplicates get it replayed. A backend that is slow, unreachable or
answers retryably gets the event from the queue: the sender has the queue's
ack (202) by the time ``wait`` runs out or the failure comes back, and an
attempt still in flight then is not abandoned: it runs to its own timeout and
its outcome is recorded. The sender never gets a 5xx for a committed event.
"""

from __future__ import annotations

import asyncio
from typing import Any

from relay.errors import StoreUnavailable
from relay.forward import Result
from relay.intake.replies import Reply, answer, kept, queue_ack, replay
from relay.intake.steps import absorbed, duplicate_ack, shadow_copy, shadowed, store_event
from relay.retry import is_retryable_status
from relay.runtime import InlineAttempt, Relay, RouteRuntime
from relay.store.base import Ingested, NewEvent, StoredResponse

# Keys (route, key) this process is answering in hybrid mode, awaited by their
# duplicates: the answer kept for them, or None (they get the queue's ack).
# Hybrid's own: a route reloaded into another mode never reads them.
Waiters = dict[tuple[str, str], asyncio.Future[StoredResponse | None]]


async def handle_hybrid(relay: Relay, rt: RouteRuntime, event: NewEvent, waiters: Waiters) -> Reply:
    cfg = rt.cfg
    if isinstance(got := await store_event(relay, rt, event), Reply):
        return got
    if not got.first and cfg.dedupe == "shadow":
        # Shadow: this copy goes out in line too, under a key of its own.
        shadowed(relay, rt, event, got.stored_fingerprint)
        event = shadow_copy(event)
        if isinstance(got := await store_event(relay, rt, event), Reply):
            return got
    if not got.first:
        return await _duplicate(relay, rt, event, got, waiters)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cfg.hybrid.wait
    # Duplicates arriving meanwhile wait on this (bounded) for the same answer.
    waiter: asyncio.Future[StoredResponse | None] = loop.create_future()
    ident = (cfg.name, event.key)
    waiters[ident] = waiter
    try:
        inline = await relay.outbound.deliver_now(cfg.name, event.upstreams[0], got.event_id)
        if inline is None:
            relay.outbound.wake(cfg.name)  # it could not go now: the queue takes it
            result = None
        else:
            result = await _final_answer(inline, deadline - loop.time())
        if result is None:
            waiter.set_result(None)
            return Reply(queue_ack(cfg, got.event_id, duplicate=False), "accepted", event.key)
        stored = kept(result, cfg.sync.max_stored_body)
        try:
            await relay.store.store_answer(got.event_id, stored)
        except StoreUnavailable as exc:
            # The backend has the event; a duplicate then gets the queue's ack instead.
            rt.log.error("store_unavailable", event_id=got.event_id, error=str(exc))
        waiter.set_result(stored)
        response = answer(result.status or 502, result.content_type, result.body, replayed=False)
        return Reply(response, "answered", event.key)
    finally:
        if not waiter.done():
            waiter.set_result(None)
        if waiters.get(ident) is waiter:
            del waiters[ident]


async def _final_answer(inline: InlineAttempt, wait: float) -> Result | None:
    """The upstream's answer if it is final and comes within ``wait``."""
    waits: list[asyncio.Future[Any]] = [inline.answer, inline.task]
    await asyncio.wait(waits, timeout=max(0.0, wait), return_when=asyncio.FIRST_COMPLETED)
    if not inline.answer.done() or inline.answer.cancelled():
        return None  # still on the wire (it goes on), or nothing was sent (stale)
    result = inline.answer.result()
    if result.status is None or is_retryable_status(result.status):
        return None  # the queue retries it
    return result


async def _duplicate(
    relay: Relay, rt: RouteRuntime, event: NewEvent, got: Ingested, waiters: Waiters
) -> Reply:
    cfg = rt.cfg
    if (refused := absorbed(relay, rt, event, got)) is not None:
        return refused
    stored: StoredResponse | None = None
    local = waiters.get((cfg.name, event.key))
    if local is not None:  # the first copy's answer is on its way, here
        try:
            stored = await asyncio.wait_for(asyncio.shield(local), cfg.hybrid.wait)
        except TimeoutError:
            stored = None
    else:
        try:
            stored = await relay.store.stored_answer(got.event_id)
        except StoreUnavailable as exc:
            rt.log.error("store_unavailable", event_id=got.event_id, error=str(exc))
    if stored is not None:
        return Reply(replay(stored), "replayed", event.key)
    return duplicate_ack(relay, rt, event, got)
