"""The upstream request's headers and URL (pure parts of relay.forward)."""

from __future__ import annotations

import ipaddress

import pytest

from relay.forward import (
    Via,
    forwarded_element,
    hide_urls,
    is_trusted,
    shown_url,
    upstream_headers,
    upstream_url,
)

VIA = Via(client_ip="203.0.113.7", proto="https", host="relay.example.com")
NO_VIA = Via(client_ip=None, proto="http", host=None)
# The same hop from a peer in trusted_proxies: its forwarding headers are believed.
PROXY = Via(client_ip="203.0.113.7", proto="https", host="relay.example.com", trusted=True)
NO_VIA_PROXY = Via(client_ip=None, proto="http", host=None, trusted=True)


def build(
    headers: list[tuple[str, str]],
    *,
    key: str = "evt_1",
    key_header: str = "Idempotency-Key",
    via: Via = VIA,
) -> list[tuple[str, str]]:
    return list(upstream_headers(headers, key=key, key_header=key_header, via=via).items())


def names(pairs: list[tuple[str, str]]) -> list[str]:
    return [name.lower() for name, _ in pairs]


@pytest.mark.parametrize(
    "hop",
    [
        "Connection",
        "Keep-Alive",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Proxy-Connection",
        "Proxy-Authorization",
        "Proxy-Authenticate",
        "Proxy-Anything-Else",
        "connection",
        "KEEP-ALIVE",
        "transfer-encoding",
    ],
)
def test_hop_by_hop_headers_are_removed(hop: str) -> None:
    out = build([("Content-Type", "application/json"), (hop, "x"), ("X-Custom", "1")], via=NO_VIA)
    assert out == [
        ("Content-Type", "application/json"),
        ("X-Custom", "1"),
        ("X-Forwarded-Proto", "http"),
        ("Idempotency-Key", "evt_1"),
    ]


def test_headers_named_in_connection_are_removed() -> None:
    out = build(
        [
            ("Connection", "keep-alive, X-Hop-One,x-hop-two , close"),
            ("X-Hop-One", "1"),
            ("X-HOP-TWO", "2"),
            ("X-Kept", "3"),
        ],
        via=NO_VIA,
    )
    assert out == [("X-Kept", "3"), ("X-Forwarded-Proto", "http"), ("Idempotency-Key", "evt_1")]


def test_connection_tokens_from_several_connection_headers() -> None:
    out = build(
        [("Connection", "X-A"), ("Connection", "X-B"), ("X-A", "1"), ("X-B", "2"), ("X-C", "3")],
        via=NO_VIA,
    )
    assert "x-a" not in names(out)
    assert "x-b" not in names(out)
    assert ("X-C", "3") in out


@pytest.mark.parametrize("name", ["Host", "host", "Content-Length", "content-length"])
def test_host_and_content_length_are_left_to_the_client(name: str) -> None:
    out = build([(name, "sender.example"), ("X-Custom", "1")])
    assert name.lower() not in names(out)
    assert ("X-Custom", "1") in out


def test_x_forwarded_for_is_set() -> None:
    out = build([])
    assert ("X-Forwarded-For", "203.0.113.7") in out


def test_x_forwarded_for_is_appended_to() -> None:
    out = build([("X-Forwarded-For", "198.51.100.1, 198.51.100.2")], via=PROXY)
    assert ("X-Forwarded-For", "198.51.100.1, 198.51.100.2, 203.0.113.7") in out
    assert names(out).count("x-forwarded-for") == 1


def test_x_forwarded_for_keeps_its_place() -> None:
    out = build([("A", "1"), ("x-forwarded-for", "198.51.100.1"), ("B", "2")], via=PROXY)
    assert names(out)[:3] == ["a", "x-forwarded-for", "b"]
    assert out[1][1] == "198.51.100.1, 203.0.113.7"


def test_x_forwarded_for_untouched_without_a_client_ip() -> None:
    out = build([("X-Forwarded-For", "198.51.100.1")], via=NO_VIA_PROXY)
    assert ("X-Forwarded-For", "198.51.100.1") in out
    assert "x-forwarded-for" not in names(build([], via=NO_VIA))
    # From a stranger, with no address to put in its place: dropped.
    assert "x-forwarded-for" not in names(build([("X-Forwarded-For", "10.0.0.1")], via=NO_VIA))


def test_x_forwarded_proto_and_host_are_set_when_absent() -> None:
    out = build([])
    assert ("X-Forwarded-Proto", "https") in out
    assert ("X-Forwarded-Host", "relay.example.com") in out


def test_x_forwarded_proto_and_host_from_a_load_balancer_are_kept() -> None:
    out = build([("X-Forwarded-Proto", "http"), ("x-forwarded-host", "lb.example.com")], via=PROXY)
    assert names(out).count("x-forwarded-proto") == 1
    assert names(out).count("x-forwarded-host") == 1
    assert ("X-Forwarded-Proto", "http") in out
    assert ("x-forwarded-host", "lb.example.com") in out


def test_no_x_forwarded_host_without_a_host() -> None:
    assert "x-forwarded-host" not in names(build([], via=NO_VIA))


def test_without_via_no_x_forwarded_headers_are_added() -> None:
    # Queue mode adds X-Forwarded-* at ingest (stored with the event), not at delivery.
    sender = [("Content-Type", "application/json"), ("Connection", "close"), ("X-A", "1")]
    out = list(upstream_headers(sender, key="evt_1", key_header="Idempotency-Key").items())
    assert out == [("Content-Type", "application/json"), ("X-A", "1"), ("Idempotency-Key", "evt_1")]


def test_the_key_header_is_added() -> None:
    out = build([("Content-Type", "application/json")], key="evt_42")
    assert ("Idempotency-Key", "evt_42") in out


def test_the_key_header_replaces_the_senders() -> None:
    out = build(
        [("idempotency-key", "sender-1"), ("X-A", "1"), ("Idempotency-Key", "sender-2")],
        key="relay-key",
    )
    values = [v for n, v in out if n.lower() == "idempotency-key"]
    assert values == ["relay-key"]


def test_the_key_header_name_is_configurable() -> None:
    out = build(
        [("X-Relay-Key", "forged"), ("Idempotency-Key", "sender")],
        key="relay-key",
        key_header="X-Relay-Key",
    )
    assert [v for n, v in out if n.lower() == "x-relay-key"] == ["relay-key"]
    # The sender's own Idempotency-Key is just another header now.
    assert ("Idempotency-Key", "sender") in out


def test_other_headers_and_duplicates_are_kept_in_order() -> None:
    sender = [
        ("Content-Type", "application/json"),
        ("Stripe-Signature", "t=1,v1=abc"),
        ("X-Multi", "one"),
        ("User-Agent", "Stripe/1.0"),
        ("X-Multi", "two"),
        ("Accept", "*/*; q=0.5"),
        ("x-multi", "three"),
    ]
    out = build(sender, via=NO_VIA)
    assert out == [*sender, ("X-Forwarded-Proto", "http"), ("Idempotency-Key", "evt_1")]


def test_header_names_keep_their_case() -> None:
    out = build([("X-GitHub-Delivery", "guid"), ("x-hub-signature-256", "sha256=ab")])
    assert ("X-GitHub-Delivery", "guid") in out
    assert ("x-hub-signature-256", "sha256=ab") in out


def test_everything_at_once() -> None:
    out = build(
        [
            ("Host", "relay.example.com"),
            ("Content-Length", "17"),
            ("Connection", "keep-alive, X-Trace"),
            ("X-Trace", "abc"),
            ("Transfer-Encoding", "chunked"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("Content-Type", "application/json"),
            ("X-Forwarded-For", "198.51.100.1"),
            ("Idempotency-Key", "from-sender"),
        ],
        key="evt_9",
        via=PROXY,
    )
    assert out == [
        ("Content-Type", "application/json"),
        ("X-Forwarded-For", "198.51.100.1, 203.0.113.7"),
        ("Idempotency-Key", "evt_9"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "relay.example.com"),
    ]


def test_several_x_forwarded_for_lines_are_all_kept() -> None:
    # RFC 9110 §5.3: several lines of one field are one comma-separated list.
    out = build(
        [("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", "198.51.100.2")], via=PROXY
    )
    xff = [v for n, v in out if n.lower() == "x-forwarded-for"]
    assert ", ".join(xff) == "198.51.100.1, 198.51.100.2, 203.0.113.7"


FORGED = [
    ("X-Forwarded-For", "10.0.0.1"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "admin.internal"),
    ("Forwarded", "for=10.0.0.1;proto=https;host=admin.internal"),
    ("X-Real-IP", "10.0.0.1"),
    ("X-Other", "kept"),
]


def test_a_strangers_forwarding_headers_are_replaced_by_what_the_relay_saw() -> None:
    out = build(FORGED, via=VIA)
    assert out == [
        ("X-Other", "kept"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Real-IP", "203.0.113.7"),
        ("Forwarded", 'for=203.0.113.7;proto=https;host="relay.example.com"'),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "relay.example.com"),
        ("Idempotency-Key", "evt_1"),
    ]


def test_a_trusted_proxys_chain_is_kept_and_extended() -> None:
    out = dict((k.lower(), v) for k, v in build(FORGED, via=PROXY))
    assert out["x-forwarded-for"] == "10.0.0.1, 203.0.113.7"
    assert out["x-forwarded-proto"] == "https" and out["x-forwarded-host"] == "admin.internal"
    assert out["x-real-ip"] == "10.0.0.1"
    assert out["forwarded"] == (
        'for=10.0.0.1;proto=https;host=admin.internal, for=203.0.113.7;proto=https;host="relay.example.com"'
    )


def test_forwarded_quotes_what_needs_it() -> None:
    via = Via(client_ip="2001:db8::1", proto="http", host='h"x:8080')
    assert forwarded_element(via) == 'for="[2001:db8::1]";proto=http;host="h\\"x:8080"'


@pytest.mark.parametrize(
    ("remote", "trusted"),
    [
        ("10.1.2.3", True),
        ("::ffff:10.1.2.3", True),  # an IPv4 peer on a dual-stack socket
        ("2001:db8::5", True),
        ("11.0.0.1", False),
        ("2001:db9::5", False),
        (None, False),
        ("not-an-ip", False),
    ],
)
def test_is_trusted(remote: str | None, trusted: bool) -> None:
    networks = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")]
    assert is_trusted(remote, networks) is trusted


# ---------------------------------------------------------------- upstream_url


@pytest.mark.parametrize(
    ("base", "query", "url"),
    [
        ("http://127.0.0.1:3000/hook", "", "http://127.0.0.1:3000/hook"),
        ("http://127.0.0.1:3000/hook", "a=1&b=2", "http://127.0.0.1:3000/hook?a=1&b=2"),
        ("http://127.0.0.1:3000/hook?src=relay", "a=1", "http://127.0.0.1:3000/hook?src=relay&a=1"),
        ("https://example.com/", "x=%2F%20y&x=2", "https://example.com/?x=%2F%20y&x=2"),
        ("https://example.com", "flag", "https://example.com?flag"),
    ],
)
def test_upstream_url_keeps_the_query_string(base: str, query: str, url: str) -> None:
    assert upstream_url(base, query) == url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://a:1/x", "http://a:1/x"),
        ("http://a/x?api_key=S3CR3T&b=2&flag", "http://a/x?api_key=[redacted]&b=[redacted]&flag"),
        ("https://user:pw@h:8/p?t=1#frag", "https://[redacted]@h:8/p?t=[redacted]"),
        ("http://a/x?", "http://a/x"),
    ],
)
def test_an_upstream_is_shown_without_its_query_values_or_password(url: str, shown: str) -> None:
    assert shown_url(url) == shown
    assert shown_url(shown) == shown  # showing twice changes nothing


def test_urls_in_an_error_message_are_hidden_too() -> None:
    text = "ClientResponseError: 400, message='Bad', url='http://h/p?api_key=S3CR3T'"
    assert (
        hide_urls(text)
        == "ClientResponseError: 400, message='Bad', url='http://h/p?api_key=[redacted]'"
    )
