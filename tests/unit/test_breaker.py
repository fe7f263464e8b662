"""The circuit breaker, the token bucket and their settings: pure, time passed in."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.breaker import MAX_PROBE_DELAY, Breaker, State, TokenBucket, breaks
from relay.config import BreakerConfig, RateLimit, from_mapping
from relay.config.protection import parse_rate
from relay.errors import ConfigError


def breaker(**kw: Any) -> Breaker:
    return Breaker(
        **{"failures": 3, "probe_interval": 10.0, "ramp": 20.0, "rand": lambda: 0.5, **kw}
    )


def test_what_counts_against_the_backend() -> None:
    assert breaks(None) and breaks(500) and breaks(503) and breaks(429)
    assert not breaks(200) and not breaks(404) and not breaks(410) and not breaks(408)


def test_opens_after_failures_in_a_row_and_only_then() -> None:
    b = breaker()
    for status in (503, None, 200, 503, 503):  # the 200 starts the count again
        b.record(status, 0.0)
    assert b.state is State.CLOSED and b.allowed(16, 0.0) == 16
    b.record(429, 1.0)
    assert b.state is State.OPEN
    assert b.next_probe == pytest.approx(11.0)  # jitter 0.5 is the middle: the interval itself
    assert b.allowed(16, 10.9) == 0 and b.wake_at(10.9) == pytest.approx(11.0)


def test_a_probe_at_its_time_and_a_failing_probe_reopens() -> None:
    b = breaker()
    for _ in range(3):
        b.record(None, 0.0)
    assert b.allowed(16, 10.0) == 1 and b.state is State.HALF_OPEN
    assert b.allowed(16, 10.5) == 1  # one probe in flight at a time
    b.record(502, 11.0)
    assert b.state is State.OPEN and b.next_probe == pytest.approx(21.0)


def test_retry_after_sets_the_next_probe_within_bounds() -> None:
    b = breaker()
    for _ in range(2):
        b.record(503, 0.0)
    b.record(503, 0.0, retry_after=42.0)
    assert b.next_probe == pytest.approx(42.0)
    b.allowed(16, 50.0)
    b.record(503, 50.0, retry_after=10 * MAX_PROBE_DELAY)
    assert b.next_probe == pytest.approx(50.0 + MAX_PROBE_DELAY)


def test_a_probe_that_succeeds_closes_and_concurrency_ramps_up() -> None:
    b = breaker()
    for _ in range(3):
        b.record(None, 0.0)
    b.allowed(16, 10.0)
    b.record(201, 10.0)
    assert b.state is State.CLOSED and b.failed == 0
    seen = [b.allowed(16, 10.0 + t) for t in (0.0, 5.0, 10.0, 19.9, 20.0, 30.0)]
    assert seen == [1, 4, 8, 15, 16, 16]
    assert seen == sorted(seen)


@given(st.lists(st.sampled_from([None, 200, 429, 500, 404]), max_size=60), st.integers(1, 64))
def test_allowed_stays_within_zero_and_concurrency(statuses: list[int | None], conc: int) -> None:
    b = breaker(ramp=5.0)
    now = 0.0
    for status in statuses:
        now += 1.0
        n = b.allowed(conc, now)
        assert 0 <= n <= conc
        assert n == 0 or b.state is not State.OPEN
        if n:
            b.record(status, now)


def test_jitter_spreads_probes_around_the_interval() -> None:
    low, high = breaker(rand=lambda: 0.0), breaker(rand=lambda: 0.999)
    for b in (low, high):
        for _ in range(3):
            b.record(None, 0.0)
    assert low.next_probe == pytest.approx(8.0) and high.next_probe == pytest.approx(12.0, abs=0.01)


def test_token_bucket_paces_and_saves_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=3, now=0.0)
    assert bucket.available(0.0) == 3
    bucket.take(3, 0.0)
    assert bucket.available(0.0) == 0
    assert bucket.ready_at(0.0) == pytest.approx(0.1)
    assert bucket.available(0.25) == 2
    assert bucket.available(100.0) == 3  # never more than the burst
    taken, now = 0, 0.0
    bucket = TokenBucket(rate=10.0, burst=3, now=0.0)
    while now < 10.0:
        n = bucket.available(now)
        bucket.take(n, now)
        taken += n
        now += 0.013
    assert 100 <= taken <= 103  # the rate over ten seconds, plus the first burst


def test_rates_parse() -> None:
    assert parse_rate("200/s") == 200 and parse_rate("30/m") == 0.5 and parse_rate("3600/h") == 1
    assert parse_rate(" 2.5 / second ") == 2.5
    for bad in ("fast", "0/s", "10", "10/d", "-1/s"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def route(**extra: Any) -> dict[str, Any]:
    return {"name": "r", "path": "/r", "upstream": "http://127.0.0.1:9/", **extra}


def errors_of(**extra: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        from_mapping({"routes": [route(**extra)]}, env={})
    return info.value.errors


def test_breaker_and_rate_limit_settings() -> None:
    (r,) = from_mapping({"routes": [route()]}, env={}).routes
    assert r.breaker == BreakerConfig(failures=5, probe_interval=5.0, ramp=10.0)
    assert r.rate_limit is None
    for off in (False, "off"):
        assert from_mapping({"routes": [route(breaker=off)]}, env={}).routes[0].breaker is None
    (r,) = from_mapping(
        {"routes": [route(breaker={"failures": 2, "ramp": "0s"}, rate_limit="100/s")]}, env={}
    ).routes
    assert r.breaker == BreakerConfig(failures=2, probe_interval=5.0, ramp=0.0)
    assert r.rate_limit == RateLimit(100.0, 10)
    limited = {"rate": "30/m", "burst": 5}
    assert from_mapping({"routes": [route(rate_limit=limited)]}, env={}).routes[0].rate_limit == (
        RateLimit(0.5, 5)
    )


def test_bad_protection_settings_name_their_path() -> None:
    assert errors_of(rate_limit="lots") == [
        'routes[0].rate_limit: expected a rate like "200/s" or "30/m", got "lots"'
    ]
    assert errors_of(rate_limit={"burst": 0}) == [
        "routes[0].rate_limit.rate: required",
        "routes[0].rate_limit.burst: must be at least 1, got 0",
    ]
    assert errors_of(breaker={"failures": 0, "probe": "1s"}) == [
        "routes[0].breaker.failures: must be at least 1, got 0",
        "routes[0].breaker.probe: unknown key",
    ]
    assert errors_of(breaker="sometimes") == [
        'routes[0].breaker: expected a mapping, got "sometimes"'
    ]
    assert errors_of(mode="sync", rate_limit="1/s") == [
        "routes[0]: breaker and rate_limit pace queue-mode delivery (sync forwards at once)"
    ]
