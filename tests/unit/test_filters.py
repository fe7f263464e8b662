"""Filter rules, alone: what each condition matches on headers, query and JSON, and
the config mistakes a rule can make, named by their path."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict, MultiDict

from relay.config import from_mapping
from relay.errors import ConfigError
from relay.intake.filters import first_match
from relay.keys import Payload

UP = "http://127.0.0.1:3000/hook"


def rules(*filters: dict[str, Any], alternates: Any = None, mode: str = "queue") -> Any:
    route: dict[str, Any] = {"name": "r", "path": "/r", "upstream": UP, "mode": mode}
    route["filters"] = list(filters)
    if alternates is not None:
        route["alternates"] = alternates
    return from_mapping({"routes": [route]}, env={}).routes[0]


def payload(body: bytes = b"{}", headers: Any = (), query: Any = ()) -> Payload:
    return Payload(CIMultiDict(headers), MultiDict(query), body)


def matched(when: dict[str, Any], p: Payload) -> bool:
    route = rules({"name": "x", "when": when, "action": "drop"})
    return first_match(route.filters, p) is not None


def test_header_eq_in_exists_and_every_copy_of_a_header() -> None:
    ping = payload(headers=[("X-GitHub-Event", "ping")])
    assert matched({"header": {"x-github-event": {"eq": "ping"}}}, ping)
    assert not matched({"header": {"X-GitHub-Event": {"eq": "push"}}}, ping)
    assert matched({"header": {"X-GitHub-Event": {"in": ["push", "ping"]}}}, ping)
    assert matched({"header": {"X-GitHub-Event": {"exists": True}}}, ping)
    assert matched({"header": {"X-Other": {"exists": False}}}, ping)
    two = payload(headers=[("X-Tag", "a"), ("X-Tag", "b")])
    assert matched({"header": {"X-Tag": {"eq": "b"}}}, two)
    assert matched({"query": {"test": {"eq": True}}}, payload(query=[("test", "true")]))


def test_json_values_compare_by_type_and_numbers_by_value() -> None:
    body = b'{"livemode": false, "type": "invoice.paid", "n": 10.0, "id": "10", "v": null}'
    p = payload(body)
    assert matched({"json": {"$.livemode": {"eq": False}}}, p)
    assert not matched({"json": {"$.livemode": {"eq": 0}}}, p)  # false is not 0
    assert matched({"json": {"$.n": {"eq": 10}}}, p)  # 10.0 == 10
    assert not matched({"json": {"$.id": {"eq": 10}}}, p)  # "10" is a string
    assert matched({"json": {"$.v": {"eq": None}}}, p)
    assert matched({"json": {"$.v": {"exists": True}}}, p)  # null is present
    assert not matched({"json": {"$.missing": {"exists": True}}}, p)
    assert matched({"json": {"$.type": {"matches": "^invoice\\."}}}, p)
    assert not matched({"json": {"$.n": {"matches": "10"}}}, p)  # numbers are not text
    assert not matched({"json": {"$.type": {"eq": "x"}}}, payload(b"not json"))


def test_all_any_not_and_several_keys_meaning_all() -> None:
    p = payload(b'{"type": "invoice.paid"}', headers=[("X-Env", "test")])
    is_test = {"header": {"X-Env": {"eq": "test"}}}
    invoice = {"json": {"$.type": {"matches": "^invoice"}}}
    assert matched({"all": [is_test, invoice]}, p)
    assert matched({**is_test, **invoice}, p)
    assert not matched({"all": [is_test, {"not": invoice}]}, p)
    assert matched({"any": [{"not": is_test}, invoice]}, p)


def test_the_first_matching_rule_wins_and_an_alternate_is_its_url() -> None:
    route = rules(
        {"name": "ping", "when": {"header": {"X-E": {"eq": "ping"}}}, "action": "drop"},
        {
            "name": "bill",
            "when": {"header": {"X-E": {"exists": True}}},
            "action": {"upstream": "b"},
        },
        alternates=[{"name": "b", "url": "http://billing/x"}],
    )
    ping = first_match(route.filters, payload(headers=[("X-E", "ping")]))
    assert ping is not None and ping.name == "ping" and ping.action == "drop"
    bill = first_match(route.filters, payload(headers=[("X-E", "push")]))
    assert bill is not None and bill.upstream == "http://billing/x" and bill.action == "upstream"
    assert first_match(route.filters, payload()) is None


def test_a_hostile_pattern_on_a_hostile_body_takes_linear_time() -> None:
    # (a+)+$ backtracks exponentially in Python's re; RE2 has no backtracking at all.
    body = b'{"s": "' + b"a" * 50_000 + b'!"}'
    assert not matched({"json": {"$.s": {"matches": "^(a+)+$"}}}, payload(body))


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            {"when": {"header": {"X": {"eq": "y"}}}, "action": "drop"},
            "routes[0].filters[0].name: required",
        ),
        ({"name": "a", "action": "drop"}, "routes[0].filters[0].when: required"),
        (
            {"name": "a", "when": {}, "action": "drop"},
            "routes[0].filters[0].when: needs a condition",
        ),
        (
            {"name": "a", "when": {"header": {"X": {"eq": "y"}}}, "action": "keep"},
            "routes[0].filters[0].action: expected drop or {upstream: NAME}",
        ),
        (
            {"name": "a", "when": {"header": {"X": {"eq": "y"}}}, "action": {"upstream": "nope"}},
            'routes[0].filters[0].action.upstream: no alternate named "nope"',
        ),
        (
            {"name": "a", "when": {"json": {"$.a": {"matches": "(a"}}}, "action": "drop"},
            "routes[0].filters[0].when.json.$.a.matches: not a valid RE2 pattern: missing )",
        ),
        (
            {"name": "a", "when": {"json": {"$.a": {"matches": "(a)\\1"}}}, "action": "drop"},
            "routes[0].filters[0].when.json.$.a.matches: not a valid RE2 pattern",
        ),
        (
            {"name": "a", "when": {"json": {"a.b": {"eq": 1}}}, "action": "drop"},
            "routes[0].filters[0].when.json.a.b: JSON path must start with '$'",
        ),
        (
            {"name": "a", "when": {"header": {"X": {"eq": [1]}}}, "action": "drop"},
            "routes[0].filters[0].when.header.X.eq: expected a string, number",
        ),
        (
            {"name": "a", "when": {"header": {"X": {"eqq": 1}}}, "action": "drop"},
            "routes[0].filters[0].when.header.X",
        ),
        (
            {"name": "a", "when": {"headr": {"X": {"eq": 1}}}, "action": "drop"},
            "routes[0].filters[0].when.headr: unknown key",
        ),
    ],
)
def test_rule_mistakes_are_named(rule: dict[str, Any], message: str) -> None:
    route = {"name": "r", "path": "/r", "upstream": UP, "filters": [rule]}
    with pytest.raises(ConfigError) as info:
        from_mapping({"routes": [route]}, env={})
    assert any(e.startswith(message) for e in info.value.errors), info.value.errors


def test_sync_routes_can_drop_but_not_reroute() -> None:
    with pytest.raises(ConfigError) as info:
        rules(
            {"name": "b", "when": {"query": {"x": {"exists": True}}}, "action": {"upstream": "b"}},
            alternates=[{"name": "b", "url": "http://billing/x"}],
            mode="sync",
        )
    assert any("sync mode forwards to its one upstream" in e for e in info.value.errors)
    assert rules(
        {"name": "d", "when": {"query": {"x": {"exists": True}}}, "action": "drop"}, mode="sync"
    )
