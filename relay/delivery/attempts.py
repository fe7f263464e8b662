"""One leased delivery's attempt, from the lease check to the recorded outcome:
given back if its lease is too short, dropped if stale, otherwise sent, decided
(retry policy), reported (``attempt_report``) and recorded in the background.
The dispatcher's loops hand their leases here."""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from relay import forward
from relay.backlog import Backlog
from relay.breaker import State
from relay.config import Route
from relay.delivery.guard import UpstreamGuard
from relay.delivery.report import AttemptReport
from relay.errors import StoreError
from relay.metrics import Metrics
from relay.retry import decide, parse_retry_after
from relay.runtime import RouteRuntime
from relay.store.base import Attempt, DeliveryStore, Lease, Outcome
from relay.tracing import ClientSpan, Tracing

# An attempt starts only while its lease has timeout.total plus this much left,
# so it ends (aiohttp's total timeout) before the lease can expire and another
# holder send the same delivery, or the next one of its ordering key. A lease
# that sat unused too long (the process stalled) is given back instead.
SEND_MARGIN: Final = 5.0


@dataclass(slots=True)
class UpstreamLoop:
    """One (route, upstream): its settings, its guard and what it has in flight."""

    rt: RouteRuntime
    upstream: str
    guard: UpstreamGuard
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    inflight: set[asyncio.Task[None]] = field(default_factory=set)
    # Answered attempts whose outcome is still being recorded (still leased).
    finishing: set[asyncio.Task[None]] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    # Leased ahead of a free slot, not yet sent (at most `concurrency` between rounds).
    ready: deque[Lease] = field(default_factory=deque)
    last_attempt_ms: float = 0.0  # how long the upstream took to answer, last time
    retired: bool = False  # its route was removed or changed by a reload


class Attempts:
    def __init__(
        self,
        store: DeliveryStore,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        log: Any,
        backlog: Backlog,
        rand: Callable[[], float],
        *,
        on_breaker: Callable[[UpstreamLoop, State], None],
        answer_bytes: int = 0,
        tracing: Tracing | None = None,
    ) -> None:
        self.store = store
        self.session = session
        self.log = log
        self.backlog = backlog
        self.rand = rand
        self.on_breaker = on_breaker  # an answer moved the upstream's breaker
        self.answer_bytes = answer_bytes  # of each answer, kept in the attempt log
        self.tracing = tracing
        self.report = AttemptReport(metrics)
        # Every outcome still being recorded, of every loop (stop waits for them).
        self.finishing: set[asyncio.Task[None]] = set()

    async def run(
        self, w: UpstreamLoop, lease: Lease, answer: asyncio.Future[forward.Result] | None = None
    ) -> None:
        """One attempt; ``answer`` (hybrid mode) gets the upstream's answer, body and all,
        the moment it arrives, before the outcome is recorded."""
        rt = w.rt
        cfg = rt.cfg
        now = self.store.clock()
        if lease.expires - now < cfg.timeout.total + SEND_MARGIN:
            # The attempt could outlive the lease: another holder could then send this
            # delivery, or the next of its key, while ours is still on the wire.
            rt.log.warning(
                "lease_too_short",
                delivery_id=lease.delivery_id,
                key=lease.key,
                left=round(lease.expires - now, 3),
            )
            await self._finish(lease, None, Outcome("pending", next_attempt_at=now))
            return
        if await self._stale(rt.log, cfg, lease):
            return
        if self.tracing is None:
            await self._send(w, lease, answer, None)
            return
        with self.tracing.attempt(
            cfg.name,
            lease.upstream,
            lease.attempts + 1,
            lease.trace,
            **{"relay.delivery_id": lease.delivery_id, "relay.event_id": lease.event_id},
        ) as span:
            await self._send(w, lease, answer, span)

    async def _send(
        self,
        w: UpstreamLoop,
        lease: Lease,
        answer: asyncio.Future[forward.Result] | None,
        span: ClientSpan | None,
    ) -> None:
        rt = w.rt
        cfg = rt.cfg
        headers = rt.upstream_headers(lease.headers, lease.key, None, lease.body, lease.upstream)
        if span is not None:
            span.inject(headers)
        try:
            result = await forward.send(
                self.session,
                method=lease.method,
                url=forward.upstream_url(lease.upstream, lease.query),
                headers=headers,
                body=lease.body,
                timeout=rt.timeout,
                keep_body=answer is not None,
                preview=self.answer_bytes,
                target=rt.target(lease.upstream),
            )
        except asyncio.CancelledError:
            # Shutdown past the grace period: the backend may or may not have it;
            # back to pending, at most one re-forward (DESIGN.md invariant 6).
            now = self.store.clock()
            attempt = Attempt(now, 0.0, None, "cancelled at shutdown")
            await asyncio.shield(
                self._finish(lease, attempt, Outcome("pending", next_attempt_at=now))
            )
            raise
        if answer is not None and not answer.done():
            answer.set_result(result)
        w.last_attempt_ms = result.duration_ms
        now = self.store.clock()
        retry_after = parse_retry_after(result.retry_after, time.time())
        w.guard.saw_tls(forward.tls_reason(result.error), answered=result.status is not None)
        moved = w.guard.answered(result.status, retry_after, asyncio.get_running_loop().time())
        if moved is not None:
            self.on_breaker(w, moved)
        decision = decide(
            status=result.status,
            attempts=lease.attempts + 1,
            received_at=lease.received_at,
            now=now,
            policy=cfg.retry,
            retry_after=retry_after,
            rand=self.rand,
        )
        # The answer's start (sync's whole body in hybrid mode, so cut here too).
        kept = result.body[: self.answer_bytes] or None
        attempt = Attempt(result.started_at, result.duration_ms, result.status, result.error, kept)
        outcome = Outcome(decision.state, decision.next_attempt_at, decision.reason)
        if span is not None:
            span.answered(result.status, result.error, decision.state)
        self.report.answered(rt, lease, result, outcome, now)
        # The upstream's slot is free once it has answered: recording the outcome
        # (a group commit, an fsync away) goes on without holding the slot. The
        # delivery stays in flight in the store until then, so nothing re-leases it.
        self._finishing(w, self._finish(lease, attempt, outcome))

    def give_back(self, w: UpstreamLoop, leases: deque[Lease]) -> None:
        """Leases that were never sent (emptied): pending, due now, no attempt charged."""
        now = self.store.clock()
        while leases:
            lease = leases.popleft()
            self._finishing(w, self._finish(lease, None, Outcome("pending", next_attempt_at=now)))

    def _finishing(self, w: UpstreamLoop, finish: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(finish, name="finish")
        self.finishing.add(task)
        w.finishing.add(task)
        task.add_done_callback(functools.partial(self._finish_done, w))

    def _finish_done(self, w: UpstreamLoop, task: asyncio.Task[None]) -> None:
        self.finishing.discard(task)
        if len(w.finishing) > w.rt.cfg.concurrency:
            w.wake.set()  # the backlog held a slot: it is free now
        w.finishing.discard(task)

    async def _stale(self, log: Any, cfg: Route, lease: Lease) -> bool:
        """Stale suppression; True if the delivery was dropped (state ``stale``)."""
        if (reason := self.report.stale(log, cfg, lease)) is None:
            return False
        await self._finish(lease, None, Outcome("stale", reason=reason))
        return True

    async def _finish(self, lease: Lease, attempt: Attempt | None, outcome: Outcome) -> None:
        try:
            recorded = await self.store.finish_attempt(lease, attempt, outcome)
        except StoreError as exc:
            # The lease expires and the delivery is retried: at-least-once, never lost.
            self.log.error("finish_failed", delivery_id=lease.delivery_id, error=str(exc))
            return
        self.backlog.finished(lease, outcome, recorded)
        if not recorded:
            self.log.warning("lease_lost", delivery_id=lease.delivery_id)
