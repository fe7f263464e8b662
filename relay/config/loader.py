"""The config file: YAML into a ``Config``; every error names its path."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from relay.config.admin import parse_admin, parse_listen
from relay.config.certificates import parse_listener_tls
from relay.config.encryption import parse_encryption
from relay.config.notify import parse_notify
from relay.config.protection import networks
from relay.config.routes import parse_route
from relay.config.secrets import SOURCES, read_secrets
from relay.config.types import (
    CAP_POLICIES,
    LOG_FORMATS,
    Config,
    Limits,
    Listen,
    ListenerTLS,
    LogConfig,
    Route,
    StorageConfig,
    TracingConfig,
)
from relay.config.validate import MISSING, Section, Skip, show
from relay.errors import ConfigError

# Every attempt row keeps this much of its answer at most: the log stays small.
MAX_ANSWER_BYTES = 64 * 1024

_STORAGE = StorageConfig()
MIN_HEADER_BYTES: Final = 1024
_LIMITS = Limits()


def _storage_url(st: Section, env: Mapping[str, str], base: Path) -> str:
    """``storage.url``, or the whole URL (a database password in it) from
    ``url_env``, ``url_file`` or ``url_credential``: never both."""
    secret = read_secrets(st, env, base, "url")
    given = [key for key in ("url", *(f"url{s}" for s in SOURCES)) if st.has(key)]
    if len(given) > 1:
        st.error(
            given[1], f"give one of url, url_env, url_file or url_credential, not {given[0]} too"
        )
    if len(secret) > 1:
        st.error(given[0], "names one URL, not a list")
    url = str(st.text("url", _STORAGE.url))
    return secret[0] if secret else url


def _min_free(st: Section) -> dict[str, Any]:
    """``storage.min_free``: a size ("2GiB") or a share of the filesystem ("5%")."""
    raw = st.raw("min_free") if st.has("min_free") else None
    if isinstance(raw, str) and raw.strip().endswith("%"):
        st.text("min_free")
        try:
            share = float(raw.strip()[:-1])
        except ValueError:
            share = -1.0
        if not 0 < share < 100:
            st.error("min_free", f'expected a size ("2GiB") or a share ("5%"), got {show(raw)}')
            return {}
        return {"min_free_ratio": share / 100}
    return {"min_free": st.size("min_free", _STORAGE.min_free)}


def _check_client_subjects(routes: list[Route], tls: ListenerTLS | None, errors: list[str]) -> None:
    for i, route in enumerate(routes):
        if route.client_subjects and (tls is None or tls.client_auth == "none"):
            errors.append(
                f"routes[{i}].client_subjects: needs tls.client_ca_file on the webhook"
                " listener (client_auth: optional or require), or no certificate is asked for"
            )


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
    tls = parse_listener_tls(top.section("tls"), env, base) if top.has("tls") else None
    admin = parse_admin(top.section("admin"), env, base)

    st = top.section("storage")
    storage = StorageConfig(
        url=_storage_url(st, env, base),
        dedupe_window=st.duration("dedupe_window", _STORAGE.dedupe_window),
        dead_retention=st.duration("dead_retention", _STORAGE.dead_retention),
        payload_retention=st.duration("payload_retention", None),
        cleanup_interval=st.duration("cleanup_interval", 60.0),
        answer_bytes=st.size("answer_bytes", _STORAGE.answer_bytes),
        encryption=parse_encryption(st.section("encryption"), env, base)
        if st.has("encryption")
        else None,
        **_min_free(st),
        max_bytes=st.size("max_bytes", None),
        max_rows=st.integer("max_rows", None, lo=1),
        cap_policy=st.choice("cap_policy", "keep_keys", CAP_POLICIES),
    )
    if storage.answer_bytes > MAX_ANSWER_BYTES:
        st.error("answer_bytes", f"at most {MAX_ANSWER_BYTES} (64KiB), got {storage.answer_bytes}")
    if not storage.url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        st.error("url", f"expected sqlite:///PATH or postgresql://…, got {show(storage.url)}")
    st.finish()

    li = top.section("limits")
    limits = Limits(
        max_body=li.size("max_body", _LIMITS.max_body),
        header_timeout=li.duration("header_timeout", _LIMITS.header_timeout),
        body_timeout=li.duration("body_timeout", _LIMITS.body_timeout),
        max_connections=li.integer("max_connections", _LIMITS.max_connections, lo=1),
        max_header_bytes=li.size("max_header_bytes", _LIMITS.max_header_bytes),
    )
    if limits.max_header_bytes < MIN_HEADER_BYTES:
        li.error("max_header_bytes", f"at least {MIN_HEADER_BYTES} (1KiB): senders' heads need it")
    li.finish()

    lg = top.section("log")
    log = LogConfig(
        level=lg.text("level", "info", choices=("debug", "info", "warning", "error")),
        format=lg.choice("format", "auto", LOG_FORMATS),
    )
    lg.finish()
    drain_delay = top.duration("drain_delay", 5.0, positive=False)
    grace = top.duration("shutdown_grace", 25.0)
    workers = top.integer("workers", 0, lo=0, hi=64)
    tracing = _tracing(top.section("tracing"))
    trusted_proxies = networks(top, "trusted_proxies")
    notify = parse_notify(top, env, base)

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
            routes.append(parse_route(Section(raw, f"routes[{i}]", errors), env, base))
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
    _check_client_subjects(routes, tls, errors)
    top.finish()
    if errors:
        raise ConfigError(errors)
    return Config(
        routes=tuple(routes),
        listen=listen,
        tls=tls,
        admin=admin,
        storage=storage,
        limits=limits,
        log=log,
        tracing=tracing,
        drain_delay=drain_delay,
        shutdown_grace=grace,
        workers=workers,
        trusted_proxies=trusted_proxies,
        notify=notify,
    )


def _have(*modules: str) -> bool:
    try:
        return all(importlib.util.find_spec(m) is not None for m in modules)
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _tracing(tr: Section) -> TracingConfig:
    cfg = TracingConfig(
        enabled=tr.flag("enabled", False), trust_incoming=tr.flag("trust_incoming", False)
    )
    # Asked only when switched on: off, nothing of OpenTelemetry is even looked for.
    if cfg.enabled and not _have("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"):
        tr.error(
            "enabled",
            "tracing needs the otel extra in the relay's venv: pip install '.[otel]'"
            " from a checkout, or 'dist/WHEEL[otel]'",
        )
    tr.finish()
    return cfg


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
