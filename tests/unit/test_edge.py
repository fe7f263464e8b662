"""The edge's pure parts: which address a webhook came from behind trusted proxies,
and the per-name token buckets of ``ingress_rate`` (bounded in number)."""

from __future__ import annotations

import ipaddress

from relay.breaker import Buckets
from relay.intake.edge import client_address

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


def test_the_peer_is_the_source_unless_it_is_a_trusted_proxy() -> None:
    assert client_address("203.0.113.7", None, PROXIES) == "203.0.113.7"
    # A stranger's X-Forwarded-For is a claim: the peer is judged.
    assert client_address("203.0.113.7", "3.18.12.63", PROXIES) == "203.0.113.7"
    # Behind a trusted proxy: the nearest hop that is not one of ours.
    assert client_address("10.0.0.5", "3.18.12.63", PROXIES) == "3.18.12.63"
    assert client_address("10.0.0.5", "1.2.3.4, 3.18.12.63, 10.0.0.9", PROXIES) == "3.18.12.63"
    assert client_address("10.0.0.5", "[2001:db8::1]", PROXIES) == "2001:db8::1"
    # Only proxies in the chain: the farthest one.
    assert client_address("10.0.0.5", "10.1.1.1, 10.2.2.2", PROXIES) == "10.1.1.1"
    assert client_address("10.0.0.5", " , ", PROXIES) == "10.0.0.5"
    assert client_address(None, None, PROXIES) == ""


def test_buckets_refill_at_their_rate_and_say_when() -> None:
    buckets = Buckets(rate=2.0, burst=2)
    assert buckets.take("a", 0.0) is None
    assert buckets.take("a", 0.0) is None
    assert buckets.take("a", 0.0) == 0.5  # one token comes every half second
    assert buckets.take("b", 0.0) is None  # each name its own bucket
    assert buckets.take("a", 0.5) is None


def test_buckets_stay_bounded_forgetting_the_least_recently_used() -> None:
    buckets = Buckets(rate=1.0, burst=1, limit=3)
    for name in ("a", "b", "c"):
        assert buckets.take(name, 0.0) is None
    assert buckets.take("a", 0.0) == 1.0  # a used again: now the most recent
    assert buckets.take("d", 0.0) is None  # b, the least recent, goes
    assert len(buckets) == 3
    assert buckets.take("b", 0.0) is None  # forgotten: starts full again (c goes)
    assert buckets.take("a", 0.0) == 1.0  # remembered: still empty
    assert buckets.take("c", 0.0) is None
