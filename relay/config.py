"""Configuration: YAML into frozen dataclasses; every error names its path."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from yarl import URL

from relay.errors import ConfigError
from relay.keys import PRESETS, KeySource, parse_source
from relay.retry import RetryPolicy
from relay.validate import MISSING, Section, Skip, show

Mode = Literal["queue", "sync"]
SCHEMES = ("stripe", "github", "shopify", "slack", "standard-webhooks", "hmac-sha256")
_ROUTE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
DEFAULT_METHODS = ("POST",)


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def loopback_only(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True, slots=True)
class AdminConfig:
    listen: Listen = Listen("127.0.0.1", 9090)
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class StorageConfig:
    url: str = "sqlite:///data/relay.db"
    dedupe_window: float = 7 * 86400.0
    dead_retention: float = 30 * 86400.0
    payload_retention: float | None = None  # drop delivered bodies after this long
    cleanup_interval: float = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    max_body: int = 1024 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1024


@dataclass(frozen=True, slots=True)
class AckConfig:
    status: int = 202
    body: str | None = None  # None: a small JSON body naming the event id
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    total: float = 30.0


@dataclass(frozen=True, slots=True)
class SyncConfig:
    wait: float = 30.0  # how long a duplicate waits for the in-flight original
    lease: float = 60.0  # a claim older than this is presumed dead and taken over
    max_stored_body: int = 1024 * 1024
    busy_retry_after: float = 5.0


@dataclass(frozen=True, slots=True)
class OrderingConfig:
    """Per-key ordering: deliveries sharing a key go one at a time, in arrival order."""

    keys: tuple[KeySource, ...]  # the first source present wins; none present: unordered
    on_dead: Literal["skip", "hold"] = "skip"  # a dead head: go on, or hold the key


@dataclass(frozen=True, slots=True)
class StaleConfig:
    """Stale suppression: an event not newer than the last delivered of its key is dropped."""

    version: KeySource
    action: Literal["drop", "deliver"] = "drop"  # deliver: only log and count
    equal_is_stale: bool = False


@dataclass(frozen=True, slots=True)
class VerifyConfig:
    scheme: str
    secrets: tuple[str, ...] = field(repr=False)
    tolerance: float = 300.0
    header: str | None = None  # hmac-sha256 only
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    path: str
    upstreams: tuple[str, ...]
    mode: Mode = "queue"
    methods: tuple[str, ...] = DEFAULT_METHODS
    preset: str | None = None
    keys: tuple[KeySource, ...] = (KeySource("header", "Idempotency-Key"), KeySource("sha256"))
    require_key: bool = False
    on_payload_mismatch: Literal["accept", "reject"] = "accept"
    key_header: str = "Idempotency-Key"  # the header carrying the key upstream
    ack: AckConfig = AckConfig()
    verify: VerifyConfig | None = None
    resign: bool = False
    retry: RetryPolicy = RetryPolicy()
    timeout: Timeouts = Timeouts()
    concurrency: int = 16
    max_pending: int = 100_000
    revive_dead: bool = True
    sync: SyncConfig = SyncConfig()
    ordering: OrderingConfig | None = None
    stale: StaleConfig | None = None


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: Literal["auto", "json", "console"] = "auto"


@dataclass(frozen=True, slots=True)
class Config:
    routes: tuple[Route, ...]
    listen: Listen = Listen("0.0.0.0", 8080)
    admin: AdminConfig = AdminConfig()
    storage: StorageConfig = StorageConfig()
    limits: Limits = Limits()
    log: LogConfig = LogConfig()
    shutdown_grace: float = 25.0


_STORAGE = StorageConfig()
_LIMITS = Limits()
_DEFAULT_KEYS: tuple[KeySource, ...] = (KeySource("header", "Idempotency-Key"), KeySource("sha256"))


def parse_listen(text: str) -> Listen:
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f'expected "host:port", got {show(text)}')
    host = host.strip("[]") or "0.0.0.0"
    return Listen(host, int(port))


def _secret(
    sec: Section, env: Mapping[str, str], base: Path, names: tuple[str, str]
) -> tuple[str, ...]:
    """Secrets from ``*_env`` (environment variables) and ``*_file`` (files), never inline."""
    env_key, file_key = names
    found: list[str] = []
    for var in sec.strings(env_key, ()):
        value = env.get(var, "").strip()
        if not value:
            sec.error(env_key, f"environment variable {var} is not set")
        else:
            found.append(value)
    for name in sec.strings(file_key, ()):
        path = base / name
        try:
            value = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else None
            sec.error(file_key, f"cannot read {name}: {reason or exc.__class__.__name__}")
            continue
        if not value:
            sec.error(file_key, f"{name} is empty")
        found.append(value)
    return tuple(found)


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
            sec.error(legacy, "secrets are never inline: use secret_env or secret_file")
    secrets = _secret(sec, env, base, ("secret_env", "secret_file"))
    if not secrets and not (sec.has("secret_env") or sec.has("secret_file")):
        sec.error(None, "needs secret_env or secret_file")
    header = sec.text("header", None)
    if header is not None and not _HEADER_NAME.fullmatch(header):
        sec.error("header", f"invalid header name {show(header)}")
    if scheme == "hmac-sha256" and header is None:
        header = "X-Signature"
    verify = VerifyConfig(
        scheme=scheme,
        secrets=secrets,
        tolerance=sec.duration("tolerance", 300.0),
        header=header,
        encoding=sec.text("encoding", "hex", choices=("hex", "base64")),
        prefix=sec.text("prefix", ""),
    )
    sec.finish()
    return verify


def _upstream(sec: Section, key: str, url: Any) -> str | None:
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
        sec.error(key, "credentials in the URL are not allowed (they would be logged)")
        return None
    # Percent-encoded once here: requests go out with the URL as given (encoded=True).
    return str(URL(url))


def _required_text(sec: Section, key: str) -> str | None:
    """A required string; None (error recorded) lets the rest of the route be checked."""
    try:
        return str(sec.text(key))
    except Skip:
        return None


def _route(sec: Section, env: Mapping[str, str], base: Path) -> Route:
    # A missing name or path drops the route, but only after its other mistakes are recorded.
    name = _required_text(sec, "name")
    if name is not None and not _ROUTE_NAME.fullmatch(name):
        sec.error("name", f"use letters, digits, '.', '_' or '-', got {show(name)}")
    path = _required_text(sec, "path")
    if path is not None and not path.startswith("/"):
        sec.error("path", f"must start with '/', got {show(path)}")
    upstreams: list[str] = []
    if sec.has("upstream") and sec.has("upstreams"):
        sec.raw("upstreams")  # reported here, not again as an unknown key
        sec.error("upstreams", "give upstream or upstreams, not both")
    if sec.has("upstream"):
        if (url := _upstream(sec, "upstream", sec.raw("upstream"))) is not None:
            upstreams.append(url)
    elif sec.has("upstreams"):
        raw = sec.raw("upstreams")
        if not isinstance(raw, list) or not raw:
            sec.error("upstreams", f"expected a non-empty list of URLs, got {show(raw)}")
        else:
            for i, url in enumerate(raw):
                if (ok := _upstream(sec, f"upstreams[{i}]", url)) is not None:
                    upstreams.append(ok)
            if len(set(upstreams)) != len(upstreams):
                sec.error("upstreams", "lists the same URL twice")
    else:
        sec.error("upstream", "required (or upstreams)")
    mode = sec.text("mode", "queue", choices=("queue", "sync"))
    if mode == "sync" and len(upstreams) > 1:
        sec.error("upstreams", "sync mode forwards to exactly one upstream")
    methods = tuple(m.upper() for m in sec.strings("methods", DEFAULT_METHODS))
    preset = sec.text("preset", None, choices=tuple(PRESETS))
    keys = PRESETS[preset].keys if preset is not None and preset in PRESETS else _DEFAULT_KEYS

    idem = sec.section("idempotency")
    if idem.has("key"):
        parsed: list[KeySource] = []
        for i, text in enumerate(idem.strings("key", ())):
            try:
                parsed.append(parse_source(text))
            except ValueError as exc:
                idem.error(f"key[{i}]", str(exc))
        keys = tuple(parsed) or keys
    require_key = idem.flag("require_key", False)
    mismatch = idem.text("on_payload_mismatch", "accept", choices=("accept", "reject"))
    key_header = idem.text("header", "Idempotency-Key")
    if not _HEADER_NAME.fullmatch(key_header):
        idem.error("header", f"invalid header name {show(key_header)}")
    idem.finish()

    ack_sec = sec.section("ack")
    ack = AckConfig(
        status=ack_sec.integer("status", 202, lo=200, hi=299),
        body=ack_sec.text("body", None),
        content_type=ack_sec.text("content_type", "application/json"),
    )
    ack_sec.finish()

    verify = _verify(sec.section("verify"), preset, env, base) if sec.has("verify") else None
    resign = sec.flag("resign", False)
    if resign and verify is None:
        sec.error("resign", "needs verify: (the secret to re-sign with)")

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
    on_dead = sec.text("on_dead", "skip", choices=("skip", "hold"))
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
    action = sec.text("action", "drop", choices=("drop", "deliver"))
    equal_is_stale = sec.flag("equal_is_stale", False)
    sec.finish()
    if version is None:
        return None
    return StaleConfig(version, action, equal_is_stale)


def _admin(sec: Section, env: Mapping[str, str], base: Path) -> AdminConfig:
    try:
        listen = parse_listen(sec.text("listen", "127.0.0.1:9090"))
    except ValueError as exc:
        sec.error("listen", str(exc))
        listen = AdminConfig().listen
    tokens = _secret(sec, env, base, ("token_env", "token_file"))
    if not tokens and not listen.loopback_only:
        sec.error(None, f"listens on {listen}, beyond loopback: set token_env or token_file")
    sec.finish()
    return AdminConfig(listen=listen, token=tokens[0] if tokens else None)


def from_mapping(
    doc: Any, env: Mapping[str, str] | None = None, base: Path | None = None
) -> Config:
    """Build a Config from parsed YAML; ConfigError lists every mistake."""
    env = os.environ if env is None else env
    base = base or Path.cwd()
    errors: list[str] = []
    top = Section(doc, "", errors)
    try:
        listen = parse_listen(top.text("listen", "0.0.0.0:8080"))
    except ValueError as exc:
        top.error("listen", str(exc))
        listen = Listen("0.0.0.0", 8080)
    admin = _admin(top.section("admin"), env, base)

    st = top.section("storage")
    storage = StorageConfig(
        url=st.text("url", _STORAGE.url),
        dedupe_window=st.duration("dedupe_window", _STORAGE.dedupe_window),
        dead_retention=st.duration("dead_retention", _STORAGE.dead_retention),
        payload_retention=st.duration("payload_retention", None),
        cleanup_interval=st.duration("cleanup_interval", 60.0),
    )
    if not storage.url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        st.error("url", f"expected sqlite:///PATH or postgresql://…, got {show(storage.url)}")
    st.finish()

    li = top.section("limits")
    limits = Limits(
        max_body=li.size("max_body", _LIMITS.max_body),
        header_timeout=li.duration("header_timeout", _LIMITS.header_timeout),
        body_timeout=li.duration("body_timeout", _LIMITS.body_timeout),
        max_connections=li.integer("max_connections", _LIMITS.max_connections, lo=1),
    )
    li.finish()

    lg = top.section("log")
    log = LogConfig(
        level=lg.text("level", "info", choices=("debug", "info", "warning", "error")),
        format=lg.text("format", "auto", choices=("auto", "json", "console")),
    )
    lg.finish()
    grace = top.duration("shutdown_grace", 25.0)

    routes: list[Route] = []
    raw_routes = top.raw("routes")
    if not isinstance(raw_routes, list) or not raw_routes:
        top.error(
            "routes",
            "required"
            if raw_routes is MISSING
            else f"expected a non-empty list of routes, got {show(raw_routes)}",
        )
        raw_routes = raw_routes if isinstance(raw_routes, list) else []
    for i, raw in enumerate(raw_routes):
        try:
            routes.append(_route(Section(raw, f"routes[{i}]", errors), env, base))
        except Skip:
            continue
    seen_names: dict[str, int] = {}
    seen_paths: dict[str, int] = {}
    for i, route in enumerate(routes):
        if (j := seen_names.setdefault(route.name, i)) != i:
            errors.append(
                f"routes[{i}].name: {show(route.name)} is already the name of routes[{j}]"
            )
        if (j := seen_paths.setdefault(route.path, i)) != i:
            errors.append(
                f"routes[{i}].path: {show(route.path)} is already the path of routes[{j}]"
            )
    top.finish()
    if errors:
        raise ConfigError(errors)
    return Config(
        routes=tuple(routes),
        listen=listen,
        admin=admin,
        storage=storage,
        limits=limits,
        log=log,
        shutdown_grace=grace,
    )


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping.

    Plain YAML loading keeps the last of two ``retry:`` keys and silently drops
    the first; for a config that is a mistake to report, like an unknown key.
    """


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    seen: set[tuple[str, str]] = set()
    for key_node, _ in node.value:
        # Only the mapping's own keys: a "<<" merge followed by an override is fine.
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        if (key_node.tag, key_node.value) in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {show(key_node.value)}", key_node.start_mark
            )
        seen.add((key_node.tag, key_node.value))
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            [f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}"]
        ) from None
    try:
        doc = yaml.load(text, Loader=_StrictLoader)
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise ConfigError([f"{path}: invalid YAML: nested too deeply"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"{path}: {problem}{where}"]) from None
    return from_mapping(doc, env, path.parent.resolve())
