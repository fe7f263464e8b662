"""The admin's door as pure logic: which Host is ours, what a web page may have
sent, and how wrong tokens slow a client down."""

from __future__ import annotations

import pytest

from relay.admin.edge import allowed_names, cross_site_refusal, host_name, host_refusal
from relay.admin.throttle import Throttle

NAMES = allowed_names("127.0.0.1", ["relay-1.internal"])


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:9090", "127.0.0.1"),
        ("[::1]:9090", "::1"),
        ("::1", "::1"),
        ("LocalHost.:80", "localhost"),
        ("relay-1.internal", "relay-1.internal"),
    ],
)
def test_host_names_lose_their_port_brackets_and_case(header: str, name: str) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize(
    "header",
    ["127.0.0.1:9090", "10.1.2.3", "[::1]:9090", "localhost:9090", "relay-1.internal:9090"],
)
def test_ip_literals_localhost_and_configured_names_are_answered(header: str) -> None:
    assert host_refusal(header, NAMES) is None


@pytest.mark.parametrize(
    "header", ["evil.example", "evil.example:9090", "localhost.evil.example", "relay-1", None, ""]
)
def test_any_other_name_gets_no_answer(header: str | None) -> None:
    assert host_refusal(header, NAMES) is not None


def test_a_listener_on_a_name_answers_to_it() -> None:
    assert host_refusal("relay.lan:9090", allowed_names("relay.lan", [])) is None


JSON = {"Content-Type": "application/json", "Host": "127.0.0.1:9090"}


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({**JSON, "Sec-Fetch-Site": "cross-site"}, "cross_site"),
        ({**JSON, "Sec-Fetch-Site": "same-site"}, "cross_site"),  # another port, same machine
        ({**JSON, "Origin": "http://evil.example"}, "cross_origin"),
        ({**JSON, "Origin": "http://127.0.0.1:9091"}, "cross_origin"),
        ({"Content-Type": "text/plain", "Host": "127.0.0.1:9090"}, "content_type"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, "content_type"),
        ({}, "content_type"),
    ],
)
def test_what_a_page_can_send_changes_nothing(headers: dict[str, str], reason: str) -> None:
    found = cross_site_refusal("POST", headers, api=True)
    assert found is not None and found[0] == reason


@pytest.mark.parametrize(
    "headers",
    [
        JSON,
        {**JSON, "Sec-Fetch-Site": "same-origin", "Origin": "http://127.0.0.1:9090"},
        {**JSON, "Sec-Fetch-Site": "none"},
        {"Content-Type": "application/json; charset=utf-8"},
    ],
)
def test_json_from_a_tool_or_the_same_origin_passes(headers: dict[str, str]) -> None:
    assert cross_site_refusal("POST", headers, api=True) is None


def test_reads_and_the_consoles_same_origin_forms_pass() -> None:
    assert cross_site_refusal("GET", {"Sec-Fetch-Site": "cross-site"}, api=True) is None
    form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": "null"}
    assert cross_site_refusal("POST", {**form, "Sec-Fetch-Site": "same-origin"}, api=False) is None
    assert cross_site_refusal("POST", {**form, "Sec-Fetch-Site": "cross-site"}, api=False)


def test_wrong_tokens_lock_a_client_out_for_longer_each_time() -> None:
    t = Throttle(free=3, first=1.0, ceiling=8.0, forget=100.0)
    for _ in range(2):
        assert not t.failed("a", 0.0)
    assert t.wait("a", 0.0) == 0.0
    assert not t.failed("a", 0.0)  # the third: still free
    assert t.failed("a", 0.0)  # the fourth starts a burst (logged once)
    assert t.wait("a", 0.5) == 0.5 and t.wait("b", 0.5) == 0.0  # per client
    waits = []
    for _ in range(5):
        assert not t.failed("a", 10.0)
        waits.append(t.wait("a", 10.0))
    assert waits == [2.0, 4.0, 8.0, 8.0, 8.0]  # doubling, up to the ceiling
    t.succeeded("a")
    assert t.wait("a", 10.0) == 0.0


def test_a_quiet_client_is_forgotten_and_the_table_is_bounded() -> None:
    t = Throttle(free=0, first=1.0, forget=10.0, max_clients=3)
    assert t.failed("a", 0.0)
    assert t.failed("a", 20.0)  # forgotten after the quiet spell: a new burst
    for c in "bcd":
        t.failed(c, 20.0)
    assert t.wait("a", 20.5) == 0.0  # pushed out by newer clients
    assert t.wait("d", 20.5) == 0.5
