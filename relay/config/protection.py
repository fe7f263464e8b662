"""The settings that shape how a route reaches its backend: ``breaker``,
``rate_limit`` and (``mode: hybrid``) ``hybrid``."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from typing import Any, Final

from relay.config.types import (
    INGRESS_PER,
    BreakerConfig,
    HybridConfig,
    IngressRate,
    Network,
    RateLimit,
)
from relay.config.validate import MISSING, Section, Skip, show

_RATE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*")
_PER: Final = {
    **dict.fromkeys(("s", "sec", "second"), 1.0),
    **dict.fromkeys(("m", "min", "minute"), 60.0),
    **dict.fromkeys(("h", "hour"), 3600.0),
}
# The default burst: a tenth of a second's worth, so no second sees much more than the rate.
BURST_SHARE: Final = 0.1
# Hybrid mode answers within this: GitHub gives up after 10 s (Shopify after 5 s).
MAX_HYBRID_WAIT: Final = 10.0


def parse_rate(text: str) -> float:
    """``"200/s"``, ``"30/m"``, ``"1000/h"``: attempts per second."""
    m = _RATE.fullmatch(text)
    if not m:
        raise ValueError(f'expected a rate like "200/s" or "30/m", got {show(text)}')
    rate = float(m.group(1)) / _PER[m.group(2)]
    if rate <= 0:
        raise ValueError(f"must be more than zero, got {show(text)}")
    return rate


def breaker(route: Section) -> BreakerConfig | None:
    """``breaker: off`` (or false) turns it off; a mapping tunes it; absent: the defaults."""
    raw = route.raw("breaker")
    if raw is MISSING or raw is None or raw is True:
        return BreakerConfig()
    if raw is False or raw == "off":
        return None
    sec = route.section("breaker")
    default = BreakerConfig()
    cfg = BreakerConfig(
        failures=sec.integer("failures", default.failures, lo=1, hi=1000),
        probe_interval=sec.duration("probe_interval", default.probe_interval),
        ramp=sec.duration("ramp", default.ramp, positive=False),
    )
    sec.finish()
    return cfg


def _bucket(
    route: Section, key: str, more: Callable[[Section], Any] | None = None
) -> tuple[float, int, Any] | None:
    """``KEY: "200/s"``, or ``{rate: "200/s", burst: 20, ...}`` (``more`` reads the
    rest of the mapping): (rate per second, burst, what ``more`` read); None if absent."""
    raw = route.raw(key)
    if raw is MISSING or raw is None:
        return None
    if isinstance(raw, str):
        try:
            per_second = parse_rate(raw)
        except ValueError as exc:
            route.error(key, str(exc))
            return None
        return per_second, _burst(per_second), None
    sec = route.section(key)
    rate: float | None = None
    try:
        rate = parse_rate(str(sec.text("rate")))
    except ValueError as exc:
        sec.error("rate", str(exc))
    except Skip:  # missing or not a string: text() recorded why
        pass
    burst = sec.integer("burst", None, lo=1)
    extra = more(sec) if more is not None else None
    sec.finish()
    if rate is None:
        return None
    return rate, burst if burst is not None else _burst(rate), extra


def rate_limit(route: Section) -> RateLimit | None:
    """``rate_limit: "200/s"``, or ``{rate: "200/s", burst: 20}``; absent: no limit."""
    found = _bucket(route, "rate_limit")
    return None if found is None else RateLimit(found[0], found[1])


def networks(sec: Section, key: str) -> tuple[Network, ...]:
    """CIDRs (``10.0.0.0/8``, ``2001:db8::/32``) or single addresses."""
    out: list[Network] = []
    for text in sec.strings(key, ()):
        try:
            out.append(ipaddress.ip_network(text.strip()))
        except ValueError as exc:
            sec.error(key, f"{show(text)} is not an address or a network like 10.0.0.0/8: {exc}")
    return tuple(out)


def ingress_rate(route: Section) -> IngressRate | None:
    """``ingress_rate: "100/s"``, or ``{rate: "100/s", burst: 20, per: route | source}``."""
    found = _bucket(route, "ingress_rate", lambda sec: sec.choice("per", "route", INGRESS_PER))
    if found is None:
        return None
    rate, burst, per = found
    return IngressRate(rate, burst, per or "route")


def _burst(rate: float) -> int:
    return max(1, math.ceil(rate * BURST_SHARE))


def hybrid(route: Section, mode: str, timeout_total: float) -> HybridConfig:
    """``hybrid: {wait: 2s}``, for ``mode: hybrid`` only."""
    if not route.has("hybrid"):
        return HybridConfig()
    sec = route.section("hybrid")
    if mode != "hybrid":
        route.error("hybrid", "only for mode: hybrid")
    wait = sec.duration("wait", HybridConfig().wait)
    sec.finish()
    if wait >= MAX_HYBRID_WAIT:
        sec.error(
            "wait",
            f"must be under {MAX_HYBRID_WAIT:g}s: senders give up by then (GitHub 10s, Shopify 5s)",
        )
    elif wait > timeout_total:
        sec.error("wait", "must not exceed timeout.total (the attempt ends first)")
    return HybridConfig(wait)
