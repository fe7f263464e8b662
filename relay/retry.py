"""Retry policy (pure): what is retryable, how long to wait, when to give up."""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

# DESIGN.md: retry on 408, 425, 429 and 5xx; every other status is final.
RETRYABLE_STATUSES: Final = frozenset({408, 425, 429})


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or 500 <= status <= 599


def is_success(status: int) -> bool:
    return 200 <= status <= 299


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 25
    max_age: float = 3 * 86400.0
    initial: float = 1.0
    max: float = 3600.0


def backoff(attempt: int, policy: RetryPolicy, rand: Callable[[], float] = random.random) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential with full jitter."""
    exp = min(attempt - 1, 64)  # 2**64 seconds is already past any sane cap
    ceiling = min(policy.max, policy.initial * math.pow(2.0, exp))
    return rand() * ceiling


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²".isdigit() is True, float("²") fails
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class Decision:
    state: Literal["delivered", "pending", "dead"]
    next_attempt_at: float | None = None
    reason: str | None = None


def decide(
    *,
    status: int | None,
    attempts: int,
    received_at: float,
    now: float,
    policy: RetryPolicy,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """Where a delivery goes after its ``attempts``-th attempt got ``status``.

    ``status`` is None for a connection error or a timeout (always retryable).
    """
    if status is not None:
        if is_success(status):
            return Decision("delivered")
        if not is_retryable_status(status):
            return Decision("dead", reason=f"status {status}")
    if attempts >= policy.max_attempts:
        return Decision("dead", reason=f"max_attempts ({policy.max_attempts}) reached")
    delay = backoff(attempts, policy, rand)
    if retry_after is not None:
        # Honour the upstream's wish, but a hostile "Retry-After: 1e9" cannot park us for years.
        delay = max(delay, min(retry_after, policy.max))
    when = now + delay
    if when - received_at > policy.max_age:
        return Decision("dead", reason="max_age exceeded")
    return Decision("pending", next_attempt_at=when)
