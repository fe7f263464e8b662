"""What the inspection API shows and accepts, without I/O: events as JSON with
their secrets redacted, and filters parsed from query strings or JSON bodies."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

from relay import signatures
from relay.config.validate import parse_duration
from relay.forward import shown_url
from relay.runtime import SHADOW_COPY
from relay.store.base import (
    DELIVERY_STATES,
    AttemptInfo,
    DeliveryInfo,
    EventFilter,
    EventInfo,
)

DEFAULT_LIMIT: Final = 50
# list_events loads each event's body: a page stays small.
MAX_LIMIT: Final = 200
MAX_IDS: Final = 1000
PREVIEW_CHARS: Final = 4096
REDACTED: Final = "[redacted]"
# Ids are 64-bit in both stores: a larger one matches nothing and cannot be bound.
MAX_ID: Final = 2**63 - 1

# Headers that carry credentials or signatures, whatever the route's config says.
_SECRET_HEADERS: Final = frozenset(
    h.lower()
    for h in (
        *signatures.DEFAULT_HEADERS.values(),
        "Authorization",
        "Proxy-Authorization",
        "Cookie",
        "Set-Cookie",
        "X-Hub-Signature",
    )
)
_SECRET_NAME: Final = re.compile(
    r"signature|secret|token|auth|passw|api[-_]?key|cookie|credential|hmac|session", re.I
)
# Query parameters are redacted by the same pattern plus these short names.
_SECRET_PARAMS: Final = frozenset({"key", "sig", "code", "pass", "pwd"})


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


# --- redaction and rendering ---------------------------------------------------


def secret_header(name: str, extra: frozenset[str] = frozenset()) -> bool:
    low = name.lower()
    return low in _SECRET_HEADERS or low in extra or _SECRET_NAME.search(low) is not None


def redact_headers(
    headers: tuple[tuple[str, str], ...], extra: frozenset[str] = frozenset()
) -> list[list[str]]:
    return [[name, REDACTED if secret_header(name, extra) else value] for name, value in headers]


def redact_query(query: str) -> str:
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    out = [
        (k, REDACTED if k.lower() in _SECRET_PARAMS or _SECRET_NAME.search(k) else v)
        for k, v in pairs
    ]
    return urlencode(out, safe="[]")


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_state(e: EventInfo) -> str:
    """One word for the event: its most urgent delivery's state (or the sync state)."""
    if e.sync_state is not None:
        return e.sync_state
    states = {d.state for d in e.deliveries}
    for s in ("in_flight", "pending", "dead", "stale", "filtered", "delivered"):
        if s in states:
            return s
    return "none"


def delivery_json(d: DeliveryInfo) -> dict[str, Any]:
    return {
        "id": d.id,
        "upstream": shown_url(d.upstream),
        "state": d.state,
        "attempts": d.attempts,
        "next_attempt_at": iso(d.next_attempt_at) if d.state == "pending" else None,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "reason": d.reason,
        "updated_at": iso(d.updated_at),
    }


def attempt_json(a: AttemptInfo) -> dict[str, Any]:
    return {
        "delivery_id": a.delivery_id,
        "started_at": iso(a.started_at),
        "duration_ms": round(a.duration_ms, 3),
        "status": a.status,
        "error": a.error,
    }


def shown_key(key: str) -> tuple[str, bool]:
    """A stored key as a person reads it, and whether it is a shadow copy's (``dedupe:
    shadow`` stores a seen key's copy under the key plus a separator no header can
    carry, which must never reach a terminal or a page)."""
    key, sep, _ = key.partition(SHADOW_COPY)
    return key, bool(sep)


def event_summary(e: EventInfo) -> dict[str, Any]:
    key, shadow = shown_key(e.key)
    return {
        "id": e.id,
        "route": e.route,
        "key": key,
        "shadow_copy": shadow,
        "key_source": e.key_source,
        "state": event_state(e),
        "mode": "queue" if e.sync_state is None else "sync",
        "received_at": iso(e.received_at),
        "last_seen_at": iso(e.last_seen_at),
        "duplicates": e.duplicates,
        "mismatches": e.mismatches,
        "body_size": None if e.body is None else len(e.body),
        "deliveries": [delivery_json(d) for d in e.deliveries],
    }


def _dedupe_note(e: EventInfo) -> str:
    key, shadow = shown_key(e.key)
    if shadow:
        return (
            f"a shadow copy of key {key!r} ({e.key_source}): the route runs dedupe: shadow,"
            " so this request was stored and forwarded although its key had been seen;"
            " enforced, it would have been absorbed"
        )
    if not e.duplicates:
        return f"first and only delivery of key {key!r} ({e.key_source})"
    note = (
        f"{e.duplicates} later request(s) carried key {key!r} ({e.key_source})"
        " and were absorbed as duplicates"
    )
    if e.mismatches:
        note += f"; {e.mismatches} of them had a different body (payload mismatch)"
    return note


def event_detail(e: EventInfo, extra_secret_headers: frozenset[str]) -> dict[str, Any]:
    out = event_summary(e)
    body: dict[str, Any] = {"dropped": e.body is None, "size": out["body_size"]}
    if e.body is not None:
        body["base64"] = base64.b64encode(e.body).decode("ascii")
        try:
            text = e.body.decode("utf-8")
        except UnicodeDecodeError:
            body["preview"] = None
            body["preview_truncated"] = False
        else:
            body["preview"] = text[:PREVIEW_CHARS]
            body["preview_truncated"] = len(text) > PREVIEW_CHARS
    out.update(
        fingerprint=e.fingerprint,
        method=e.method,
        path=e.path,
        query=redact_query(e.query),
        headers=redact_headers(e.headers, extra_secret_headers),
        body=body,
        sync_state=e.sync_state,
        dedupe={
            "key": e.key,
            "key_source": e.key_source,
            "fingerprint": e.fingerprint,
            "duplicates": e.duplicates,
            "mismatches": e.mismatches,
            "explanation": _dedupe_note(e),
        },
        attempts=[attempt_json(a) for a in e.attempts],
    )
    return out


# --- filters ---------------------------------------------------------------------


def parse_time(name: str, value: object, now: float) -> float:
    """UNIX seconds, an RFC 3339 time, or a duration ago ("30m": thirty minutes ago)."""
    if isinstance(value, bool):
        raise ApiError(400, "bad_filter", f"{name}: expected a time, got {value!r}")
    if isinstance(value, int | float):
        t = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            t = float(text)
        except ValueError:
            try:
                t = now - parse_duration(text)
            except ValueError:
                try:
                    dt = datetime.fromisoformat(text)
                except ValueError:
                    raise ApiError(
                        400,
                        "bad_filter",
                        f"{name}: expected UNIX seconds, an RFC 3339 time"
                        f" or a duration ago like 30m, got {text!r}",
                    ) from None
                t = (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
    else:
        raise ApiError(400, "bad_filter", f"{name}: expected a time, got {type(value).__name__}")
    if not math.isfinite(t):
        raise ApiError(400, "bad_filter", f"{name}: not a finite time")
    return t


def parse_int(name: str, value: object, low: int, high: int | None = MAX_ID) -> int:
    if isinstance(value, bool):
        raise ApiError(400, "bad_request", f"{name}: expected an integer, got {value!r}")
    if isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
        value = int(value)
    # JSON has one kind of number: 7.0 is the integer 7 (as JSON Schema says).
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ApiError(400, "bad_request", f"{name}: expected an integer {bounds}, got {value!r}")
    return value


def parse_flag(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
    ):
        return value.lower() in ("1", "true", "yes", "on")
    raise ApiError(400, "bad_request", f"{name}: expected true or false, got {value!r}")


def only_params(given: Iterable[str], allowed: Iterable[str], *, name_them: bool = False) -> None:
    """400 ``unknown_parameter`` for any name outside ``allowed`` (``name_them``: list
    the allowed ones in the message)."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        message = f"unknown parameter(s): {', '.join(unknown)}"
        if name_them:
            message += f"; expected {', '.join(sorted(allowed))}"
        raise ApiError(400, "unknown_parameter", message)


FILTER_FIELDS: Final = ("route", "state", "key", "since", "until", "ids")


def parse_filter(values: Mapping[str, object], now: float) -> EventFilter:
    route = values.get("route")
    key = values.get("key")
    for name, v in (("route", route), ("key", key)):
        if v is not None and (not isinstance(v, str) or not v):
            raise ApiError(400, "bad_filter", f"{name}: expected a non-empty string")
    state = values.get("state")
    if state is not None and state not in DELIVERY_STATES:
        raise ApiError(
            400, "bad_filter", f"state: expected one of {', '.join(DELIVERY_STATES)}, got {state!r}"
        )
    since = values.get("since")
    until = values.get("until")
    ids = values.get("ids")
    id_tuple: tuple[int, ...] | None = None
    if ids is not None:
        if not isinstance(ids, list) or len(ids) > MAX_IDS:
            raise ApiError(400, "bad_filter", f"ids: expected a list of at most {MAX_IDS} ids")
        id_tuple = tuple(parse_int("ids[]", i, 1) for i in ids)
    return EventFilter(
        route=route if isinstance(route, str) else None,
        state=state,  # narrowed by the membership test above
        key=key if isinstance(key, str) else None,
        since=None if since is None else parse_time("since", since, now),
        until=None if until is None else parse_time("until", until, now),
        ids=id_tuple,
    )


def is_empty_filter(flt: EventFilter) -> bool:
    return flt == EventFilter()
