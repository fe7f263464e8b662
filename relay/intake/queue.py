"""Queue mode: commit the event, ack the sender, leave delivery to the queue."""

from __future__ import annotations

from relay.intake.replies import Reply, filtered_answer, queue_ack
from relay.intake.steps import absorbed, duplicate_ack, shadow_copy, shadowed, store_event
from relay.runtime import Relay, RouteRuntime
from relay.store.base import Ingested, NewEvent


async def handle_queue(relay: Relay, rt: RouteRuntime, event: NewEvent) -> Reply:
    cfg = rt.cfg
    if isinstance(got := await store_event(relay, rt, event), Reply):
        return got
    if got.first:
        relay.outbound.wake(cfg.name)
        return Reply(queue_ack(cfg, got.event_id, duplicate=False), "accepted", event.key)
    if cfg.dedupe == "shadow":
        return await _pass_on(relay, rt, event, got)
    return absorbed(relay, rt, event, got) or duplicate_ack(relay, rt, event, got)


async def handle_filtered(relay: Relay, rt: RouteRuntime, event: NewEvent) -> Reply:
    """A filter dropped it: stored with its deliveries ``filtered`` (the key is claimed,
    so the sender's retries are absorbed; a replay sends it once the rule changed),
    never forwarded. A queue route acks as ever; a sync or hybrid one says filtered."""
    cfg = rt.cfg
    if isinstance(got := await store_event(relay, rt, event), Reply):
        return got
    if not got.first and (refused := absorbed(relay, rt, event, got)):
        return refused
    outcome = "filtered" if got.first else "duplicate"
    if cfg.mode == "queue":
        return Reply(queue_ack(cfg, got.event_id, duplicate=not got.first), outcome, event.key)
    return Reply(filtered_answer(got.event_id, replayed=not got.first), outcome, event.key)


async def _pass_on(relay: Relay, rt: RouteRuntime, event: NewEvent, got: Ingested) -> Reply:
    """``dedupe: shadow``: the key stays claimed by its first copy (so enforcing later
    absorbs a retry) and counts this one; the copy itself is stored under a key of its
    own and delivered like any event."""
    shadowed(relay, rt, event, got.stored_fingerprint)
    if isinstance(stored := await store_event(relay, rt, shadow_copy(event)), Reply):
        return stored
    relay.outbound.wake(rt.cfg.name)
    return Reply(queue_ack(rt.cfg, stored.event_id, duplicate=False), "accepted", event.key)
