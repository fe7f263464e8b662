"""What the console's pages show, shaped from the store's records (no I/O).

Redaction and filters are the admin API's (``relay.admin.views``): a page URL
is also an API query. Nothing here escapes: the templates autoescape all of it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from relay.admin.views import iso
from relay.forward import shown_url
from relay.store.base import Pause, RecentAttempt, RouteBacklog, UpstreamCounts

# A body is shown up to this much; the rest is cut (the API has it whole, base64).
SHOW_BODY: Final = 64 * 1024
_MISSING: Final = object()


def json_path(doc: Any, path: str) -> Any:
    """``data.object.id`` (list items by index: ``items.0.sku``); ``_MISSING`` if absent."""
    node = doc
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def field_matches(body: bytes | None, path: str, value: str) -> bool:
    """The body is JSON and its field at ``path`` is ``value`` (as text: 42, true, null)."""
    if body is None:
        return False
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    found = json_path(doc, path)
    if found is _MISSING:
        return False
    text = found if isinstance(found, str) else json.dumps(found, separators=(",", ":"))
    return text == value


@dataclass(frozen=True, slots=True)
class Shown:
    """Bytes as a page shows them: text (JSON indented), or a note that they are not."""

    text: str
    json: bool = False
    cut: bool = False
    binary: bool = False


def show_bytes(data: bytes | None, limit: int = SHOW_BODY) -> Shown | None:
    if data is None:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return Shown(data[:limit].decode("utf-8", "replace"), binary=True, cut=len(data) > limit)
    try:
        doc = json.loads(text)
    except ValueError:
        return Shown(text[:limit], cut=len(text) > limit)
    pretty = json.dumps(doc, indent=2, ensure_ascii=False)
    return Shown(pretty[:limit], json=True, cut=len(pretty) > limit)


@dataclass(frozen=True, slots=True)
class UpstreamRow:
    upstream: str
    pending: int = 0
    in_flight: int = 0
    dead: int = 0
    stale: int = 0
    breaker: str = "closed"
    tls: str | None = None  # why its attempts fail TLS, until one gets an answer
    paused: Pause | None = None
    last_error: RecentAttempt | None = None


@dataclass(frozen=True, slots=True)
class RouteRow:
    name: str
    path: str
    mode: str
    queued: bool
    pending: int = 0
    in_flight: int = 0
    dead: int = 0
    oldest_open_age: float | None = None
    paused: Pause | None = None
    upstreams: tuple[UpstreamRow, ...] = ()
    sparks: Mapping[str, Any] = field(default_factory=dict)


def failed(a: RecentAttempt) -> bool:
    return a.error is not None or a.status is None or a.status >= 400


def last_errors(attempts: Iterable[RecentAttempt]) -> dict[tuple[str, str], RecentAttempt]:
    """The newest failed attempt per (route, upstream), from attempts newest first."""
    out: dict[tuple[str, str], RecentAttempt] = {}
    for a in attempts:
        if failed(a):
            out.setdefault((a.route, a.upstream), a)
    return out


def route_row(
    *,
    name: str,
    path: str,
    mode: str,
    queued: bool,
    upstreams: Sequence[str],
    backlog: RouteBacklog | None,
    counts: Mapping[tuple[str, str], UpstreamCounts],
    pauses: Sequence[Pause],
    breakers: Mapping[tuple[str, str], Mapping[str, Any]],
    errors: Mapping[tuple[str, str], RecentAttempt],
    now: float,
    sparks: Mapping[str, Any],
) -> RouteRow:
    rows = []
    for up in upstreams:
        c = counts.get((name, up)) or UpstreamCounts(name, up)
        brk = breakers.get((name, shown_url(up)), {})
        rows.append(
            UpstreamRow(
                upstream=up,
                pending=c.pending,
                in_flight=c.in_flight,
                dead=c.dead,
                stale=c.stale,
                breaker=brk.get("state", "closed"),
                tls=brk.get("reason"),
                paused=next((p for p in pauses if p.route == name and p.upstream == up), None),
                last_error=errors.get((name, up)),
            )
        )
    b = backlog or RouteBacklog(name)
    return RouteRow(
        name=name,
        path=path,
        mode=mode,
        queued=queued,
        pending=b.pending,
        in_flight=b.in_flight,
        dead=b.dead,
        oldest_open_age=None if b.oldest_open_at is None else max(0.0, now - b.oldest_open_at),
        paused=next((p for p in pauses if p.route == name and not p.upstream), None),
        upstreams=tuple(rows),
        sparks=sparks,
    )


def when(t: float | None, now: float | None = None) -> str:
    """A time as the API gives it (UTC), and how long ago (or ahead) that is."""
    shown = iso(t)
    if t is None or shown is None:
        return "—"
    delta = (time.time() if now is None else now) - t
    return f"{shown} ({age(delta)} ago)" if delta >= 0 else f"{shown} (in {age(-delta)})"


def age(seconds: float | None) -> str:
    """A short human duration: 45s, 12m, 3h, 2d."""
    if seconds is None:
        return "—"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
