"""Config: YAML into frozen dataclasses, every mistake reported with its path."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from relay.config import (
    AckConfig,
    AdminConfig,
    AdminToken,
    Config,
    Limits,
    Listen,
    Route,
    StorageConfig,
    SyncConfig,
    Timeouts,
    VerifyConfig,
    from_mapping,
    load,
)
from relay.errors import ConfigError
from relay.keys import PRESETS, KeySource
from relay.retry import RetryPolicy

UP = "http://127.0.0.1:3000/hook"
STRIPE_SECRET = "whsec_not_a_real_stripe_secret_1234"
ADMIN_TOKEN = "admin-token-do-not-print-0123456789abcdef"
FILE_SECRET = "file-secret-never-shown-9012"


def route(**overrides: Any) -> dict[str, Any]:
    """A valid route mapping; ``None`` values remove a key."""
    doc: dict[str, Any] = {"name": "a", "path": "/a", "upstream": UP}
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def doc_with(*routes: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"routes": list(routes) or [route()], **top}


def errors_of(doc: Any, env: dict[str, str] | None = None, base: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        from_mapping(doc, env={} if env is None else env, base=base)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def one_error(doc: Any, env: dict[str, str] | None = None, base: Path | None = None) -> str:
    errors = errors_of(doc, env, base)
    assert len(errors) == 1, errors
    return errors[0]


# ---------------------------------------------------------------- one mistake each


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (doc_with(lisen="0.0.0.0:8080"), "lisen: unknown key"),
        (doc_with(storage={"urll": "sqlite:///x.db"}), "storage.urll: unknown key"),
        (doc_with(limits={"max_bdy": "1MiB"}), "limits.max_bdy: unknown key"),
        (doc_with(admin={"tokn_env": "X"}), "admin.tokn_env: unknown key"),
        (doc_with(route(), route(name="b", path="/b"), route(name="c", path="/c", retyr={})),
         "routes[2].retyr: unknown key"),
        (doc_with(route(retry={"max_attemps": 3})), "routes[0].retry.max_attemps: unknown key"),
        (doc_with(route(idempotency={"keys": ["sha256"]})), "routes[0].idempotency.keys: unknown key"),
        (doc_with(route(ack={"code": 200})), "routes[0].ack.code: unknown key"),
        (doc_with(route(timeout={"read": "5s"})), "routes[0].timeout.read: unknown key"),
        (doc_with(route(sync={"wiat": "5s"})), "routes[0].sync.wiat: unknown key"),
        (doc_with(route(preset="github", verify={"secret_env": "S", "tolerence": "5m"})),
         "routes[0].verify.tolerence: unknown key"),
        (doc_with(**{"1": "x"}), "1: unknown key"),
    ],
)  # fmt: skip
def test_unknown_keys_are_named_with_their_path(doc: dict[str, Any], message: str) -> None:
    env = {"S": "s3cret"}
    assert one_error(doc, env) == message


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (doc_with(route(), route(name="b", path="/b", retry={"max_attempts": "ten"})),
         'routes[1].retry.max_attempts: expected an integer, got "ten"'),
        (doc_with(route(retry={"max_attempts": True})),
         "routes[0].retry.max_attempts: expected an integer, got true"),
        (doc_with(route(retry={"max_attempts": 2.5})),
         "routes[0].retry.max_attempts: expected an integer, got 2.5"),
        (doc_with(route(retry={"max_attempts": 0})),
         "routes[0].retry.max_attempts: must be at least 1, got 0"),
        (doc_with(route(concurrency=5000)), "routes[0].concurrency: must be at most 4096, got 5000"),
        (doc_with(route(max_pending="many")),
         'routes[0].max_pending: expected an integer, got "many"'),
        (doc_with(route(ack={"status": 500})), "routes[0].ack.status: must be at most 299, got 500"),
        (doc_with(route(ack={"status": "202"})),
         'routes[0].ack.status: expected an integer, got "202"'),
        (doc_with(route(retry=[1, 2])), "routes[0].retry: expected a mapping, got a list"),
        (doc_with(route(ack="accepted")), 'routes[0].ack: expected a mapping, got "accepted"'),
        (doc_with(storage=["sqlite:///x.db"]), "storage: expected a mapping, got a list"),
        (doc_with(route(name=42)), "routes[0].name: expected a string, got 42"),
        (doc_with(route(revive_dead="yes please")),
         'routes[0].revive_dead: expected true or false, got "yes please"'),
        (doc_with(route(idempotency={"require_key": 1})),
         "routes[0].idempotency.require_key: expected true or false, got 1"),
        (doc_with(route(mode="async")),
         'routes[0].mode: expected one of queue, sync, hybrid, got "async"'),
        (doc_with(route(methods=["POST", 1])),
         "routes[0].methods: expected a string or a list of strings, got a list"),
        (doc_with(listen=8080), "listen: expected a string, got 8080"),
        (doc_with(listen="localhost"), 'listen: expected "host:port", got "localhost"'),
        (doc_with(listen="0.0.0.0:70000"), 'listen: expected "host:port", got "0.0.0.0:70000"'),
        (doc_with(listen="0.0.0.0:0"), 'listen: expected "host:port", got "0.0.0.0:0"'),
        # str.isdigit() takes "²" (int() does not) and Arabic-Indic digits (int() does).
        (doc_with(listen="0.0.0.0:\u00b2"), 'listen: expected "host:port", got "0.0.0.0:\\u00b2"'),
        (doc_with(admin={"listen": "127.0.0.1:\u0663\u0660"}),
         'admin.listen: expected "host:port", got "127.0.0.1:\\u0663\\u0660"'),
        (doc_with(log={"level": "verbose"}),
         'log.level: expected one of debug, info, warning, error, got "verbose"'),
        (doc_with(storage={"url": "mysql://db/relay"}),
         'storage.url: expected sqlite:///PATH or postgresql://…, got "mysql://db/relay"'),
        (doc_with(route(name="a b")),
         "routes[0].name: use letters, digits, '.', '_' or '-', got \"a b\""),
        (doc_with(route(path="a")), "routes[0].path: must start with '/', got \"a\""),
        (doc_with(route(idempotency={"header": "Idem Key"})),
         'routes[0].idempotency.header: invalid header name "Idem Key"'),
        (doc_with(route(resign=True)), "routes[0].resign: needs verify: (the secret to re-sign with)"),
        (doc_with(storage={"answer_bytes": "1MiB"}),
         "storage.answer_bytes: at most 65536 (64KiB), got 1048576"),
    ],
)  # fmt: skip
def test_wrong_types_and_values(doc: dict[str, Any], message: str) -> None:
    assert one_error(doc) == message


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("5 s", '"5 s"'),
        ("tenm", '"tenm"'),
        ("5", '"5"'),
        ("-5s", '"-5s"'),
        ("5sec", '"5sec"'),
        ("", '""'),
    ],
)
def test_bad_duration_strings(value: str, shown: str) -> None:
    assert one_error(doc_with(route(retry={"initial": value}))) == (
        f'routes[0].retry.initial: expected a duration like "500ms", "30s", "5m", "3d", got {shown}'
    )


@pytest.mark.parametrize(("value", "shown"), [(30, "30"), (1.5, "1.5"), (True, "true")])
def test_durations_are_strings_never_bare_numbers(value: object, shown: str) -> None:
    assert one_error(doc_with(storage={"dedupe_window": value})) == (
        f'storage.dedupe_window: expected a duration like "30s", got {shown}'
    )


def test_a_zero_duration_is_refused() -> None:
    assert one_error(doc_with(route(timeout={"total": "0s"}))) == (
        'routes[0].timeout.total: must be more than zero, got "0s"'
    )


@pytest.mark.parametrize("value", ["1.5MiB", "ten", "64XB", "MiB", "-1", "1 MiB extra"])
def test_bad_size_strings(value: str) -> None:
    assert one_error(doc_with(limits={"max_body": value})) == (
        f'limits.max_body: expected a size like "64KiB" or "1MiB", got "{value}"'
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, 'limits.max_body: expected a size like "1MiB", got true'),
        ([1], 'limits.max_body: expected a size like "1MiB", got a list'),
        (2.5, 'limits.max_body: expected a size like "1MiB", got 2.5'),
        (-1, "limits.max_body: must not be negative, got -1"),
    ],
)
def test_bad_size_values(value: object, message: str) -> None:
    assert one_error(doc_with(limits={"max_body": value})) == message


def test_duplicate_route_names() -> None:
    doc = doc_with(route(), route(path="/b"), route(path="/c"))
    assert errors_of(doc) == [
        'routes[1].name: "a" is already the name of routes[0]',
        'routes[2].name: "a" is already the name of routes[0]',
    ]


def test_duplicate_route_paths() -> None:
    doc = doc_with(route(), route(name="b", path="/b"), route(name="c", path="/b"))
    assert one_error(doc) == 'routes[2].path: "/b" is already the path of routes[1]'


def test_a_secret_env_var_that_is_unset() -> None:
    doc = doc_with(route(preset="stripe", verify={"secret_env": "STRIPE_WEBHOOK_SECRET"}))
    expected = "routes[0].verify.secret_env: environment variable STRIPE_WEBHOOK_SECRET is not set"
    assert one_error(doc, env={}) == expected
    assert one_error(doc, env={"STRIPE_WEBHOOK_SECRET": "  "}) == expected


def test_the_admin_token_env_var_unset() -> None:
    doc = doc_with(admin={"token_env": "RELAY_ADMIN_TOKEN"})
    assert one_error(doc) == "admin.token_env: environment variable RELAY_ADMIN_TOKEN is not set"


@pytest.mark.parametrize("key", ["secret", "secrets"])
def test_inline_secrets_are_refused_without_echoing_them(key: str) -> None:
    doc = doc_with(route(preset="github", verify={key: STRIPE_SECRET}))
    errors = errors_of(doc)
    assert errors == [
        f"routes[0].verify.{key}: secrets are never inline: use secret_env, secret_file or secret_credential",
        "routes[0].verify: needs secret_env, secret_file or secret_credential",
    ]
    assert STRIPE_SECRET not in "\n".join(errors)


def test_verify_without_any_secret() -> None:
    doc = doc_with(route(preset="github", verify={"tolerance": "5m"}))
    assert one_error(doc) == "routes[0].verify: needs secret_env, secret_file or secret_credential"


def test_verify_without_preset_needs_a_scheme() -> None:
    doc = doc_with(route(verify={"secret_env": "S"}))
    assert one_error(doc, env={"S": "x"}) == (
        "routes[0].verify.scheme: required when the route has no preset "
        "(one of stripe, github, shopify, slack, standard-webhooks, hmac-sha256, razorpay,"
        " twilio, paddle, square, gitlab, linear, zoom, meta, mailgun, msgraph, x, dropbox)"
    )


def test_a_missing_secret_file(tmp_path: Path) -> None:
    doc = doc_with(route(preset="github", verify={"secret_file": "missing.txt"}))
    assert one_error(doc, base=tmp_path) == (
        "routes[0].verify.secret_file: cannot read missing.txt: No such file or directory"
    )


def test_an_empty_secret_file(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("\n")
    doc = doc_with(route(preset="github", verify={"secret_file": "empty.txt"}))
    assert one_error(doc, base=tmp_path) == "routes[0].verify.secret_file: empty.txt is empty"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("ftp://example.com/hook", '"ftp://example.com/hook"'),
        ("127.0.0.1:3000/hook", '"127.0.0.1:3000/hook"'),
        ("http:///no-host", '"http:///no-host"'),
        ("http://[::1/hook", '"http://[::1/hook"'),  # unclosed IPv6 literal
        ("http://example.com:port/hook", '"http://example.com:port/hook"'),
        ("", '""'),
    ],
)
def test_bad_upstream_url(url: str, shown: str) -> None:
    assert one_error(doc_with(route(upstream=url))) == (
        f"routes[0].upstream: expected an http:// or https:// URL, got {shown}"
    )


def test_bad_url_in_upstreams_names_its_index() -> None:
    doc = doc_with(route(upstream=None, upstreams=["http://a/", 7]))
    assert one_error(doc) == "routes[0].upstreams[1]: expected a URL, got 7"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            [],
            "routes[0].upstreams: expected a non-empty list of URLs (or upstream objects), got an empty list",
        ),
        (
            "http://a/",
            "routes[0].upstreams: expected a non-empty list of URLs (or upstream objects),"
            ' got "http://a/"',
        ),
        (
            ["http://a/", "http://a/"],
            "routes[0].upstreams: lists the same URL twice (upstreams and alternates together)",
        ),
    ],
)
def test_bad_upstreams_list(value: object, message: str) -> None:
    assert one_error(doc_with(route(upstream=None, upstreams=value))) == message


def test_no_upstream_at_all() -> None:
    assert (
        one_error(doc_with(route(upstream=None))) == "routes[0].upstream: required (or upstreams)"
    )


def test_both_upstream_and_upstreams() -> None:
    doc = doc_with(route(upstreams=["http://b/"]))
    # Reported once, not a second time as "upstreams: unknown key".
    assert one_error(doc) == "routes[0].upstreams: give upstream or upstreams, not both"


def test_sync_mode_with_two_upstreams() -> None:
    doc = doc_with(route(upstream=None, mode="sync", upstreams=["http://a/", "http://b/"]))
    assert one_error(doc) == "routes[0].upstreams: sync mode forwards to exactly one upstream"


def test_queue_mode_may_fan_out() -> None:
    cfg = from_mapping(doc_with(route(upstream=None, upstreams=["http://a/", "http://b/"])), env={})
    assert cfg.routes[0].upstreams == ("http://a/", "http://b/")


@pytest.mark.parametrize(
    ("timeout", "lease"),
    [({}, "30s"), ({}, "10s"), ({"total": "2m"}, "90s"), ({"total": "2m"}, "2m")],
)
def test_sync_lease_must_outlast_the_request_timeout(timeout: dict[str, str], lease: str) -> None:
    doc = doc_with(route(mode="sync", timeout=timeout, sync={"lease": lease}))
    assert one_error(doc) == (
        "routes[0].sync.lease: must be longer than timeout.total, "
        "or a live request could be taken over"
    )


def test_sync_lease_default_follows_a_long_timeout() -> None:
    cfg = from_mapping(doc_with(route(mode="sync", timeout={"total": "2m"})), env={})
    assert cfg.routes[0].sync.lease == 150.0
    assert cfg.routes[0].timeout == Timeouts(connect=5.0, total=120.0)


@pytest.mark.parametrize(
    ("listen", "shown"),
    [
        ("0.0.0.0:9090", "0.0.0.0:9090"),
        (":9090", "0.0.0.0:9090"),
        ("[::]:9090", "[::]:9090"),
        ("10.1.2.3:9090", "10.1.2.3:9090"),
        ("relay.internal:9090", "relay.internal:9090"),
    ],
)
def test_admin_beyond_loopback_needs_a_token(listen: str, shown: str) -> None:
    assert one_error(doc_with(admin={"listen": listen})) == (
        f"admin: listens on {shown}, beyond loopback: set token_env, token_file or tokens"
    )


@pytest.mark.parametrize("listen", ["127.0.0.1:9090", "localhost:9191", "[::1]:9090"])
def test_admin_on_loopback_needs_no_token(listen: str) -> None:
    cfg = from_mapping(doc_with(admin={"listen": listen}), env={})
    assert cfg.admin.listen.loopback_only
    assert cfg.admin.tokens == () and not cfg.admin.token_required


def test_admin_beyond_loopback_with_a_token() -> None:
    doc = doc_with(admin={"listen": "0.0.0.0:9090", "token_env": "RELAY_ADMIN_TOKEN"})
    cfg = from_mapping(doc, env={"RELAY_ADMIN_TOKEN": ADMIN_TOKEN})
    assert cfg.admin == AdminConfig(
        Listen("0.0.0.0", 9090), tokens=(AdminToken("admin_token", "operate", ADMIN_TOKEN),)
    )


def test_admin_token_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(ADMIN_TOKEN + "\n")
    doc = doc_with(admin={"listen": "[::]:9090", "token_file": "token"})
    cfg = from_mapping(doc, env={}, base=tmp_path)
    assert [t.secret for t in cfg.admin.tokens] == [ADMIN_TOKEN]
    assert cfg.admin.listen == Listen("::", 9090)
    assert str(cfg.admin.listen) == "[::]:9090"


def test_unknown_preset() -> None:
    assert one_error(doc_with(route(preset="strip"))) == (
        "routes[0].preset: expected one of stripe, github, shopify, standard-webhooks, "
        "slack, generic, razorpay, twilio, asyncqueue, paddle, square, gitlab, linear, "
        'mailgun, zoom, meta, msgraph, x, dropbox, got "strip"'
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("jsn:$.id", 'unknown key source "jsn" (expected header, json, query, form or sha256)'),
        (
            "header:",
            'expected header:NAME, json:PATH, query:NAME, form:NAME or sha256, got "header:"',
        ),
        ("id", 'expected header:NAME, json:PATH, query:NAME, form:NAME or sha256, got "id"'),
        ("header:X Key", 'invalid header name "X Key"'),
        ("json:id", "JSON path must start with '$', got 'id'"),
        ("json:$", "JSON path '$' names no field"),
    ],
)
def test_bad_key_source(source: str, message: str) -> None:
    doc = doc_with(route(idempotency={"key": ["sha256", source]}))
    assert one_error(doc) == f"routes[0].idempotency.key[1]: {message}"


@pytest.mark.parametrize(
    ("path", "text", "message"),
    [
        ("bad.yaml", "routes:\n  - name: a\n    path: /a\n   upstream: x\n",
         "expected <block end>, but found '<block mapping start>' (line 4, column 4)"),
        ("bad.yaml", "listen: a: b\n", "mapping values are not allowed here (line 1, column 10)"),
        ("bad.yaml", "routes:\n\t- name: a\n",
         "found character '\\t' that cannot start any token (line 2, column 1)"),
        ("bad.yaml", "routes: [\n", "expected the node content, but found '<stream end>' (line 2, column 1)"),
        ("bad.yaml", "x: !!python/object/apply:os.system [echo]\n",
         "could not determine a constructor for the tag "
         "'tag:yaml.org,2002:python/object/apply:os.system' (line 1, column 4)"),
    ],
)  # fmt: skip
def test_invalid_yaml_names_line_and_column(
    tmp_path: Path, path: str, text: str, message: str
) -> None:
    file = tmp_path / path
    file.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(file, env={})
    assert info.value.errors == [f"{file}: {message}"]


def test_a_key_given_twice_is_an_error(tmp_path: Path) -> None:
    file = tmp_path / "relay.yaml"
    file.write_text(
        "routes:\n"
        "  - name: a\n"
        "    path: /a\n"
        "    upstream: http://x/\n"
        "    retry: {max_attempts: 3}\n"
        "    retry: {max_attempts: 4}\n"
    )
    with pytest.raises(ConfigError) as info:
        load(file, env={})
    assert info.value.errors == [f'{file}: duplicate key "retry" (line 6, column 5)']


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    file = tmp_path / "relay.yaml"
    file.write_text(
        "routes:\n"
        "  - &base\n"
        "    name: a\n"
        "    path: /a\n"
        "    upstream: http://x/\n"
        "  - <<: *base\n"
        "    name: b\n"
        "    path: /b\n"
    )
    cfg = load(file, env={})
    assert [(r.name, r.path, r.upstreams) for r in cfg.routes] == [
        ("a", "/a", ("http://x/",)),
        ("b", "/b", ("http://x/",)),
    ]


def test_absurdly_nested_yaml_is_an_error_not_a_crash(tmp_path: Path) -> None:
    file = tmp_path / "deep.yaml"
    file.write_text("routes: " + "[" * 1_000)
    with pytest.raises(ConfigError) as info:
        load(file, env={})
    assert info.value.errors == [f"{file}: invalid YAML: nested too deeply"]


def test_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "nope.yaml", env={})
    assert info.value.errors == [
        f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory"
    ]


@pytest.mark.parametrize(
    ("doc", "errors"),
    [
        ({}, ["routes: required"]),
        (None, ["routes: required"]),
        ({"routes": None}, ["routes: expected a non-empty list of routes, got null"]),
        ({"routes": []}, ["routes: expected a non-empty list of routes, got an empty list"]),
        ({"routes": {"name": "a"}}, ["routes: expected a non-empty list of routes, got a mapping"]),
        ([route()], ["(top level): expected a mapping, got a list", "routes: required"]),
    ],
)
def test_routes_missing_or_empty(doc: Any, errors: list[str]) -> None:
    assert errors_of(doc) == errors


def test_an_empty_file_has_no_routes(tmp_path: Path) -> None:
    file = tmp_path / "empty.yaml"
    file.write_text("# nothing yet\n")
    with pytest.raises(ConfigError) as info:
        load(file, env={})
    assert info.value.errors == ["routes: required"]


def test_a_route_that_is_not_a_mapping() -> None:
    assert errors_of({"routes": ["/a"]}) == [
        'routes[0]: expected a mapping, got "/a"',
        "routes[0].name: required",
        "routes[0].path: required",
        "routes[0].upstream: required (or upstreams)",
    ]


# ---------------------------------------------------------------- all at once


def test_every_mistake_in_a_file_is_reported_at_once(tmp_path: Path) -> None:
    file = tmp_path / "relay.yaml"
    file.write_text(
        """\
listen: "0.0.0.0:8080"
admin: {listen: "0.0.0.0:9090"}
storage: {url: "sqlite:///relay.db", dedupe_window: 7}
limits: {max_body: "1 MB please"}
routes:
  - name: stripe
    path: /webhooks/stripe
    upstream: http://127.0.0.1:3000/stripe
    preset: stripe
    verify: {secret_env: STRIPE_WEBHOOK_SECRET}
    retry: {max_attempts: ten}
  - name: stripe
    path: /webhooks/github
    upstreams: [http://a/, http://b/]
    mode: sync
    retyr: {}
  - path: /nameless
    upstream: http://127.0.0.1:3000/x
    concurency: 4
"""
    )
    with pytest.raises(ConfigError) as info:
        load(file, env={})
    assert info.value.errors == [
        "admin: listens on 0.0.0.0:9090, beyond loopback: set token_env, token_file or tokens",
        'storage.dedupe_window: expected a duration like "30s", got 7',
        'limits.max_body: expected a size like "64KiB" or "1MiB", got "1 MB please"',
        "routes[0].verify.secret_env: environment variable STRIPE_WEBHOOK_SECRET is not set",
        'routes[0].retry.max_attempts: expected an integer, got "ten"',
        "routes[1].upstreams: sync mode forwards to exactly one upstream",
        "routes[1].retyr: unknown key",
        "routes[2].name: required",
        "routes[2].concurency: unknown key",
        'routes[1].name: "stripe" is already the name of routes[0]',
    ]


def test_a_route_without_a_name_still_has_its_other_mistakes_reported() -> None:
    doc = doc_with(route(name=None, path="x", retyr={}, retry={"max_age": "forever"}))
    assert errors_of(doc) == [
        "routes[0].name: required",
        "routes[0].path: must start with '/', got \"x\"",
        'routes[0].retry.max_age: expected a duration like "500ms", "30s", "5m", "3d", '
        'got "forever"',
        "routes[0].retyr: unknown key",
    ]


# ---------------------------------------------------------------- a valid config


FULL = """\
listen: "0.0.0.0:8080"
admin:
  listen: "127.0.0.1:9090"
  token_env: RELAY_ADMIN_TOKEN
storage:
  url: "sqlite:///var/lib/webhook-relay/relay.db"
  dedupe_window: 7d
limits: {max_body: 1MiB, header_timeout: 10s, body_timeout: 30s}
routes:
  - name: stripe
    path: /webhooks/stripe
    upstream: http://127.0.0.1:3000/stripe/webhook
    mode: queue
    ack: {status: 202}
    preset: stripe
    verify: {secret_env: STRIPE_WEBHOOK_SECRET, tolerance: 5m}
    retry: {max_attempts: 25, max_age: 3d, initial: 1s, max: 1h}
    concurrency: 16
    max_pending: 100000
  - name: github
    path: /webhooks/github
    upstreams: [http://127.0.0.1:3000/gh, https://backup.example/gh]
    preset: github
    methods: [post, put]
    ack: {status: 200, body: "ok", content_type: text/plain}
    verify: {secret_file: github.secret}
    retry: {initial: 500ms, max: 90s, max_age: 1.5h}
    idempotency: {require_key: true, on_payload_mismatch: reject, header: X-Relay-Key}
  - name: internal
    path: /hooks/internal
    upstream: http://127.0.0.1:4000/in?src=relay
    mode: sync
    preset: generic
    verify: {secret_env: [INTERNAL_OLD, INTERNAL_NEW], prefix: "sha256=", encoding: base64}
    idempotency: {key: ["header:X-Request-Id", "json:$.data[0].id", "sha256"]}
    timeout: {connect: 2s, total: 20s}
    sync: {wait: 10s, lease: 1m, max_stored_body: 64KiB}
  - name: plain
    path: /hooks/plain
    upstream: https://example.com/plain
"""

ENV = {
    "RELAY_ADMIN_TOKEN": ADMIN_TOKEN,
    "STRIPE_WEBHOOK_SECRET": STRIPE_SECRET,
    "INTERNAL_OLD": "old-internal-secret-3456",
    "INTERNAL_NEW": "new-internal-secret-7890",
}


@pytest.fixture
def full(tmp_path: Path) -> Config:
    (tmp_path / "github.secret").write_text(FILE_SECRET + "\n")
    file = tmp_path / "relay.yaml"
    file.write_text(FULL)
    return load(file, env=ENV)


def test_the_full_example_parses(full: Config) -> None:
    generic_keys = (KeySource("header", "Idempotency-Key"), KeySource("sha256"))
    assert full == Config(
        listen=Listen("0.0.0.0", 8080),
        admin=AdminConfig(
            Listen("127.0.0.1", 9090), tokens=(AdminToken("admin_token", "operate", ADMIN_TOKEN),)
        ),
        storage=StorageConfig(
            url="sqlite:///var/lib/webhook-relay/relay.db", dedupe_window=604800.0
        ),
        limits=Limits(max_body=1048576, header_timeout=10.0, body_timeout=30.0),
        routes=(
            Route(
                name="stripe",
                path="/webhooks/stripe",
                upstreams=("http://127.0.0.1:3000/stripe/webhook",),
                preset="stripe",
                keys=(KeySource("json", "$.id", ("id",)),),
                verify=VerifyConfig("stripe", (STRIPE_SECRET,), tolerance=300.0),
                retry=RetryPolicy(max_attempts=25, max_age=259200.0, initial=1.0, max=3600.0),
            ),
            Route(
                name="github",
                path="/webhooks/github",
                upstreams=("http://127.0.0.1:3000/gh", "https://backup.example/gh"),
                methods=("POST", "PUT"),
                preset="github",
                keys=(KeySource("header", "X-GitHub-Delivery"),),
                require_key=True,
                on_payload_mismatch="reject",
                key_header="X-Relay-Key",
                ack=AckConfig(status=200, body="ok", content_type="text/plain"),
                verify=VerifyConfig("github", (FILE_SECRET,)),
                retry=RetryPolicy(max_attempts=25, max_age=5400.0, initial=0.5, max=90.0),
            ),
            Route(
                name="internal",
                path="/hooks/internal",
                upstreams=("http://127.0.0.1:4000/in?src=relay",),
                mode="sync",
                preset="generic",
                keys=(
                    KeySource("header", "X-Request-Id"),
                    KeySource("json", "$.data[0].id", ("data", 0, "id")),
                    KeySource("sha256"),
                ),
                verify=VerifyConfig(
                    "hmac-sha256",
                    ("old-internal-secret-3456", "new-internal-secret-7890"),
                    header="X-Signature",
                    encoding="base64",
                    prefix="sha256=",
                ),
                timeout=Timeouts(connect=2.0, total=20.0),
                sync=SyncConfig(wait=10.0, lease=60.0, max_stored_body=65536),
            ),
            Route(
                name="plain",
                path="/hooks/plain",
                upstreams=("https://example.com/plain",),
                keys=generic_keys,
            ),
        ),
    )


def test_defaults(full: Config) -> None:
    plain = full.routes[3]
    assert plain.mode == "queue"
    assert plain.methods == ("POST",)
    assert plain.preset is None
    assert plain.keys == (KeySource("header", "Idempotency-Key"), KeySource("sha256"))
    assert plain.require_key is False
    assert plain.on_payload_mismatch == "accept"
    assert plain.key_header == "Idempotency-Key"
    assert plain.ack == AckConfig(status=202, body=None, content_type="application/json")
    assert plain.verify is None
    assert plain.resign is False
    assert plain.retry == RetryPolicy(max_attempts=25, max_age=3 * 86400.0, initial=1.0, max=3600.0)
    assert plain.timeout == Timeouts(connect=5.0, total=30.0)
    assert plain.concurrency == 16
    assert plain.max_pending == 100_000
    assert plain.revive_dead is True
    assert plain.sync == SyncConfig(wait=30.0, lease=60.0, max_stored_body=1048576)
    assert full.log.level == "info"
    assert full.shutdown_grace == 25.0
    assert full.drain_delay == 5.0
    assert full.storage.dead_retention == 30 * 86400.0
    assert full.limits.max_connections == 1024


def test_the_smallest_config() -> None:
    cfg = from_mapping({"routes": [route()]}, env={})
    assert cfg == Config(routes=(Route(name="a", path="/a", upstreams=(UP,)),))
    assert cfg.listen == Listen("0.0.0.0", 8080)
    assert cfg.admin == AdminConfig(Listen("127.0.0.1", 9090))
    assert cfg.storage.url == "sqlite:///data/relay.db"
    assert cfg.limits.max_body == 1024 * 1024


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_preset_sets_keys_and_verify_scheme(preset: str) -> None:
    extra = {"handshake": {"verify_token_env": "T"}} if preset == "meta" else {}
    doc = doc_with(route(preset=preset, verify={"secret_env": "S"}, **extra))
    r = from_mapping(doc, env={"S": "secret", "T": "token"}).routes[0]
    assert r.keys == PRESETS[preset].keys
    assert r.verify is not None
    assert r.verify.scheme == PRESETS[preset].signature
    handshake = PRESETS[preset].handshake
    assert (r.handshake and r.handshake.provider) == handshake


def test_handshake_settings_are_checked() -> None:
    meta = doc_with(route(preset="meta", verify={"secret_env": "S"}))
    assert one_error(meta, env={"S": "s"}).startswith(
        "routes[0].handshake: meta's subscription check sends hub.verify_token"
    )
    token = {"handshake": {"verify_token_env": "T"}}
    doc = doc_with(route(preset="slack", verify={"secret_env": "S"}, **token))
    assert one_error(doc, env={"S": "s", "T": "t"}) == (
        "routes[0].handshake: only the meta preset's subscription check takes a verify token"
    )
    assert one_error(doc_with(route(preset="zoom"))) == (
        "routes[0].verify: zoom answers its URL check with the verify secret: add verify:"
    )
    ok = doc_with(route(preset="meta", verify={"secret_env": "S"}, **token))
    r = from_mapping(ok, env={"S": "s", "T": " tok \n"}).routes[0]
    assert r.handshake is not None and r.handshake.verify_tokens == ("tok",)
    assert "tok" not in repr(r)


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("ftp://a/b", 'expected an http(s) URL, got "ftp://a/b"'),
        ("https:///b", 'expected an http(s) URL, got "https:///b"'),
        ("https://a:x/b", 'expected an http(s) URL, got "https://a:x/b"'),
        ("https://a/b?x=1", "takes no query: the one each request carries is appended"),
    ],
)
def test_public_url_is_checked(url: str, error: str) -> None:
    doc = doc_with(route(preset="twilio", verify={"secret_env": "S"}, public_url=url))
    assert one_error(doc, env={"S": "s"}) == f"routes[0].public_url: {error}"


def test_url_signed_scheme_without_public_url_is_warned_about() -> None:
    doc = doc_with(route(preset="square", verify={"secret_env": "S"}))
    (warning,) = from_mapping(doc, env={"S": "s"}).warnings()
    assert "square signs the URL the sender called; without public_url" in warning
    doc = doc_with(route(preset="square", verify={"secret_env": "S"}, public_url="https://a/h"))
    assert from_mapping(doc, env={"S": "s"}).warnings() == ()


@pytest.mark.parametrize("preset", ["twilio", "square", "gitlab", "mailgun", "msgraph", "linear"])
def test_resign_needs_a_scheme_that_can_be_re_signed(preset: str) -> None:
    doc = doc_with(route(preset=preset, verify={"secret_env": "S"}, resign=True))
    assert one_error(doc, env={"S": "s"}) == (
        f"routes[0].resign: {preset} signatures cannot be re-signed (see the README)"
    )


def test_explicit_keys_override_the_preset() -> None:
    doc = doc_with(route(preset="stripe", idempotency={"key": "header:X-Id"}))
    assert from_mapping(doc, env={}).routes[0].keys == (KeySource("header", "X-Id"),)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1.5h", 5400.0),
        ("3d", 259200.0),
        ("2w", 1209600.0),
        (" 10s ", 10.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    cfg = from_mapping(doc_with(storage={"dedupe_window": text}), env={})
    assert cfg.storage.dedupe_window == seconds


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("64KiB", 65536),
        ("1MiB", 1048576),
        ("2GiB", 2 * 1024**3),
        ("10KB", 10_000),
        ("1MB", 1_000_000),
        ("512", 512),
        ("512B", 512),
        (4096, 4096),
        (0, 0),
    ],
)
def test_sizes(value: object, size: int) -> None:
    cfg = from_mapping(doc_with(limits={"max_body": value}), env={})
    assert cfg.limits.max_body == size


def test_secret_file_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "gh.secret").write_text(FILE_SECRET)
    file = tmp_path / "conf" / "relay.yaml"
    file.write_text(
        "routes:\n  - {name: a, path: /a, upstream: 'http://x/', preset: github,"
        " verify: {secret_file: gh.secret}}\n"
    )
    verify = load(file, env={}).routes[0].verify
    assert verify is not None
    assert verify.secrets == (FILE_SECRET,)


def test_the_config_is_frozen(full: Config) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.routes[0].name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        full.admin.tokens = ()  # type: ignore[misc]
    assert isinstance(full.routes, tuple)
    assert isinstance(full.routes[0].upstreams, tuple)


def test_secrets_never_appear_in_repr(full: Config) -> None:
    shown = repr(full) + str(full) + repr(full.routes) + repr(full.admin)
    shown += "".join(repr(r.verify) for r in full.routes)
    for secret in (*ENV.values(), FILE_SECRET):
        assert secret not in shown
    # ...while the values themselves are there for the code that needs them.
    assert full.admin.holder(ADMIN_TOKEN) is not None
    assert full.routes[0].verify is not None
    assert full.routes[0].verify.secrets == (STRIPE_SECRET,)


def test_credentials_in_an_upstream_url_are_refused() -> None:
    msg = one_error(doc_with(route(upstream="http://user:hunter2@127.0.0.1:3000/x")))
    assert (
        msg == "routes[0].upstream: credentials in the URL are not allowed (they would be logged):"
        " use basic_auth"
    )
    assert "hunter2" not in msg


def test_sync_lease_bound_applies_to_sync_routes_only() -> None:
    lease = {"timeout": {"total": "90s"}, "sync": {"lease": "60s"}}
    assert from_mapping(doc_with(route(**lease)), env={}).routes[0].timeout.total == 90
    assert errors_of(doc_with(route(mode="sync", **lease))) == [
        "routes[0].sync.lease: must be longer than timeout.total, or a live request could be taken over"
    ]


def test_answer_bytes_default_and_off() -> None:
    assert from_mapping(doc_with(), env={}).storage.answer_bytes == 1024
    assert from_mapping(doc_with(storage={"answer_bytes": 0}), env={}).storage.answer_bytes == 0


def _run(code: str) -> str:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_tracing_switched_on_without_the_extra_is_a_clear_config_error() -> None:
    # The extra made unimportable in a process of its own, as on a machine without it.
    out = _run(
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from relay.config import from_mapping\n"
        "from relay.errors import ConfigError\n"
        "doc = {'routes': [{'name': 'a', 'path': '/a', 'upstream': 'http://127.0.0.1:1/'}],"
        " 'tracing': {'enabled': True}}\n"
        "try:\n    from_mapping(doc, env={})\nexcept ConfigError as e:\n    print(e)\n"
    )
    assert out == (
        "tracing.enabled: tracing needs the otel extra in the relay's venv:"
        " pip install '.[otel]' from a checkout, or 'dist/WHEEL[otel]'"
    )


def test_tracing_off_imports_nothing_of_opentelemetry() -> None:
    out = _run(
        "import sys, asyncio\n"
        "from relay.config import from_mapping\n"
        "from relay.serve import single_process_app\n"
        "from relay.store.sqlite import SQLiteStore\n"
        "import relay.workers.worker, relay.cli.main\n"
        "doc = {'routes': [{'name': 'a', 'path': '/a', 'upstream': 'http://127.0.0.1:1/'}]}\n"
        "cfg = from_mapping(doc, env={})\n"
        "assert not cfg.tracing.enabled\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'relay.tracing.otel'))))\n"
    )
    assert out == "[]"


def test_tracing_settings() -> None:
    cfg = from_mapping(doc_with(tracing={"enabled": True, "trust_incoming": True}), env={})
    assert (cfg.tracing.enabled, cfg.tracing.trust_incoming) == (True, True)
    assert one_error(doc_with(tracing={"sample": 1})).startswith("tracing.sample: unknown key")


def test_scoped_tokens_with_roles_from_env_file_and_credential(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "ops-token").write_text("c" * 40 + "\n")
    (tmp_path / "read.token").write_text("f" * 40)
    doc = doc_with(
        admin={
            "listen": "0.0.0.0:9090",
            "allowed_hosts": ["Relay-1.internal."],
            "token_env": "RELAY_ADMIN_TOKEN",
            "tokens": [
                {"label": "grafana", "role": "read", "token_file": "read.token"},
                {"label": "oncall", "role": "operate", "token_credential": "ops-token"},
            ],
        }
    )
    env = {"RELAY_ADMIN_TOKEN": ADMIN_TOKEN, "CREDENTIALS_DIRECTORY": str(creds)}
    admin = from_mapping(doc, env=env, base=tmp_path).admin
    assert [(t.label, t.role) for t in admin.tokens] == [
        ("admin_token", "operate"),
        ("grafana", "read"),
        ("oncall", "operate"),
    ]
    assert admin.allowed_hosts == ("relay-1.internal",)
    holder = admin.holder("c" * 40)
    assert holder is not None and holder.label == "oncall" and holder.operates
    assert admin.holder("c" * 39) is None
    assert "c" * 40 not in repr(admin)


@pytest.mark.parametrize(
    ("admin", "env", "error"),
    [
        (
            {"listen": "0.0.0.0:9090", "token_env": "T"},
            {"T": "short"},
            "admin: token 'admin_token' has 5 characters; a listener beyond loopback wants"
            " at least 32 (`webhook-relay token` prints a new one)",
        ),
        (
            {"tokens": [{"label": "a b", "role": "read", "token_env": "T"}]},
            {"T": "x" * 32},
            'admin.tokens[0].label: expected letters, digits, _ or - (at most 40), got "a b"',
        ),
        (
            {"tokens": [{"label": "a", "role": "admin", "token_env": "T"}]},
            {"T": "x" * 32},
            "admin.tokens[0].role:",
        ),
        (
            {"tokens": [{"label": "a", "role": "read"}]},
            {},
            "admin.tokens[0]: needs exactly one of token_env, token_file, token_credential",
        ),
        (
            {"tokens": [{"label": "a", "token_credential": "t"}]},
            {},
            "admin.tokens[0].token_credential: credential t: $CREDENTIALS_DIRECTORY is not set",
        ),
        (
            {"tokens": [{"label": "a", "token_credential": "../etc/passwd"}]},
            {"CREDENTIALS_DIRECTORY": "/run/credentials/x"},
            "admin.tokens[0].token_credential: expected a credential's name",
        ),
        (
            {"tokens": [{"label": "a", "token_env": "T"}, {"label": "a", "token_env": "U"}]},
            {"T": "x" * 32, "U": "y" * 32},
            "admin.tokens: label 'a' is used twice",
        ),
        (
            {"allowed_hosts": ["relay:9090"]},
            {},
            'admin.allowed_hosts[0]: expected a host name without a port, got "relay:9090"',
        ),
    ],
)
def test_admin_token_mistakes_are_named(
    admin: dict[str, Any], env: dict[str, str], error: str
) -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping(doc_with(admin=admin), env=env)
    assert any(e.startswith(error) for e in info.value.errors), info.value.errors


def test_trusted_proxies_are_networks() -> None:
    cfg = from_mapping(doc_with(trusted_proxies=["10.0.0.0/8", "127.0.0.1", "::1"]), env={})
    assert [str(n) for n in cfg.trusted_proxies] == ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]
    assert from_mapping(doc_with(), env={}).trusted_proxies == ()  # nobody by default
    assert one_error(doc_with(trusted_proxies=["10.0.0.1/8"])).startswith(
        'trusted_proxies: "10.0.0.1/8" is not an address or a network like 10.0.0.0/8'
    )
    assert "trusted_proxies" in one_error(doc_with(trusted_proxies=["lb.internal"]))


def test_max_header_bytes() -> None:
    assert from_mapping(doc_with(), env={}).limits.max_header_bytes == 64 * 1024
    assert (
        from_mapping(doc_with(limits={"max_header_bytes": "16KiB"}), env={}).limits.max_header_bytes
        == 16384
    )
    assert one_error(doc_with(limits={"max_header_bytes": 100})).startswith(
        "limits.max_header_bytes: at least 1024"
    )


def test_drain_delay_and_the_readiness_path() -> None:
    assert from_mapping(doc_with(drain_delay="0s"), env={}).drain_delay == 0.0
    assert from_mapping(doc_with(drain_delay="12s"), env={}).drain_delay == 12.0
    assert one_error(doc_with(route(path="/readyz"))) == (
        "routes[0].path: /readyz is the readiness probe load balancers call here"
    )


def test_the_database_url_from_a_file_a_variable_or_a_credential(tmp_path: Path) -> None:
    url = "postgresql://relay:s3cret-pw@db.internal:5432/relay"
    (tmp_path / "db-url").write_text(url + "\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "relay-db").write_text(url)
    for storage, env in (
        ({"url_file": "db-url"}, {}),
        ({"url_env": "DB_URL"}, {"DB_URL": url}),
        ({"url_credential": "relay-db"}, {"CREDENTIALS_DIRECTORY": str(creds)}),
    ):
        cfg = from_mapping(doc_with(storage=storage), env=env, base=tmp_path)
        assert cfg.storage.url == url
        assert "s3cret-pw" not in repr(cfg)
    both = doc_with(storage={"url": "sqlite:///x.db", "url_env": "DB_URL"})
    assert one_error(both, env={"DB_URL": url}) == (
        "storage.url_env: give one of url, url_env, url_file or url_credential, not url too"
    )
    assert one_error(doc_with(storage={"url_env": "NOPE"})) == (
        "storage.url_env: environment variable NOPE is not set"
    )


def test_allow_from_and_ingress_rate() -> None:
    from relay.config.types import IngressRate

    doc = doc_with(
        route(allow_from=["3.18.12.63/32", "2001:db8::/32"], ingress_rate="100/s"),
    )
    r = from_mapping(doc, env={}).routes[0]
    assert [str(n) for n in r.allow_from] == ["3.18.12.63/32", "2001:db8::/32"]
    assert r.ingress_rate == IngressRate(100.0, 10, "route")
    per = doc_with(route(ingress_rate={"rate": "30/m", "burst": 5, "per": "source"}))
    assert from_mapping(per, env={}).routes[0].ingress_rate == IngressRate(0.5, 5, "source")
    assert one_error(doc_with(route(allow_from=["300.1.1.1/8"]))).startswith(
        'routes[0].allow_from: "300.1.1.1/8" is not an address or a network like 10.0.0.0/8'
    )
    assert one_error(doc_with(route(ingress_rate={"rate": "5/s", "per": "host"}))) == (
        'routes[0].ingress_rate.per: expected one of route, source, got "host"'
    )
    assert one_error(doc_with(route(ingress_rate="fast"))) == (
        'routes[0].ingress_rate: expected a rate like "200/s" or "30/m", got "fast"'
    )
