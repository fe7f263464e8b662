"""The admin listener's section: where it listens, the names it answers to, and
its tokens with their roles."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from relay.config.certificates import parse_listener_tls
from relay.config.secrets import read_secrets
from relay.config.types import (
    MIN_TOKEN_CHARS,
    ROLES,
    TOKEN_LABEL,
    AdminConfig,
    AdminToken,
    Listen,
)
from relay.config.validate import Section, Skip, show

# What the one token of ``admin.token_env`` / ``token_file`` is called in the audit log.
LEGACY_LABEL = "admin_token"
TOKEN_HINT = "`webhook-relay token` prints a new one"


def parse_listen(text: str) -> Listen:
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f'expected "host:port", got {show(text)}')
    host = host.strip("[]") or "0.0.0.0"
    return Listen(host, int(port))


def _token(sec: Section, env: Mapping[str, str], base: Path) -> AdminToken | None:
    label = sec.text("label")
    if not TOKEN_LABEL.fullmatch(label):
        sec.error("label", f"expected letters, digits, _ or - (at most 40), got {show(label)}")
    role = sec.choice("role", "read", ROLES)
    found = read_secrets(sec, env, base, "token")
    if len(found) != 1:
        sec.error(None, "needs exactly one of token_env, token_file, token_credential")
    sec.finish()
    return AdminToken(label, role, found[0]) if len(found) == 1 else None


def _tokens(sec: Section, env: Mapping[str, str], base: Path) -> list[AdminToken]:
    tokens = [AdminToken(LEGACY_LABEL, "operate", t) for t in read_secrets(sec, env, base, "token")]
    raw = sec.raw("tokens") if sec.has("tokens") else []
    if not isinstance(raw, list):
        sec.error("tokens", f"expected a list of tokens, got {show(raw)}")
        raw = []
    for i, item in enumerate(raw):
        try:
            token = _token(Section(item, f"{sec.where('tokens')}[{i}]", sec.errors), env, base)
        except Skip:
            continue
        if token is not None:
            tokens.append(token)
    labels = [t.label for t in tokens]
    for label in sorted({x for x in labels if labels.count(x) > 1}):
        sec.error("tokens", f"label {label!r} is used twice")
    secrets = [t.secret for t in tokens]
    if len(set(secrets)) != len(secrets):
        sec.error("tokens", "two tokens have the same value")
    return tokens


def parse_admin(sec: Section, env: Mapping[str, str], base: Path) -> AdminConfig:
    try:
        listen = parse_listen(sec.text("listen", "127.0.0.1:9090"))
    except ValueError as exc:
        sec.error("listen", str(exc))
        listen = AdminConfig().listen
    tokens = _tokens(sec, env, base)
    if not listen.loopback_only:
        if not tokens:
            sec.error(
                None, f"listens on {listen}, beyond loopback: set token_env, token_file or tokens"
            )
        for t in tokens:
            if len(t.secret) < MIN_TOKEN_CHARS:
                sec.error(
                    None,
                    f"token {t.label!r} has {len(t.secret)} characters; a listener beyond"
                    f" loopback wants at least {MIN_TOKEN_CHARS} ({TOKEN_HINT})",
                )
    listener_tls = parse_listener_tls(sec.section("tls"), env, base) if sec.has("tls") else None
    hosts = sec.strings("allowed_hosts", ())
    for i, name in enumerate(hosts):
        if not name or any(c in name for c in " /:@[]") or name != name.strip():
            sec.error(
                f"allowed_hosts[{i}]", f"expected a host name without a port, got {show(name)}"
            )
    sec.finish()
    return AdminConfig(
        listen=listen,
        tokens=tuple(tokens),
        allowed_hosts=tuple(h.lower().rstrip(".") for h in hosts),
        tls=listener_tls,
    )
