"""Queue-mode delivery: lease due deliveries, forward them, record the outcome.

One delivery loop per (route, upstream). A loop is woken in process when an
event is stored (no polling latency); a slow poll remains as a safety net and
for work other replicas stored. Concurrency per upstream is bounded by the
route's ``concurrency``.

Per-key ordering is enforced by the store (``lease_due`` leases at most one
delivery of an ordering key at a time, the earliest accepted first). A loop
leases ahead of its free slots, so a freed slot is refilled without a round
trip to the store; what it never sent goes back, due and uncharged.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable
from typing import Any, Final

import aiohttp

from relay import forward
from relay.backlog import Backlog
from relay.breaker import State
from relay.config import Route
from relay.delivery.attempts import Attempts, UpstreamLoop
from relay.delivery.guard import HELD_REFRESH, Hold, UpstreamGuard
from relay.errors import StoreError
from relay.metrics import Metrics
from relay.runtime import InlineAttempt, RouteRuntime
from relay.store.base import DeliveryStore, Pause
from relay.tracing import Tracing

# Safety-net poll: finds work stored by other replicas and due retries we were not told of.
POLL_INTERVAL: Final = 5.0
# A lease outlives the attempt's total timeout by this much before others may take it.
LEASE_MARGIN: Final = 30.0
# While attempts are in flight, wait until a quarter of the slots are free to lease.
LEASE_BATCH_DIVISOR: Final = 4
# Leasing ahead saves a store round trip per attempt: worth it for a quick upstream
# only. A slow one would keep leases waiting long enough to run out.
AHEAD_MAX_ATTEMPT_MS: Final = 1000.0
# Back-off after a store error inside a delivery loop, so a broken disk does not spin.
STORE_ERROR_PAUSE: Final = 1.0
# How often the paused routes are re-read from the store (the lease itself checks
# them too, so this only decides how soon a loop notices; replicas share the store).
PAUSE_REFRESH: Final = 1.0


class Dispatcher:
    def __init__(
        self,
        store: DeliveryStore,
        session: aiohttp.ClientSession,
        metrics: Metrics,
        log: Any,
        *,
        backlog: Backlog | None = None,
        rate_share: float = 1.0,
        answer_bytes: int = 0,
        tracing: Tracing | None = None,
        poll_interval: float = POLL_INTERVAL,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.session = session
        self.metrics = metrics
        self.log = log
        self.poll_interval = poll_interval
        self.rand = rand
        self._loops: dict[tuple[str, str], UpstreamLoop] = {}
        self._stopping = False
        self._stop_task: asyncio.Task[None] | None = None
        # Told of every outcome recorded (backpressure counts).
        self.backlog = backlog if backlog is not None else Backlog()
        # This process's share of each upstream's rate limit (1 / workers).
        self.rate_share = rate_share
        self._pauses: list[Pause] = []
        self._pause_task: asyncio.Task[None] | None = None
        self._chores: set[asyncio.Task[None]] = set()
        self.attempts = Attempts(
            store,
            session,
            metrics,
            log,
            self.backlog,
            rand,
            on_breaker=self._breaker_moved,
            answer_bytes=answer_bytes,
            tracing=tracing,
        )
        self.failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    # --- lifecycle ------------------------------------------------------------

    def set_routes(self, routes: list[RouteRuntime], start: bool = True) -> None:
        """Start delivery loops for queue routes; retire those of removed or changed routes.

        With ``start=False`` no task runs: ``burst()`` drives delivery instead.
        """
        wanted: dict[tuple[str, str], RouteRuntime] = {
            (rt.cfg.name, up): rt for rt in routes if rt.cfg.queued for up in rt.cfg.served
        }
        for ident, loop in list(self._loops.items()):
            if ident not in wanted:
                loop.retired = True
                loop.wake.set()
                del self._loops[ident]
        for ident, rt in wanted.items():
            existing = self._loops.get(ident)
            if existing is not None:
                existing.rt = rt  # new limits apply from the next lease on
                if not existing.guard.follows(rt.cfg.breaker, rt.cfg.rate_limit):
                    existing.guard = self._guard(rt, ident[1])
                existing.wake.set()
                continue
            loop = UpstreamLoop(rt, ident[1], self._guard(rt, ident[1]))
            if start:
                loop.task = asyncio.create_task(
                    self._run(loop), name=f"dispatch:{ident[0]}->{ident[1]}"
                )
                loop.task.add_done_callback(self._watch)
            self._loops[ident] = loop
        if start and self._pause_task is None:
            self._pause_task = asyncio.create_task(self._follow_pauses(), name="pauses")
            self._pause_task.add_done_callback(self._watch)

    def _guard(self, rt: RouteRuntime, upstream: str) -> UpstreamGuard:
        guard = UpstreamGuard(
            rt.cfg.name,
            upstream,
            self.metrics,
            rt.log,
            breaker=rt.cfg.breaker,
            rate_limit=rt.cfg.rate_limit,
            share=self.rate_share,
            now=asyncio.get_running_loop().time(),
        )
        guard.set_pauses(self._pauses)
        return guard

    async def _follow_pauses(self) -> None:
        while not self._stopping:
            await self.refresh_pauses()
            await asyncio.sleep(PAUSE_REFRESH)

    async def refresh_pauses(self) -> None:
        """Re-read the paused routes; wake the loops whose pause changed."""
        try:
            self._pauses = await self.store.pauses()
        except StoreError as exc:
            self.log.error("pauses_unreadable", error=str(exc))
            return
        for loop in self._loops.values():
            if loop.guard.set_pauses(self._pauses):
                loop.wake.set()

    def _watch(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stopping:
            return
        exc = task.exception()
        if exc is not None and not self.failed.done():
            self.log.error("dispatcher_died", task=task.get_name(), error=repr(exc))
            self.failed.set_result(exc)

    def notify(self, route: str) -> None:
        """An event was stored on ``route``: wake its delivery loops now."""
        for (name, _), loop in self._loops.items():
            if name == route:
                loop.wake.set()

    async def deliver_now(self, route: str, upstream: str, event_id: int) -> InlineAttempt | None:
        """Hybrid mode: lease this event's delivery and send it now, as one of the
        upstream's attempts (its concurrency, pause, breaker and rate limit apply);
        None when it cannot go now, and the queue takes it as any other."""
        w = self._loops.get((route, upstream))
        if w is None or w.retired or self._stopping:
            return None
        clock = asyncio.get_running_loop().time
        if self._slots(w, clock())[1] < 1:
            return None
        cfg = w.rt.cfg
        ttl = cfg.timeout.total + LEASE_MARGIN
        try:
            lease = await self.store.lease_delivery(
                route, upstream, event_id, ttl, hold_dead=_hold_dead(cfg)
            )
        except StoreError as exc:
            self.log.error("lease_failed", route=route, error=str(exc))
            return None
        if lease is None:
            return None
        w.guard.started(1, clock())
        answer: asyncio.Future[forward.Result] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(
            self.attempts.run(w, lease, answer), name=f"attempt:{lease.delivery_id}"
        )
        w.inflight.add(task)
        task.add_done_callback(functools.partial(self._attempt_done, w))
        return InlineAttempt(answer, task)

    def begin_stop(self, grace: float) -> asyncio.Task[None]:
        """Start ``stop`` once; every caller awaits the same task."""
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self.stop(grace), name="dispatcher-stop")
        return self._stop_task

    async def stop(self, grace: float) -> None:
        """Stop leasing; let attempts in flight finish within ``grace``; cancel the rest."""
        self._stopping = True
        if self._pause_task is not None:
            self._pause_task.cancel()
        loops = list(self._loops.values())
        for w in loops:
            w.retired = True
            w.wake.set()
        tasks = [w.task for w in loops if w.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        # Only now: a loop that was inside lease_due when told to stop may still
        # have started attempts, and they must be finished or cancelled too.
        attempts = [t for w in loops for t in w.inflight]
        if attempts:
            _, late = await asyncio.wait(attempts, timeout=grace)
            for t in late:
                t.cancel()
            # A cancelled attempt puts its delivery back to pending itself (see Attempts.run).
            await asyncio.gather(*late, return_exceptions=True)
        # Outcomes still being recorded: short, and each one saves a re-forward.
        await asyncio.gather(*self.attempts.finishing, return_exceptions=True)
        self._loops.clear()

    # --- the delivery loop ---------------------------------------------------

    async def _run(self, w: UpstreamLoop) -> None:
        try:
            await self._deliver(w)
        finally:
            self.attempts.give_back(w, w.ready)  # for whoever leases next

    async def _deliver(self, w: UpstreamLoop) -> None:
        clock = asyncio.get_running_loop().time
        while not w.retired:
            w.wake.clear()
            rt, now = w.rt, clock()
            cap, free, hold = self._slots(w, now)
            if hold is not None or w.guard.held is not None:
                await w.guard.show_held(self.store, hold, now)
            free -= self._start(w, free, clock())
            # Leased ahead, a freed slot is refilled at once: the lease's round trip to
            # the store (behind a busy ingest's commits) is not part of an attempt's
            # cycle. Only while nothing holds the upstream back, and never more ahead
            # than there are slots.
            quick = w.last_attempt_ms <= AHEAD_MAX_ATTEMPT_MS
            ahead = cap if hold is None and w.guard.bucket is None and quick else 0
            if w.ready and ahead == 0:
                self.attempts.give_back(w, w.ready)  # a hold began: they would wait
            want = free + ahead - len(w.ready)
            if want <= 0 or (w.inflight and want < max(1, cap // LEASE_BATCH_DIVISOR)):
                # Busy: lease a few slots at a time, not one per finished attempt,
                # so a lease transaction serves several deliveries.
                await self._sleep(w, full=True)
                continue
            try:
                leases = await self.store.lease_due(
                    rt.cfg.name,
                    w.upstream,
                    want,
                    rt.cfg.timeout.total + LEASE_MARGIN,
                    hold_dead=_hold_dead(rt.cfg),
                )
            except StoreError as exc:
                self.log.error("lease_failed", route=rt.cfg.name, error=str(exc))
                await asyncio.sleep(STORE_ERROR_PAUSE)
                continue
            w.ready.extend(leases)
            if leases and len(leases) == want:
                continue  # maybe more due; the next round starts them and leases on
            self._start(w, self._slots(w, clock())[1], clock())
            await self._sleep(w, full=False)

    def _start(self, w: UpstreamLoop, free: int, now: float) -> int:
        """Start up to ``free`` attempts from what is leased; how many started."""
        # A lease held too long to cover its attempt is given back by Attempts.run.
        n = min(max(0, free), len(w.ready))
        if n == 0:
            return 0
        w.guard.started(n, now)
        for _ in range(n):
            lease = w.ready.popleft()
            task = asyncio.create_task(
                self.attempts.run(w, lease), name=f"attempt:{lease.delivery_id}"
            )
            w.inflight.add(task)
            task.add_done_callback(functools.partial(self._attempt_done, w))
        return n

    def _slots(self, w: UpstreamLoop, now: float) -> tuple[int, int, Hold | None]:
        """The attempts allowed in flight now, how many more may start, and what holds
        the rest back (a pause, the breaker, the rate limit)."""
        concurrency = w.rt.cfg.concurrency
        cap, hold, moved = w.guard.capacity(concurrency, now)
        if moved is not None:
            self._breaker_moved(w, moved)
        # Past `concurrency` outcomes still being recorded, they hold slots too: what
        # one process sent and has not recorded (a crash's re-forwards) stays under
        # 2 x concurrency.
        backlog = max(0, len(w.finishing) - concurrency)
        free = cap - len(w.inflight) - backlog
        if free > 0 and (allowed := w.guard.tokens(free, now)) < free:
            free, hold = allowed, hold or ("rate" if allowed == 0 else None)
        return cap, free, hold

    async def _sleep(self, w: UpstreamLoop, full: bool) -> None:
        """Until woken, or something may be due: the next due delivery (unless every
        slot is taken), a probe, a ramp step or a token; the poll at the latest."""
        timeout = self.poll_interval
        now = asyncio.get_running_loop().time()
        if (at := w.guard.wake_at(now)) is not None:
            timeout = min(timeout, max(0.0, at - now))
        if w.guard.held is not None:
            timeout = min(timeout, HELD_REFRESH)  # keep the held gauge current
        if not full:
            try:
                due = await self.store.next_due_at(
                    w.rt.cfg.name, w.upstream, hold_dead=_hold_dead(w.rt.cfg)
                )
            except StoreError:
                due = None
            if due is not None:
                timeout = min(timeout, max(0.0, due - self.store.clock()))
        try:
            async with asyncio.timeout(timeout):
                await w.wake.wait()
        except TimeoutError:
            pass

    def _breaker_moved(self, w: UpstreamLoop, to: State) -> None:
        """Opened or closed: what was backed off before is due now (an open breaker probes
        with it, a closed one ramps through it); nothing is charged an attempt."""
        if to is State.HALF_OPEN:
            return
        task = asyncio.create_task(self._make_due(w), name=f"make-due:{w.upstream}")
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _make_due(self, w: UpstreamLoop) -> None:
        try:
            await self.store.make_due(w.rt.cfg.name, w.upstream)
        except StoreError as exc:
            self.log.error("make_due_failed", route=w.rt.cfg.name, error=str(exc))
        w.wake.set()

    def _attempt_done(self, w: UpstreamLoop, task: asyncio.Task[None]) -> None:
        w.inflight.discard(task)
        if w.ready and not w.retired and not self._stopping:
            # What is leased takes the free slot now, not on the loop's next round:
            # that round may be waiting on the store for the next leases.
            now = asyncio.get_running_loop().time()
            self._start(w, self._slots(w, now)[1], now)
        w.wake.set()  # a slot is free
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.log.error("attempt_crashed", route=w.rt.cfg.name, error=repr(exc))

    # --- tests and tools --------------------------------------------------------

    async def burst(self) -> int:
        """Deliver everything due now, round after round, then return the attempts made.

        For tests and tools: runs to completion instead of sleeping (loops
        must have been registered with ``start=False``).
        """
        made = 0
        while True:
            leased = 0
            await self.refresh_pauses()
            for w in list(self._loops.values()):
                cfg = w.rt.cfg
                # The breaker holds here too (its probe time is real time); the rate
                # limit does not: a burst is for tests and tools.
                cap, _, moved = w.guard.capacity(cfg.concurrency, asyncio.get_running_loop().time())
                if moved is not None:
                    self._breaker_moved(w, moved)
                if cap <= 0:
                    continue
                leases = await self.store.lease_due(
                    cfg.name,
                    w.upstream,
                    cap,
                    cfg.timeout.total + LEASE_MARGIN,
                    hold_dead=_hold_dead(cfg),
                )
                leased += len(leases)
                await asyncio.gather(*(self.attempts.run(w, lease) for lease in leases))
                await asyncio.gather(*self.attempts.finishing)
                await asyncio.gather(*self._chores)
            if not leased:
                return made
            made += leased


def _hold_dead(cfg: Route) -> bool:
    return cfg.ordering is not None and cfg.ordering.on_dead == "hold"
