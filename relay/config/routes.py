"""Parsing one route of the configuration (and the secrets it names)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from relay.config import protection
from relay.config.filters import parse_filters
from relay.config.secrets import SOURCES, read_secrets
from relay.config.types import (
    DEDUPE,
    DEFAULT_METHODS,
    ENCODINGS,
    HEADER_NAME,
    MODES,
    ON_DEAD,
    ON_MISMATCH,
    READYZ_PATH,
    ROUTE_NAME,
    SCHEMES,
    STALE_ACTIONS,
    AckConfig,
    HandshakeConfig,
    OnMismatch,
    OrderingConfig,
    Route,
    StaleConfig,
    SyncConfig,
    Timeouts,
    Upstream,
    VerifyConfig,
)
from relay.config.upstreams import parse_upstreams
from relay.config.validate import Section, Skip, show
from relay.keys import PRESETS, KeySource, parse_source
from relay.retry import RetryPolicy
from relay.signatures import RESIGNABLE

# Handshakes answered with the route's verify secret (Zoom's encryptedToken, X's CRC).
_KEYED_HANDSHAKES = ("zoom", "x")

_DEFAULT_KEYS: tuple[KeySource, ...] = (KeySource("header", "Idempotency-Key"), KeySource("sha256"))


def _verify(sec: Section, preset: str | None, env: Mapping[str, str], base: Path) -> VerifyConfig:
    default_scheme = PRESETS[preset].signature if preset is not None and preset in PRESETS else None
    scheme = (
        sec.text("scheme", default_scheme, choices=SCHEMES)
        if (sec.has("scheme") or default_scheme)
        else None
    )
    if scheme is None:
        sec.error("scheme", f"required when the route has no preset (one of {', '.join(SCHEMES)})")
        scheme = "hmac-sha256"
    for legacy in ("secret", "secrets"):
        if sec.has(legacy):
            sec.raw(legacy)
            sec.error(
                legacy, "secrets are never inline: use secret_env, secret_file or secret_credential"
            )
    secrets = read_secrets(sec, env, base, "secret")
    if not secrets and not any(sec.has(f"secret{s}") for s in SOURCES):
        sec.error(None, "needs secret_env, secret_file or secret_credential")
    header = sec.text("header", None)
    if header is not None and not HEADER_NAME.fullmatch(header):
        sec.error("header", f"invalid header name {show(header)}")
    if scheme == "hmac-sha256" and header is None:
        header = "X-Signature"
    verify = VerifyConfig(
        scheme=scheme,
        secrets=secrets,
        tolerance=sec.duration("tolerance", 300.0),
        header=header,
        encoding=sec.choice("encoding", "hex", ENCODINGS),
        prefix=sec.text("prefix", ""),
    )
    sec.finish()
    return verify


def _handshake(
    sec: Section,
    preset: str | None,
    verify: VerifyConfig | None,
    env: Mapping[str, str],
    base: Path,
) -> HandshakeConfig | None:
    """The preset's handshake, with Meta's verify token from ``handshake:``."""
    provider = PRESETS[preset].handshake if preset is not None and preset in PRESETS else None
    tokens: tuple[str, ...] = ()
    if sec.has("handshake"):
        hs = sec.section("handshake")
        tokens = read_secrets(hs, env, base, "verify_token")
        if provider != "meta":
            hs.error(None, "only the meta preset's subscription check takes a verify token")
        hs.finish()
    if provider == "meta" and not tokens and not sec.has("handshake"):
        sec.error(
            "handshake",
            "meta's subscription check sends hub.verify_token: give handshake.verify_token_env,"
            " _file or _credential (the token you typed in Meta's dashboard)",
        )
    if provider in _KEYED_HANDSHAKES and verify is None:
        sec.error("verify", f"{provider} answers its URL check with the verify secret: add verify:")
    return None if provider is None else HandshakeConfig(provider, tokens)


def _public_url(sec: Section) -> str | None:
    url = sec.text("public_url", None)
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is no number
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        sec.error("public_url", f"expected an http(s) URL, got {show(url)}")
    elif parts.query or parts.fragment:
        sec.error("public_url", "takes no query: the one each request carries is appended")
    return url


def _required_text(sec: Section, key: str) -> str | None:
    """A required string; None (error recorded) lets the rest of the route be checked."""
    try:
        return str(sec.text(key))
    except Skip:
        return None


def _idempotency(
    idem: Section, keys: tuple[KeySource, ...]
) -> tuple[tuple[KeySource, ...], bool, OnMismatch, str]:
    """The route's key sources (``keys``, the preset's, unless it names its own),
    ``require_key``, ``on_payload_mismatch`` and the upstream's key header."""
    if idem.has("key"):
        parsed: list[KeySource] = []
        for i, text in enumerate(idem.strings("key", ())):
            try:
                parsed.append(parse_source(text))
            except ValueError as exc:
                idem.error(f"key[{i}]", str(exc))
        keys = tuple(parsed) or keys
    require_key = idem.flag("require_key", False)
    mismatch = idem.choice("on_payload_mismatch", "accept", ON_MISMATCH)
    key_header = idem.text("header", "Idempotency-Key")
    if not HEADER_NAME.fullmatch(key_header):
        idem.error("header", f"invalid header name {show(key_header)}")
    idem.finish()
    return keys, require_key, mismatch, key_header


def _ack(sec: Section) -> AckConfig:
    ack = AckConfig(
        status=sec.integer("status", 202, lo=200, hi=299),
        body=sec.text("body", None),
        content_type=sec.text("content_type", "application/json"),
    )
    sec.finish()
    return ack


def parse_route(sec: Section, env: Mapping[str, str], base: Path) -> Route:
    # A missing name or path drops the route, but only after its other mistakes are recorded.
    name = _required_text(sec, "name")
    if name is not None and not ROUTE_NAME.fullmatch(name):
        sec.error("name", f"use letters, digits, '.', '_' or '-', got {show(name)}")
    path = _required_text(sec, "path")
    if path is not None and not path.startswith("/"):
        sec.error("path", f"must start with '/', got {show(path)}")
    elif path == READYZ_PATH:
        sec.error("path", f"{READYZ_PATH} is the readiness probe load balancers call here")
    endpoints, alternates = parse_upstreams(sec, env, base)
    upstreams = [u.url for u in endpoints]
    named = {a.name: a.url for a in alternates if a.name is not None}
    filters = parse_filters(sec, "filters", named) if sec.has("filters") else ()
    mode = sec.choice("mode", "queue", MODES)
    if mode == "sync" and (alternates or any(f.upstream for f in filters)):
        sec.error(
            "alternates", "sync mode forwards to its one upstream in line: a filter can only drop"
        )
    if mode in ("sync", "hybrid") and len(upstreams) > 1:
        sec.error("upstreams", f"{mode} mode forwards to exactly one upstream")
    dedupe = sec.choice("dedupe", "enforce", DEDUPE)
    methods = tuple(m.upper() for m in sec.strings("methods", DEFAULT_METHODS))
    preset = sec.text("preset", None, choices=tuple(PRESETS))
    keys = PRESETS[preset].keys if preset is not None and preset in PRESETS else _DEFAULT_KEYS

    keys, require_key, mismatch, key_header = _idempotency(sec.section("idempotency"), keys)
    ack = _ack(sec.section("ack"))

    verify = _verify(sec.section("verify"), preset, env, base) if sec.has("verify") else None
    resign = sec.flag("resign", False)
    if resign and verify is None:
        sec.error("resign", "needs verify: (the secret to re-sign with)")
    elif resign and verify is not None and verify.scheme not in RESIGNABLE:
        sec.error("resign", f"{verify.scheme} signatures cannot be re-signed (see the README)")
    handshake = _handshake(sec, preset, verify, env, base)
    public_url = _public_url(sec)

    r = sec.section("retry")
    retry = RetryPolicy(
        max_attempts=r.integer("max_attempts", 25, lo=1),
        max_age=r.duration("max_age", 3 * 86400.0),
        initial=r.duration("initial", 1.0),
        max=r.duration("max", 3600.0),
    )
    r.finish()
    t = sec.section("timeout")
    timeout = Timeouts(connect=t.duration("connect", 5.0), total=t.duration("total", 30.0))
    t.finish()
    s = sec.section("sync")
    sync = SyncConfig(
        wait=s.duration("wait", 30.0),
        lease=s.duration("lease", max(60.0, timeout.total + 30.0)),
        max_stored_body=s.size("max_stored_body", 1024 * 1024),
        busy_retry_after=s.duration("busy_retry_after", 5.0),
    )
    if mode == "sync" and sync.lease <= timeout.total:
        s.error("lease", "must be longer than timeout.total, or a live request could be taken over")
    s.finish()

    ordering = _ordering(sec.section("ordering"), mode) if sec.has("ordering") else None
    stale = _stale(sec.section("stale")) if sec.has("stale") else None
    if sec.has("stale") and not sec.has("ordering"):
        sec.error("stale", "needs ordering.key (the last delivered version is kept per key)")

    allow_from = protection.networks(sec, "allow_from")
    ingress_rate = protection.ingress_rate(sec)
    client_subjects = sec.strings("client_subjects", ())
    breaker = protection.breaker(sec)
    rate_limit = protection.rate_limit(sec)
    if mode == "sync" and (sec.has("breaker") or sec.has("rate_limit")):
        sec.error(None, "breaker and rate_limit pace queue-mode delivery (sync forwards at once)")
    hybrid = protection.hybrid(sec, mode, timeout.total)
    concurrency = sec.integer("concurrency", 16, lo=1, hi=4096)
    max_pending = sec.integer("max_pending", 100_000, lo=1)
    revive_dead = sec.flag("revive_dead", True)
    sec.finish()
    if name is None or path is None:
        raise Skip
    return Route(
        name=name,
        path=path,
        upstreams=tuple(upstreams),
        mode=mode,
        methods=methods,
        preset=preset,
        keys=keys,
        require_key=require_key,
        on_payload_mismatch=mismatch,
        key_header=key_header,
        ack=ack,
        verify=verify,
        resign=resign,
        retry=retry,
        timeout=timeout,
        concurrency=concurrency,
        max_pending=max_pending,
        revive_dead=revive_dead,
        sync=sync,
        ordering=ordering,
        stale=stale,
        breaker=breaker,
        rate_limit=rate_limit,
        hybrid=hybrid,
        dedupe=dedupe,
        endpoints=tuple(u for u in endpoints + alternates if u != Upstream(u.url)),
        alternates=tuple(a.url for a in alternates),
        filters=filters,
        handshake=handshake,
        public_url=public_url,
        allow_from=allow_from,
        ingress_rate=ingress_rate,
        client_subjects=client_subjects,
    )


def _sources(sec: Section, key: str) -> tuple[KeySource, ...]:
    parsed: list[KeySource] = []
    texts: tuple[str, ...] = sec.strings(key, ())
    for i, text in enumerate(texts):
        try:
            parsed.append(parse_source(text))
        except ValueError as exc:
            sec.error(key if len(texts) == 1 else f"{key}[{i}]", str(exc))
    return tuple(parsed)


def _ordering(sec: Section, mode: str) -> OrderingConfig | None:
    if not sec.has("key"):
        sec.error("key", "required (a key source: header:NAME, json:PATH, query:NAME)")
    keys = _sources(sec, "key")
    if sec.raw("key") == []:
        sec.error("key", "expected a key source, got an empty list")
    on_dead = sec.choice("on_dead", "skip", ON_DEAD)
    if mode == "sync":
        sec.error(None, "only queue mode delivers in order (sync forwards at once)")
    sec.finish()
    return OrderingConfig(keys, on_dead) if keys else None


def _stale(sec: Section) -> StaleConfig | None:
    version: KeySource | None = None
    try:
        text = str(sec.text("version"))
    except Skip:
        text = None
    if text is not None:
        try:
            version = parse_source(text)
        except ValueError as exc:
            sec.error("version", str(exc))
        else:
            if version.kind == "sha256":
                sec.error("version", "sha256 is a hash, not a version")
                version = None
    action = sec.choice("action", "drop", STALE_ACTIONS)
    equal_is_stale = sec.flag("equal_is_stale", False)
    sec.finish()
    if version is None:
        return None
    return StaleConfig(version, action, equal_is_stale)
