"""Upstreams as objects: auth from secret sources, TLS files checked at load, names
for alternates, and mistakes named by their path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trustme

from relay.config import Upstream, from_mapping
from relay.errors import ConfigError
from relay.runtime import RouteRuntime

UP = "https://erp.internal/hooks"


def doc(upstream: Any, **route: Any) -> dict[str, Any]:
    return {"routes": [{"name": "erp", "path": "/erp", "upstream": upstream, **route}]}


def errors(
    document: dict[str, Any], tmp_path: Path, env: dict[str, str] | None = None
) -> list[str]:
    with pytest.raises(ConfigError) as info:
        from_mapping(document, env=env or {}, base=tmp_path)
    return list(info.value.errors)


def test_headers_basic_auth_and_bearer_come_from_secret_sources(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("pa:ss wörd\n")
    cfg = from_mapping(
        doc(
            {
                "url": UP,
                "name": "erp",
                "headers": {"X-Api-Key": {"value_env": "KEY"}},
                "basic_auth": {"user": "relay", "password_file": "pw"},
            }
        ),
        env={"KEY": "k1"},
        base=tmp_path,
    )
    (r,) = cfg.routes
    assert r.upstreams == (UP,)
    (up,) = r.endpoints
    assert up.name == "erp"
    assert dict(up.headers) == {
        "X-Api-Key": "k1",
        "Authorization": "Basic cmVsYXk6cGE6c3Mgd8O2cmQ=",
    }
    assert "k1" not in repr(cfg) and "cmVsYXk" not in repr(cfg)
    bearer = from_mapping(doc({"url": UP, "bearer_env": "T"}), env={"T": "t0k"}, base=tmp_path)
    assert bearer.routes[0].endpoints[0].headers == (("Authorization", "Bearer t0k"),)


def test_a_bare_url_is_no_endpoint_and_an_object_without_settings_neither(tmp_path: Path) -> None:
    plain = from_mapping(doc(UP), env={}, base=tmp_path).routes[0]
    same = from_mapping(doc({"url": UP}), env={}, base=tmp_path).routes[0]
    assert plain == same and plain.endpoints == ()
    assert RouteRuntime.build(plain).target(UP).headers == ()


@pytest.mark.parametrize(
    ("upstream", "message"),
    [
        (
            {"url": UP, "headers": {"X-Key": "inline"}},
            "routes[0].upstream.headers.X-Key: secrets are never inline",
        ),
        (
            {"url": UP, "headers": {"X-Key": {}}},
            "routes[0].upstream.headers.X-Key: needs value_env, value_file or value_credential",
        ),
        (
            {"url": UP, "headers": {"Bad Name": {"value_env": "K"}}},
            "routes[0].upstream.headers.Bad Name: invalid header name",
        ),
        (
            {"url": UP, "bearer_env": "K", "basic_auth": {"user": "u", "password_env": "K"}},
            "routes[0].upstream.basic_auth: give basic_auth or bearer_*, not both",
        ),
        (
            {"url": UP, "basic_auth": {"user": "u"}},
            "routes[0].upstream.basic_auth: needs password_env, password_file or password_credential",
        ),
        (
            {"url": UP, "headers": {"Authorization": {"value_env": "K"}}, "bearer_env": "K"},
            "routes[0].upstream.headers: Authorization is set by basic_auth / bearer_* already",
        ),
        (
            {"url": UP, "tls": {"key_file": "k.pem"}},
            "routes[0].upstream.tls.key_file: needs cert_file",
        ),
        (
            {"url": UP, "tls": {"ca_file": "missing.pem"}},
            "routes[0].upstream.tls: ca_file: No such file",
        ),
        ({"url": UP, "tls": {"ca_fil": "x"}}, "routes[0].upstream.tls.ca_fil: unknown key"),
        ({"name": "x"}, "routes[0].upstream.url: required"),
        ({"url": UP, "passwd": 1}, "routes[0].upstream.passwd: unknown key"),
    ],
)
def test_upstream_mistakes_are_named(upstream: Any, message: str, tmp_path: Path) -> None:
    (found,) = errors(doc(upstream), tmp_path, env={"K": "v"})
    assert found.startswith(message), found


def test_alternates_need_names_and_distinct_urls(tmp_path: Path) -> None:
    found = errors(doc(UP, alternates=[{"url": UP}]), tmp_path)
    assert "routes[0].alternates[0]: needs a name (filters send events to it by name)" in found
    assert any("lists the same URL twice" in e for e in found)
    ok = from_mapping(
        doc(UP, alternates=[{"name": "billing", "url": "http://billing/x"}]), env={}, base=tmp_path
    ).routes[0]
    assert ok.served == (UP, "http://billing/x")
    assert ok.endpoints == (Upstream("http://billing/x", "billing"),)


def test_a_reload_sees_rotated_secrets_and_certificates(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "token").write_text("one")
    document = doc({"url": UP, "bearer_file": "token", "tls": {"ca_file": "ca.pem"}})
    before = from_mapping(document, env={}, base=tmp_path).routes[0]
    (tmp_path / "token").write_text("two")
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    after = from_mapping(document, env={}, base=tmp_path).routes[0]
    assert before != after  # a reload replaces the route's settings
    assert after.endpoints[0].headers == (("Authorization", "Bearer two"),)
    assert before.endpoints[0].tls is not None and after.endpoints[0].tls is not None
    assert before.endpoints[0].tls.digest != after.endpoints[0].tls.digest
    target = RouteRuntime.build(after).target(UP)
    assert target.context is not None and [f for f, _ in target.expires] == ["ca"]
