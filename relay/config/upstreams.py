"""A route's upstreams and alternates: bare URLs, or objects with a name, headers,
basic or bearer auth (each secret from ``*_env``, ``*_file`` or ``*_credential``)
and TLS settings (a private CA, a client certificate)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from yarl import URL

from relay import tls
from relay.config.secrets import SOURCES, read_secrets
from relay.config.types import HEADER_NAME, ROUTE_NAME, Upstream, UpstreamTLS
from relay.config.validate import Section, show

_FIELDS = "url, name, headers, basic_auth, bearer_env|_file|_credential, tls"


def _url(sec: Section, key: str, url: Any) -> str | None:
    if not isinstance(url, str):
        sec.error(key, f"expected a URL, got {show(url)}")
        return None
    try:
        parts = urlsplit(url)
        _ = parts.port  # "http://host:abc/" only fails here (ValueError)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # "http://[::1/" (an unclosed IPv6 literal)
        ok = False
    if not ok:
        sec.error(key, f"expected an http:// or https:// URL, got {show(url)}")
        return None
    if parts.username is not None or parts.password is not None:
        # It would be printed by check-config and logged with every delivery.
        sec.error(
            key, "credentials in the URL are not allowed (they would be logged): use basic_auth"
        )
        return None
    # Percent-encoded once here: requests go out with the URL as given (encoded=True).
    return str(URL(url))


class _Secrets:
    """Reads one secret per setting, for error messages that name its path."""

    def __init__(self, env: Mapping[str, str], base: Path) -> None:
        self.env = env
        self.base = base

    def one(self, sec: Section, prefix: str) -> str | None:
        if not any(sec.has(prefix + s) for s in SOURCES):
            return None
        found = read_secrets(sec, self.env, self.base, prefix)
        if len(found) > 1:
            sec.error(prefix + "_env", "give exactly one value (a list is for signature secrets)")
        return found[0] if found else None


def _headers(sec: Section, secrets: _Secrets) -> list[tuple[str, str]]:
    out = []
    for name in list(sec.data):
        if not HEADER_NAME.fullmatch(str(name)):
            sec.error(str(name), "invalid header name")
        if not isinstance(sec.raw(str(name)), dict):
            sec.error(
                str(name), "secrets are never inline: use {value_env: NAME} (or _file, _credential)"
            )
            continue
        item = sec.section(str(name))
        value = secrets.one(item, "value")
        if value is None and not any(item.has("value" + s) for s in SOURCES):
            item.error(None, "needs value_env, value_file or value_credential (never inline)")
        item.finish()
        if value is not None:
            out.append((str(name), value))
    return out


def _auth(sec: Section, secrets: _Secrets) -> str | None:
    """The Authorization header's value that ``basic_auth`` or ``bearer_*`` give."""
    bearer = secrets.one(sec, "bearer")
    if not sec.has("basic_auth"):
        return None if bearer is None else f"Bearer {bearer}"
    basic = sec.section("basic_auth")
    user = basic.text("user", "")
    password = secrets.one(basic, "password")
    if not user or ":" in user:
        basic.error("user", f"expected a user name without ':', got {show(user)}")
    if password is None and not any(basic.has("password" + s) for s in SOURCES):
        basic.error(None, "needs password_env, password_file or password_credential")
    basic.finish()
    if bearer is not None:
        sec.error("basic_auth", "give basic_auth or bearer_*, not both")
    if not user or password is None:
        return None
    # RFC 7617, with its UTF-8 charset.
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _tls(sec: Section, base: Path) -> UpstreamTLS | None:
    files = {}
    for key in ("ca_file", "cert_file", "key_file"):
        given = sec.text(key, None)
        files[key] = None if given is None else str(base / given)
    server_name = sec.text("server_name", None)
    sec.finish()
    if files["key_file"] and not files["cert_file"]:
        sec.error("key_file", "needs cert_file (the certificate the key belongs to)")
        return None
    try:
        tls.client_context(files["ca_file"], files["cert_file"], files["key_file"])
    except tls.TLSFilesError as exc:
        sec.error(None, str(exc))
        return None
    return UpstreamTLS(**files, server_name=server_name, digest=tls.digest(files.values()))


def parse_upstream(sec: Section, key: str, raw: Any, secrets: _Secrets) -> Upstream | None:
    if not isinstance(raw, dict):
        url = _url(sec, key, raw)
        return None if url is None else Upstream(url)
    obj = Section(raw, sec.where(key), sec.errors)
    url = _url(obj, "url", obj.raw("url")) if obj.has("url") else None
    if not obj.has("url"):
        obj.error("url", f"required (an upstream object has {_FIELDS})")
    name = obj.text("name", None)
    if name is not None and not ROUTE_NAME.fullmatch(name):
        obj.error("name", f"use letters, digits, '.', '_' or '-', got {show(name)}")
    headers = _headers(obj.section("headers"), secrets) if obj.has("headers") else []
    if (auth := _auth(obj, secrets)) is not None:
        if any(h.lower() == "authorization" for h, _ in headers):
            obj.error("headers", "Authorization is set by basic_auth / bearer_* already")
        headers.append(("Authorization", auth))
    upstream_tls = _tls(obj.section("tls"), secrets.base) if obj.has("tls") else None
    obj.finish()
    if url is None:
        return None
    return Upstream(url, name, tuple(headers), upstream_tls)


def _list(sec: Section, key: str, secrets: _Secrets) -> list[Upstream]:
    raw = sec.raw(key)
    if not isinstance(raw, list) or not raw:
        sec.error(key, f"expected a non-empty list of URLs (or upstream objects), got {show(raw)}")
        return []
    found = [parse_upstream(sec, f"{key}[{i}]", item, secrets) for i, item in enumerate(raw)]
    return [u for u in found if u is not None]


def parse_upstreams(
    sec: Section, env: Mapping[str, str], base: Path
) -> tuple[list[Upstream], list[Upstream]]:
    """The route's upstreams and its alternates (each alternate named)."""
    secrets = _Secrets(env, base)
    upstreams: list[Upstream] = []
    if sec.has("upstream") and sec.has("upstreams"):
        sec.raw("upstreams")  # reported here, not again as an unknown key
        sec.error("upstreams", "give upstream or upstreams, not both")
    if sec.has("upstream"):
        if (one := parse_upstream(sec, "upstream", sec.raw("upstream"), secrets)) is not None:
            upstreams.append(one)
    elif sec.has("upstreams"):
        upstreams = _list(sec, "upstreams", secrets)
    else:
        sec.error("upstream", "required (or upstreams)")
    alternates = _list(sec, "alternates", secrets) if sec.has("alternates") else []
    for i, alt in enumerate(alternates):
        if alt.name is None:
            sec.error(f"alternates[{i}]", "needs a name (filters send events to it by name)")
    urls = [u.url for u in upstreams + alternates]
    if len(set(urls)) != len(urls):
        sec.error("upstreams", "lists the same URL twice (upstreams and alternates together)")
    names = [u.name for u in upstreams + alternates if u.name is not None]
    if len(set(names)) != len(names):
        sec.error("alternates", "two upstreams share a name")
    return upstreams, alternates
