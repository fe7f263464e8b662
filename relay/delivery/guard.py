"""What stands between the delivery loop of one (route, upstream) and its backend:
the circuit breaker, the rate limit and a pause, and what they say to operators
(a log line per breaker transition, the breaker and held-deliveries gauges).

The dispatcher asks ``capacity`` before it leases and reports every answer to
``answered``; time is the event loop's clock (monotonic), never the store's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal

from relay.breaker import Breaker, State, TokenBucket
from relay.config import BreakerConfig, RateLimit
from relay.errors import StoreError
from relay.forward import TLS_ERRORS, shown_url
from relay.metrics import Metrics
from relay.store.base import DeliveryStore, Pause

Hold = Literal["paused", "breaker", "rate"]
HOLDS: Final[tuple[Hold, ...]] = ("paused", "breaker", "rate")
# While deliveries are held back, how often the held count is re-read for the gauge.
HELD_REFRESH: Final = 1.0


class UpstreamGuard:
    def __init__(
        self,
        route: str,
        upstream: str,
        metrics: Metrics,
        log: Any,
        *,
        breaker: BreakerConfig | None,
        rate_limit: RateLimit | None,
        share: float,
        now: float,
    ) -> None:
        self.route = route
        self.upstream = upstream
        # Labels and logs show it with its query's values hidden (a key in the URL).
        self.shown = shown_url(upstream)
        self.metrics = metrics
        self.log = log
        self.breaker_cfg = breaker
        self.rate_cfg = rate_limit
        self.breaker = (
            None
            if breaker is None
            else Breaker(breaker.failures, breaker.probe_interval, breaker.ramp)
        )
        # With workers: N each process takes its share of the upstream's rate.
        self.bucket = (
            None
            if rate_limit is None
            else TokenBucket(rate_limit.rate * share, max(1, round(rate_limit.burst * share)), now)
        )
        self.paused = False
        self.held: Hold | None = None
        self.held_counted_at = float("-inf")
        self._state_gauge = metrics.breaker_state.labels(route, self.shown)
        self._state_gauge.set(int(State.CLOSED))
        self.tls_failing: str | None = None
        self._set_tls(None)

    def saw_tls(self, reason: str | None, answered: bool) -> None:
        """An attempt failed TLS for ``reason``, or got an answer (``answered``): the
        reason stays shown (gauge, status, console) until an answer comes."""
        if (reason is None and not answered) or reason == self.tls_failing:
            return  # a timeout says nothing about TLS
        if reason is not None:
            self.log.warning("upstream_tls_failed", upstream=self.shown, reason=reason)
        elif self.tls_failing is not None:
            self.log.info("upstream_tls_ok", upstream=self.shown, was=self.tls_failing)
        self.tls_failing = reason
        self._set_tls(reason)

    def _set_tls(self, reason: str | None) -> None:
        if self.upstream.startswith("https:"):
            for each in TLS_ERRORS:
                self.metrics.tls_failing.labels(self.route, self.shown, each).set(
                    int(each == reason)
                )

    def follows(self, breaker: BreakerConfig | None, rate_limit: RateLimit | None) -> bool:
        """Whether this guard was built from these settings (a reload may change them)."""
        return breaker == self.breaker_cfg and rate_limit == self.rate_cfg

    def set_pauses(self, pauses: Sequence[Pause]) -> bool:
        """The paused routes and upstreams changed; True if this upstream's pause did."""
        paused = any(p.covers(self.route, self.upstream) for p in pauses)
        changed, self.paused = paused != self.paused, paused
        return changed

    def capacity(self, concurrency: int, now: float) -> tuple[int, Hold | None, State | None]:
        """Attempts that may be in flight now, what holds the rest back, and the breaker's
        new state if asking moved it (an open breaker whose probe time came)."""
        if self.paused:
            return 0, "paused", None
        cap, moved = concurrency, None
        if self.breaker is not None:
            before = self.breaker.state
            cap = self.breaker.allowed(concurrency, now)
            if self.breaker.state is not before:
                moved = self._moved(before, now)
            if cap == 0:
                return 0, "breaker", moved
        return cap, None, moved

    def tokens(self, wanted: int, now: float) -> int:
        """Of ``wanted`` attempts, how many the rate limit lets start now."""
        if self.bucket is None:
            return wanted
        return min(wanted, self.bucket.available(now))

    def started(self, n: int, now: float) -> None:
        if self.bucket is not None and n:
            self.bucket.take(n, now)

    def wake_at(self, now: float) -> float | None:
        """The next time ``capacity`` or ``tokens`` may say more than now."""
        times = []
        if self.breaker is not None and (at := self.breaker.wake_at(now)) is not None:
            times.append(at)
        if self.bucket is not None:
            times.append(self.bucket.ready_at(now))
        return min(times) if times else None

    def answered(self, status: int | None, retry_after: float | None, now: float) -> State | None:
        """An attempt got ``status`` (None: no answer); the breaker's new state if it moved."""
        if self.breaker is None:
            return None
        before = self.breaker.state
        self.breaker.record(status, now, retry_after)
        return self._moved(before, now) if self.breaker.state is not before else None

    def _moved(self, before: State, now: float) -> State:
        assert self.breaker is not None
        to = self.breaker.state
        name = to.name.lower()
        self._state_gauge.set(int(to))
        self.metrics.breaker_transitions.labels(self.route, self.shown, name).inc()
        fields = dict(upstream=self.shown, to=name, was=before.name.lower())
        if to is State.OPEN:
            probe = self.breaker.next_probe
            probe_in = None if probe is None else round(probe - now, 3)
            self.log.warning(
                "breaker_opened", failures=self.breaker.failed, next_probe_in=probe_in, **fields
            )
        else:
            self.log.info("breaker_closed" if to is State.CLOSED else "breaker_probing", **fields)
        return to

    async def show_held(self, store: DeliveryStore, hold: Hold | None, now: float) -> None:
        """The held-deliveries gauge: what is due and held for ``hold``, none for the rest;
        re-counted in the store at most every HELD_REFRESH while something holds."""
        if hold == self.held and (hold is None or now - self.held_counted_at < HELD_REFRESH):
            return
        count = 0
        if hold is not None:
            try:
                count = await store.count_due(self.route, self.upstream)
            except StoreError:
                return  # the next round counts again
        self.held, self.held_counted_at = hold, now
        for reason in HOLDS:
            self.metrics.deliveries_held.labels(self.route, self.shown, reason).set(
                count if reason == hold else 0
            )
