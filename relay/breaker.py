"""Circuit breaker and token bucket for one upstream: pure, every call is told the time.

The breaker counts retryable failures in a row (no answer, a timeout, a 5xx, a
429). At ``failures`` it opens: nothing is sent but one probe per
``probe_interval`` (jittered, or when the failing answer's ``Retry-After``
says). A probe that gets any other answer closes it, and the attempts allowed
in flight ramp from 1 to the route's concurrency over ``ramp``, so a backend
that just came back is not hit by the whole backlog at once.
"""

from __future__ import annotations

import enum
import math
import random
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

# A Retry-After further out than this is not believed for the next probe.
MAX_PROBE_DELAY: Final = 3600.0
# Probes are spread over +-20 % of the interval: replicas and workers do not probe in step.
JITTER: Final = 0.2


class State(enum.IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


def breaks(status: int | None) -> bool:
    """Whether an attempt's answer counts against the backend's health."""
    return status is None or status == 429 or status >= 500


class Breaker:
    def __init__(
        self,
        failures: int,
        probe_interval: float,
        ramp: float,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.failures = failures
        self.probe_interval = probe_interval
        self.ramp = ramp
        self.rand = rand
        self.state = State.CLOSED
        self.failed = 0  # retryable failures in a row
        self.next_probe: float | None = None  # while open
        self.closed_at: float | None = None  # the ramp's start, after a probe closed it

    def allowed(self, concurrency: int, now: float) -> int:
        """How many attempts may be in flight now; an open breaker whose probe time
        has come turns half-open and allows the one probe."""
        if self.state is State.OPEN:
            if self.next_probe is None or now < self.next_probe:
                return 0
            self.state = State.HALF_OPEN
        if self.state is State.HALF_OPEN:
            return 1
        if self.closed_at is None or self.ramp <= 0 or now - self.closed_at >= self.ramp:
            self.closed_at = None
            return concurrency
        share = (now - self.closed_at) / self.ramp
        return max(1, min(concurrency, 1 + math.floor((concurrency - 1) * share)))

    def record(self, status: int | None, now: float, retry_after: float | None = None) -> None:
        """An attempt was answered (``status``; None: no answer at all)."""
        if not breaks(status):
            self.failed = 0
            if self.state is not State.CLOSED:
                self.state = State.CLOSED
                self.next_probe = None
                self.closed_at = now
            return
        self.failed += 1
        if self.state is State.HALF_OPEN or (
            self.state is State.CLOSED and self.failed >= self.failures
        ):
            self.state = State.OPEN
            self.closed_at = None
            self.next_probe = now + self._delay(retry_after)

    def wake_at(self, now: float) -> float | None:
        """When ``allowed`` may next say more than it does now (the probe, a ramp step)."""
        if self.state is State.OPEN:
            return self.next_probe
        if self.state is State.CLOSED and self.closed_at is not None and self.ramp > 0:
            return min(self.closed_at + self.ramp, now + self.ramp / 10)
        return None

    def _delay(self, retry_after: float | None) -> float:
        if retry_after is not None and retry_after > 0:
            return min(retry_after, MAX_PROBE_DELAY)
        return self.probe_interval * (1 - JITTER + 2 * JITTER * self.rand())


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; one token per attempt."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.at = now

    def available(self, now: float) -> int:
        self._refill(now)
        return math.floor(self.tokens)

    def take(self, n: int, now: float) -> None:
        self._refill(now)
        self.tokens -= n

    def ready_at(self, now: float) -> float:
        """When the next whole token is there."""
        self._refill(now)
        return now if self.tokens >= 1 else now + (1 - self.tokens) / self.rate

    def _refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate)
            self.at = now


class Buckets:
    """One token bucket per name (a route, or each source address of one), at most
    ``limit`` of them: past it the least recently used goes, so a flood of spoofed or
    rotating sources costs bounded memory (a forgotten source starts full again)."""

    def __init__(self, rate: float, burst: int, limit: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.limit = limit
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, name: str, now: float) -> float | None:
        """Take one token for ``name``: None when there was one, else the seconds
        until there will be."""
        bucket = self._buckets.get(name)
        if bucket is None:
            bucket = self._buckets[name] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.limit:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(name)
        if bucket.available(now) >= 1:
            bucket.take(1, now)
            return None
        return bucket.ready_at(now) - now

    def __len__(self) -> int:
        return len(self._buckets)
