"""Idempotency keys: sources, JSON paths, presets, bounds."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from multidict import CIMultiDict

from relay.keys import (
    MAX_KEY_LENGTH,
    PRESETS,
    KeySource,
    Payload,
    extract,
    parse_json_path,
    parse_source,
    resolve,
)


def payload(
    body: bytes | Any = b"",
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    query: dict[str, str] | None = None,
) -> Payload:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Payload(CIMultiDict(headers or {}), CIMultiDict(query or {}), raw)


def key(source: str, p: Payload) -> str | None:
    return extract(parse_source(source), p)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- parsing sources


@pytest.mark.parametrize(
    ("text", "source"),
    [
        ("sha256", KeySource("sha256")),
        ("header:X-GitHub-Delivery", KeySource("header", "X-GitHub-Delivery")),
        ("query:id", KeySource("query", "id")),
        ("json:$.id", KeySource("json", "$.id", ("id",))),
        ("json:$.data.object.id", KeySource("json", "$.data.object.id", ("data", "object", "id"))),
        ("json:$.a[0].b", KeySource("json", "$.a[0].b", ("a", 0, "b"))),
        ("json:$[2]", KeySource("json", "$[2]", (2,))),
        ('json:$["odd key"]', KeySource("json", '$["odd key"]', ("odd key",))),
        ("json:$['a.b'].c", KeySource("json", "$['a.b'].c", ("a.b", "c"))),
        ("json:$.a[10][3]", KeySource("json", "$.a[10][3]", ("a", 10, 3))),
    ],
)
def test_parse_source(text: str, source: KeySource) -> None:
    assert parse_source(text) == source
    assert str(parse_source(text)) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'expected header:NAME, json:PATH, query:NAME, form:NAME or sha256, got ""'),
        ("id", 'expected header:NAME, json:PATH, query:NAME, form:NAME or sha256, got "id"'),
        (
            "header:",
            'expected header:NAME, json:PATH, query:NAME, form:NAME or sha256, got "header:"',
        ),
        (
            "query:",
            'expected header:NAME, json:PATH, query:NAME, form:NAME or sha256, got "query:"',
        ),
        (
            "SHA256",
            'expected header:NAME, json:PATH, query:NAME, form:NAME or sha256, got "SHA256"',
        ),
        ("body:$.id", 'unknown key source "body" (expected header, json, query, form or sha256)'),
        (
            "Header:X-Id",
            'unknown key source "Header" (expected header, json, query, form or sha256)',
        ),
        ("header:X Id", 'invalid header name "X Id"'),
        ("header:X-Id:", 'invalid header name "X-Id:"'),
        ("json:id", "JSON path must start with '$', got 'id'"),
        ("json:$", "JSON path '$' names no field"),
        ("json:$.", "bad JSON path '$.' at offset 1"),
        ("json:$..id", "bad JSON path '$..id' at offset 1"),
        ("json:$.a.", "bad JSON path '$.a.' at offset 3"),
        ("json:$id", "bad JSON path '$id' at offset 1"),
        ("json:$.a[", "bad JSON path '$.a[' at offset 3"),
        ("json:$.a[-1]", "bad JSON path '$.a[-1]' at offset 3"),
        ("json:$.a[*]", "bad JSON path '$.a[*]' at offset 3"),
        ('json:$["unclosed]', "bad JSON path '$[\"unclosed]' at offset 1"),
    ],
)
def test_bad_sources_are_rejected_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_source(text)
    assert str(info.value) == message


def test_parse_json_path_directly() -> None:
    assert parse_json_path('$.a["b c"][1].d') == ("a", "b c", 1, "d")
    with pytest.raises(ValueError):
        parse_json_path("a.b")


# ---------------------------------------------------------------- each kind of source


def test_header_lookup_is_case_insensitive() -> None:
    p = payload(headers={"x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"})
    assert key("header:X-GitHub-Delivery", p) == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert key("header:X-GITHUB-DELIVERY", p) == "72d3162e-cc78-11e3-81ab-4c9367dc0958"


def test_header_absent_or_blank() -> None:
    assert key("header:X-Id", payload(headers={"X-Other": "1"})) is None
    assert key("header:X-Id", payload(headers={"X-Id": ""})) is None
    assert key("header:X-Id", payload(headers={"X-Id": "   "})) is None


def test_header_value_is_trimmed() -> None:
    assert key("header:X-Id", payload(headers={"X-Id": "  evt_1 \t"})) == "evt_1"


def test_a_repeated_header_uses_the_first_value() -> None:
    p = payload(headers=[("X-Id", "first"), ("X-Id", "second")])
    assert key("header:X-Id", p) == "first"


def test_query_parameter() -> None:
    p = payload(query={"delivery": "d-1", "other": "x"})
    assert key("query:delivery", p) == "d-1"
    assert key("query:missing", p) is None
    assert key("query:delivery", payload(query={"delivery": ""})) is None


@pytest.mark.parametrize(
    ("path", "doc", "expected"),
    [
        ("$.id", {"id": "evt_1"}, "evt_1"),
        ("$.a.b", {"a": {"b": "deep"}}, "deep"),
        ("$.a[0].b", {"a": [{"b": "first"}, {"b": "second"}]}, "first"),
        ("$.a[1].b", {"a": [{"b": "first"}, {"b": "second"}]}, "second"),
        ('$["odd key"]', {"odd key": "odd"}, "odd"),
        ('$["a.b"]', {"a.b": "dotted", "a": {"b": "nested"}}, "dotted"),
        ("$[0]", ["top-level list"], "top-level list"),
        ("$.n", {"n": 12345}, "12345"),
        ("$.n", {"n": 0}, "0"),
        ("$.n", {"n": -7}, "-7"),
        ("$.n", {"n": 1.5}, "1.5"),
        ("$.n", {"n": 12345678901234567890}, "12345678901234567890"),
        ("$.s", {"s": " padded "}, "padded"),
        ("$.s", {"s": "ünïcødé"}, "ünïcødé"),
    ],
)
def test_json_paths_that_are_present(path: str, doc: Any, expected: str) -> None:
    assert key(f"json:{path}", payload(doc)) == expected


@pytest.mark.parametrize(
    ("path", "doc"),
    [
        ("$.id", {"other": "x"}),
        ("$.id", {"id": True}),
        ("$.id", {"id": False}),
        ("$.id", {"id": None}),
        ("$.id", {"id": {"nested": "x"}}),
        ("$.id", {"id": ["x"]}),
        ("$.id", {"id": ""}),
        ("$.id", {"id": "   "}),
        ("$.id", ["not", "a", "mapping"]),
        ("$.id", "a string"),
        ("$.id", 42),
        ("$.a.b", {"a": "not a mapping"}),
        ("$.a[0]", {"a": {"0": "a mapping, not a list"}}),
        ("$.a[5]", {"a": ["only one"]}),
        ("$.a.0", {"a": ["lists have no named fields"]}),
        ("$[0]", {"0": "a mapping, not a list"}),
    ],
)
def test_json_paths_that_are_absent(path: str, doc: Any) -> None:
    assert key(f"json:{path}", payload(doc)) is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"{",
        b'{"id": "evt_1"',
        b"\xff\xfe\x00garbage",
        b'{"id": "evt_1"} trailing',
    ],
)
def test_a_body_that_is_not_json_makes_json_sources_absent(body: bytes) -> None:
    p = payload(body)
    assert key("json:$.id", p) is None
    sources = [parse_source("json:$.id"), parse_source("sha256")]
    assert resolve(sources, p) == (sha(body), KeySource("sha256"))


def test_sha256_of_the_raw_body() -> None:
    body = b'{"id":  "evt_1"}\n'  # odd spacing: the raw bytes are hashed, not re-serialised
    assert key("sha256", payload(body)) == sha(body)
    assert key("sha256", payload(b"")) == sha(b"")
    assert key("sha256", payload(b'{"id":"evt_1"}')) != key("sha256", payload(body))


def test_first_source_present_wins() -> None:
    sources = [parse_source(s) for s in ("header:X-Id", "json:$.id", "query:id", "sha256")]
    body = json.dumps({"id": "from-json"}).encode()
    both = payload(body, headers={"X-Id": "from-header"}, query={"id": "from-query"})
    assert resolve(sources, both) == ("from-header", sources[0])
    no_header = payload(body, query={"id": "from-query"})
    assert resolve(sources, no_header) == ("from-json", sources[1])
    only_query = payload(b"[]", query={"id": "from-query"})
    assert resolve(sources, only_query) == ("from-query", sources[2])
    nothing = payload(b"[]")
    assert resolve(sources, nothing) == (sha(b"[]"), sources[3])


def test_no_source_present() -> None:
    sources = [parse_source("header:X-Id"), parse_source("json:$.id")]
    assert resolve(sources, payload({"other": 1})) is None
    assert resolve([], payload({"id": "x"})) is None


# ---------------------------------------------------------------- presets


def preset_key(name: str, p: Payload) -> tuple[str, str] | None:
    found = resolve(PRESETS[name].keys, p)
    return None if found is None else (found[0], str(found[1]))


def test_preset_table() -> None:
    assert {name: [str(s) for s in p.keys] for name, p in PRESETS.items()} == {
        "stripe": ["json:$.id"],
        "github": ["header:X-GitHub-Delivery"],
        "shopify": ["header:X-Shopify-Event-Id", "header:X-Shopify-Webhook-Id"],
        "standard-webhooks": ["header:webhook-id"],
        "slack": ["json:$.event_id"],
        "generic": ["header:Idempotency-Key", "sha256"],
        "razorpay": ["header:X-Razorpay-Event-Id"],
        "twilio": ["header:I-Twilio-Idempotency-Token", "form:MessageSid", "form:CallSid"],
        "asyncqueue": ["header:X-AsyncQueue-Task-Id", "json:$.taskId"],
        "paddle": ["json:$.event_id"],
        "square": ["json:$.event_id"],
        "gitlab": ["header:Idempotency-Key", "header:X-Gitlab-Event-UUID"],
        "linear": ["header:Linear-Delivery"],
        "mailgun": ["json:$.event-data.id"],
        "zoom": ["sha256"],
        "meta": ["sha256"],
        "msgraph": ["sha256"],
        "x": ["sha256"],
        "dropbox": ["sha256"],
    }
    # Each provider signs with the scheme of its name, but the two generic ones.
    assert {name: p.signature for name, p in PRESETS.items() if p.signature != name} == {
        "generic": "hmac-sha256",
        "asyncqueue": "hmac-sha256",
    }
    assert {name: p.handshake for name, p in PRESETS.items() if p.handshake} == {
        n: n for n in ("slack", "zoom", "meta", "msgraph", "x", "dropbox")
    }


FORM = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}


def test_form_sources_read_a_form_body() -> None:
    body = b"MessageSid=SM1&Body=caf%C3%A9+%E2%98%95&MessageSid=SM2&Empty="
    p = Payload(FORM, {}, body)
    assert extract(parse_source("form:MessageSid"), p) == "SM1"  # the first value
    assert extract(parse_source("form:Body"), p) == "café ☕"
    assert extract(parse_source("form:Empty"), p) is None  # empty is no key
    assert extract(parse_source("form:Missing"), p) is None
    # Not a form: the same bytes under another type, or not UTF-8, hold no fields.
    assert extract(parse_source("form:MessageSid"), Payload({}, {}, body)) is None
    assert extract(parse_source("form:a"), Payload(FORM, {}, b"a=\xff")) is None
    many = b"&".join(b"f%d=1" % i for i in range(2000)) + b"&a=1"
    assert extract(parse_source("form:a"), Payload(FORM, {}, many)) is None


def test_twilio_preset_keys_on_the_token_then_the_sid() -> None:
    body = b"MessageSid=SM1&AccountSid=AC1"
    token = {**FORM, "I-Twilio-Idempotency-Token": "tok-1"}
    assert preset_key("twilio", Payload(token, {}, body)) == (
        "tok-1",
        "header:I-Twilio-Idempotency-Token",
    )
    assert preset_key("twilio", Payload(FORM, {}, body)) == ("SM1", "form:MessageSid")
    assert preset_key("twilio", Payload(FORM, {}, b"CallSid=CA1")) == ("CA1", "form:CallSid")


def test_stripe_preset() -> None:
    event = {"id": "evt_1NG8Du2eZvKYlo2CUI79vXWy", "object": "event", "data": {"object": {}}}
    assert preset_key("stripe", payload(event)) == ("evt_1NG8Du2eZvKYlo2CUI79vXWy", "json:$.id")
    assert preset_key("stripe", payload({"object": "event"})) is None


def test_github_preset() -> None:
    p = payload(
        {"action": "opened"}, headers={"X-GitHub-Delivery": "guid-1", "X-GitHub-Event": "x"}
    )
    assert preset_key("github", p) == ("guid-1", "header:X-GitHub-Delivery")
    assert preset_key("github", payload({"action": "opened"})) is None


def test_shopify_preset_prefers_the_event_id() -> None:
    both = payload(b"{}", headers={"X-Shopify-Webhook-Id": "wh-1", "X-Shopify-Event-Id": "ev-1"})
    assert preset_key("shopify", both) == ("ev-1", "header:X-Shopify-Event-Id")
    webhook_only = payload(b"{}", headers={"X-Shopify-Webhook-Id": "wh-1"})
    assert preset_key("shopify", webhook_only) == ("wh-1", "header:X-Shopify-Webhook-Id")
    assert preset_key("shopify", payload(b"{}")) is None


def test_standard_webhooks_preset() -> None:
    p = payload(b"{}", headers={"Webhook-Id": "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"})
    assert preset_key("standard-webhooks", p) == (
        "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
        "header:webhook-id",
    )


def test_slack_preset() -> None:
    p = payload({"type": "event_callback", "event_id": "Ev08MFMKH6", "event": {}})
    assert preset_key("slack", p) == ("Ev08MFMKH6", "json:$.event_id")
    # url_verification handshakes carry no event_id.
    assert preset_key("slack", payload({"type": "url_verification", "challenge": "c"})) is None


def test_generic_preset() -> None:
    body = b'{"anything": true}'
    with_key = payload(body, headers={"idempotency-key": "k-1"})
    assert preset_key("generic", with_key) == ("k-1", "header:Idempotency-Key")
    assert preset_key("generic", payload(body)) == (sha(body), "sha256")


# ---------------------------------------------------------------- bounds and hostile input


def test_keys_at_the_limit_are_kept() -> None:
    value = "k" * MAX_KEY_LENGTH
    assert key("header:X-Id", payload(headers={"X-Id": value})) == value


@pytest.mark.parametrize("source", ["header:X-Id", "query:id", "json:$.id"])
def test_over_long_keys_are_bounded(source: str) -> None:
    long_value = "k" * 100_000
    p = payload({"id": long_value}, headers={"X-Id": long_value}, query={"id": long_value})
    got = key(source, p)
    assert got == "sha256:" + sha(long_value.encode())
    assert len(got) <= MAX_KEY_LENGTH
    other = "k" * 99_999 + "j"
    q = payload({"id": other}, headers={"X-Id": other}, query={"id": other})
    assert key(source, q) != got  # distinct long keys stay distinct


@pytest.mark.parametrize(
    ("source", "body", "headers"),
    [
        # A \ud800 escape in JSON is a lone surrogate: no UTF-8 encoding exists.
        ("json:$.id", b'{"id": "evt_\\ud800"}', {}),
        ("json:$.id", b'{"id": "' + b"\\ud800" * 300 + b'"}', {}),
        # A non-UTF-8 header byte arrives as a surrogate escape.
        ("header:X-Id", b"", {"X-Id": "evt_\udcff"}),
        ("header:X-Id", b"", {"X-Id": "\udcff" * 300}),
    ],
)
def test_keys_that_cannot_be_encoded_are_hashed(
    source: str, body: bytes, headers: dict[str, str]
) -> None:
    got = key(source, payload(body, headers=headers))
    assert got is not None
    assert got.startswith("sha256:")
    assert len(got) == len("sha256:") + 64
    got.encode("utf-8")  # storable


@pytest.mark.parametrize(
    "value", ["evt\n1", "evt\r\nX-Injected: 1", "evt\x001", "evt\t1", "evt\x7f"]
)
def test_keys_with_control_characters_are_hashed(value: str) -> None:
    # The key goes upstream in a header, where CR, LF and NUL are forbidden.
    got = key("json:$.id", payload({"id": value}))
    assert got == "sha256:" + sha(value.encode())


def test_distinct_unencodable_keys_stay_distinct() -> None:
    a = key("json:$.id", payload(b'{"id": "x\\ud800"}'))
    b = key("json:$.id", payload(b'{"id": "x\\ud801"}'))
    assert a != b


@pytest.mark.parametrize("body", [b"[" * 100_000, b"[" * 100_000 + b"]" * 100_000])
def test_deeply_nested_json_does_not_crash(body: bytes) -> None:
    p = payload(body)
    assert key("json:$.id", p) is None
    assert key("json:$[0]", p) is None
    sources = [parse_source("json:$[0]"), parse_source("sha256")]
    assert resolve(sources, p) == (sha(body), KeySource("sha256"))


def test_huge_json_numbers_are_not_a_crash() -> None:
    body = b'{"id": ' + b"9" * 10_000 + b"}"  # past Python's int-to-str digit limit
    # Kept as its text (never converted to an int), too long to keep plain: hashed.
    found = key("json:$.id", payload(body))
    assert found is not None and found.startswith("sha256:")


def test_the_body_is_parsed_and_hashed_once() -> None:
    p = payload({"id": "x"})
    first = p.json()
    assert p.json() is first
    assert p.sha256() is p.sha256()


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (b'{"id": 1e999999}', b'{"id": 2e999999}'),  # both inf as floats
        (b'{"id": 12345678901234567890.0}', b'{"id": 12345678901234567891.0}'),  # one float
        (b'{"id": 0.1}', b'{"id": 0.10000000000000001}'),
    ],
)
def test_different_numbers_are_never_one_key(a: bytes, b: bytes) -> None:
    source = parse_source("json:$.id")
    ka = extract(source, Payload({}, {}, a))
    kb = extract(source, Payload({}, {}, b))
    assert ka is not None and kb is not None and ka != kb


def test_a_number_keys_by_the_text_it_was_sent_as() -> None:
    source = parse_source("json:$.id")
    assert extract(source, Payload({}, {}, b'{"id": 42}')) == "42"
    assert extract(source, Payload({}, {}, b'{"id": -1.50e3}')) == "-1.50e3"


@pytest.mark.parametrize("body", [b'{"id": NaN}', b'{"id": Infinity}', b'{"id": -Infinity}'])
def test_nan_and_infinity_are_no_key(body: bytes) -> None:
    assert extract(parse_source("json:$.id"), Payload({}, {}, body)) is None
