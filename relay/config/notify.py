"""``notify:``: where operators without Prometheus hear about trouble. Each target's
URL is itself a secret (a Slack webhook URL grants posting to a channel): it comes
from ``url_env``, ``url_file`` or ``url_credential`` and is never shown."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from relay.config.secrets import SOURCES, read_secrets
from relay.config.types import NOTIFY_FORMATS, ROUTE_NAME, NotifyTarget
from relay.config.validate import Section, show


def parse_notify(top: Section, env: Mapping[str, str], base: Path) -> tuple[NotifyTarget, ...]:
    raw = top.raw("notify") if top.has("notify") else []
    if not isinstance(raw, list):
        top.error("notify", f"expected a list of targets, got {show(raw)}")
        return ()
    targets: list[NotifyTarget] = []
    for i, item in enumerate(raw):
        if (target := _target(Section(item, f"notify[{i}]", top.errors), i, env, base)) is not None:
            targets.append(target)
    names = [t.name for t in targets]
    for name in sorted({n for n in names if names.count(n) > 1}):
        top.error("notify", f"name {name!r} is used twice")
    return tuple(targets)


def _target(sec: Section, i: int, env: Mapping[str, str], base: Path) -> NotifyTarget | None:
    if sec.has("url"):
        sec.text("url")
        sec.error("url", "a notification URL is a secret: use url_env, url_file or url_credential")
    urls = read_secrets(sec, env, base, "url")
    if not any(sec.has("url" + s) for s in SOURCES) and not sec.has("url"):
        sec.error(None, "needs url_env, url_file or url_credential")
    name = sec.text("name", f"notify-{i}")
    if not ROUTE_NAME.fullmatch(name):
        sec.error("name", f"use letters, digits, '.', '_' or '-', got {show(name)}")
    target: dict[str, Any] = {
        "name": name,
        "format": sec.choice("format", "json", NOTIFY_FORMATS),
        "interval": sec.duration("interval", 15 * 60.0),
        "backlog_age": sec.duration("backlog_age", 10 * 60.0),
    }
    sec.finish()
    if len(urls) != 1:
        return None
    parts = urlsplit(urls[0])
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # Not the URL itself: it is a secret.
        sec.error("url_env", "expected an http:// or https:// URL (not shown: it is a secret)")
        return None
    return NotifyTarget(url=urls[0], **target)
