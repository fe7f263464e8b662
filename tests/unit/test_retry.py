"""Retry policy: what is retryable, the backoff schedule, Retry-After, giving up."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from relay.retry import (
    Decision,
    RetryPolicy,
    backoff,
    decide,
    is_retryable_status,
    is_success,
    parse_retry_after,
)

NOW = 1_700_000_000.0
POLICY = RetryPolicy(max_attempts=10, max_age=86400.0, initial=1.0, max=60.0)


def fixed(value: float) -> Callable[[], float]:
    assert 0.0 <= value < 1.0, "random.random() never returns this"
    return lambda: value


def one() -> float:
    return 1.0  # the ceiling itself: random.random() only comes arbitrarily close


def zero() -> float:
    return 0.0


def half() -> float:
    return 0.5


# ---------------------------------------------------------------- statuses


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 507, 599])
def test_retryable_statuses(status: int) -> None:
    assert is_retryable_status(status)
    assert not is_success(status)


@pytest.mark.parametrize(
    "status", [100, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 409, 410, 413, 422, 426, 451]
)
def test_final_statuses(status: int) -> None:
    assert not is_retryable_status(status)
    assert not is_success(status)


def test_the_retryable_set_is_exactly_408_425_429_and_5xx() -> None:
    retryable = {s for s in range(100, 600) if is_retryable_status(s)}
    assert retryable == {408, 425, 429} | set(range(500, 600))


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_success(status: int) -> None:
    assert is_success(status)
    assert not is_retryable_status(status)


# ---------------------------------------------------------------- backoff


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 32.0), (7, 60.0), (20, 60.0)],
)
def test_backoff_ceiling_is_initial_times_two_to_the_n_minus_one_capped_by_max(
    attempt: int, ceiling: float
) -> None:
    assert backoff(attempt, POLICY, one) == ceiling
    assert backoff(attempt, POLICY, half) == ceiling / 2
    assert backoff(attempt, POLICY, zero) == 0.0


def test_backoff_is_full_jitter_within_the_ceiling() -> None:
    values = [i / 100 for i in range(100)]
    for attempt in range(1, 12):
        ceiling = min(POLICY.max, POLICY.initial * 2 ** (attempt - 1))
        delays = [backoff(attempt, POLICY, functools.partial(float, v)) for v in values]
        assert delays == sorted(delays)
        assert all(0.0 <= d < ceiling for d in delays)
        assert delays[0] == 0.0


def test_backoff_with_a_larger_initial_delay() -> None:
    policy = RetryPolicy(initial=5.0, max=3600.0)
    assert [backoff(n, policy, one) for n in range(1, 6)] == [5.0, 10.0, 20.0, 40.0, 80.0]


def test_backoff_does_not_overflow_on_huge_attempt_numbers() -> None:
    assert backoff(10_000, POLICY, one) == POLICY.max
    assert backoff(10**9, RetryPolicy(initial=1e300, max=7.0), one) == 7.0


def test_backoff_uses_the_real_random_by_default() -> None:
    for _ in range(50):
        assert 0.0 <= backoff(3, POLICY) < 4.0


# ---------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("0", 0.0), ("120", 120.0), (" 30 ", 30.0), ("86400", 86400.0)],
)
def test_retry_after_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_retry_after_http_date() -> None:
    when = datetime.fromtimestamp(NOW + 90, tz=UTC)
    assert parse_retry_after(format_datetime(when, usegmt=True), NOW) == 90.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412000.0) == 480.0


def test_retry_after_date_in_the_past_means_now() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", NOW) == 0.0


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "soon",
        "-5",
        "1.5",
        "1e9",
        "²",  # str.isdigit() says yes; float() says no
        "٣",  # an Arabic-Indic digit: not delta-seconds either
        "Wed, 21 Oct 99999 07:28:00 GMT",
        "Wed, 21 Oct 2015 07:28:00",  # no zone
        "Wed, 21 Oct 2015 07:28:00 -0000",  # "unknown zone" in RFC 5322 terms
    ],
)
def test_retry_after_garbage_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


def test_an_absurd_retry_after_parses_and_is_capped_by_decide() -> None:
    seconds = parse_retry_after("9" * 400, NOW)
    assert seconds is not None
    assert seconds > 1e300
    d = decide(
        status=503,
        attempts=1,
        received_at=NOW,
        now=NOW,
        policy=POLICY,
        retry_after=seconds,
        rand=zero,
    )
    assert d == Decision("pending", next_attempt_at=NOW + POLICY.max)


# ---------------------------------------------------------------- decide


def test_success_is_delivered() -> None:
    for status in (200, 202, 204):
        d = decide(status=status, attempts=1, received_at=NOW, now=NOW, policy=POLICY, rand=zero)
        assert d == Decision("delivered")


def test_success_on_the_last_allowed_attempt_is_still_delivered() -> None:
    d = decide(
        status=200,
        attempts=POLICY.max_attempts,
        received_at=NOW - 10 * POLICY.max_age,
        now=NOW,
        policy=POLICY,
    )
    assert d == Decision("delivered")


@pytest.mark.parametrize("status", [301, 400, 401, 404, 409, 410, 422])
def test_a_final_status_is_dead_with_the_status_as_reason(status: int) -> None:
    d = decide(status=status, attempts=1, received_at=NOW, now=NOW, policy=POLICY, rand=zero)
    assert d == Decision("dead", reason=f"status {status}")


@pytest.mark.parametrize("status", [None, 408, 425, 429, 500, 503])
def test_a_retryable_outcome_is_scheduled_with_backoff(status: int | None) -> None:
    d = decide(status=status, attempts=3, received_at=NOW, now=NOW + 5, policy=POLICY, rand=half)
    assert d == Decision("pending", next_attempt_at=NOW + 5 + 2.0)  # half of 1 * 2**2


def test_max_attempts_leads_to_dead() -> None:
    def at(attempts: int) -> Decision:
        return decide(
            status=503, attempts=attempts, received_at=NOW, now=NOW, policy=POLICY, rand=zero
        )

    assert at(POLICY.max_attempts - 1).state == "pending"
    assert at(POLICY.max_attempts) == Decision("dead", reason="max_attempts (10) reached")
    assert at(POLICY.max_attempts + 3) == Decision("dead", reason="max_attempts (10) reached")


def test_connection_errors_also_stop_at_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=1)
    d = decide(status=None, attempts=1, received_at=NOW, now=NOW, policy=policy)
    assert d == Decision("dead", reason="max_attempts (1) reached")


def test_max_age_leads_to_dead() -> None:
    # The event arrived max_age - 10 s ago; attempt 5's backoff ceiling is 16 s.
    received = NOW - POLICY.max_age + 10

    def after(delay: float) -> Decision:
        return decide(
            status=500,
            attempts=5,
            received_at=received,
            now=NOW,
            policy=POLICY,
            rand=fixed(delay / 16),
        )

    assert after(9) == Decision("pending", next_attempt_at=NOW + 9)
    assert after(10) == Decision("pending", next_attempt_at=NOW + 10)  # exactly max_age: allowed
    assert after(11) == Decision("dead", reason="max_age exceeded")


def test_an_event_already_past_max_age_is_dead() -> None:
    d = decide(
        status=None,
        attempts=1,
        received_at=NOW - POLICY.max_age - 1,
        now=NOW,
        policy=POLICY,
        rand=zero,
    )
    assert d == Decision("dead", reason="max_age exceeded")


def test_retry_after_is_honoured_when_longer_than_the_backoff() -> None:
    d = decide(
        status=429, attempts=1, received_at=NOW, now=NOW, policy=POLICY, retry_after=30.0, rand=one
    )
    assert d == Decision("pending", next_attempt_at=NOW + 30.0)


def test_backoff_wins_when_longer_than_retry_after() -> None:
    d = decide(
        status=503, attempts=6, received_at=NOW, now=NOW, policy=POLICY, retry_after=3.0, rand=one
    )
    assert d == Decision("pending", next_attempt_at=NOW + 32.0)


def test_retry_after_is_capped_by_policy_max() -> None:
    d = decide(
        status=503,
        attempts=1,
        received_at=NOW,
        now=NOW,
        policy=POLICY,
        retry_after=1e9,
        rand=zero,
    )
    assert d == Decision("pending", next_attempt_at=NOW + POLICY.max)


def test_retry_after_past_max_age_is_dead() -> None:
    policy = RetryPolicy(max_attempts=10, max_age=100.0, initial=1.0, max=3600.0)
    d = decide(
        status=503,
        attempts=1,
        received_at=NOW,
        now=NOW,
        policy=policy,
        retry_after=600.0,
        rand=zero,
    )
    assert d == Decision("dead", reason="max_age exceeded")


def test_retry_after_does_not_rescue_a_final_status() -> None:
    d = decide(status=404, attempts=1, received_at=NOW, now=NOW, policy=POLICY, retry_after=5.0)
    assert d == Decision("dead", reason="status 404")


def test_defaults_match_the_design() -> None:
    assert RetryPolicy() == RetryPolicy(
        max_attempts=25, max_age=3 * 86400.0, initial=1.0, max=3600.0
    )
