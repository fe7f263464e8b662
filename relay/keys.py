"""Idempotency keys: where a webhook's key comes from (pure, no I/O).

A route names an ordered list of sources; the first one present in a request
wins. ``json:`` paths are a small JSONPath subset: ``$.a.b``, ``$.a[0].b``,
``$["odd key"]``. ``form:`` names a field of an ``application/x-www-form-urlencoded``
body (its first value).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import parse_qsl

KeyKind = Literal["header", "json", "query", "form", "sha256"]
PathPart = str | int

# Keys are stored and indexed; an absurdly long header must not bloat the index.
MAX_KEY_LENGTH: Final = 256
# A form a provider posts has a few dozen fields; parsing stops well past that.
MAX_FORM_FIELDS: Final = 1000
FORM_TYPE: Final = "application/x-www-form-urlencoded"

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 header field name
_INDEX = re.compile(r"\[(\d+)\]")
_QUOTED = re.compile(r"""\[(?:"([^"]*)"|'([^']*)')\]""")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # never valid in the upstream's key header


@dataclass(frozen=True, slots=True)
class KeySource:
    kind: KeyKind
    name: str = ""  # header or query parameter name, or the JSON path as written
    path: tuple[PathPart, ...] = ()

    def __str__(self) -> str:
        return "sha256" if self.kind == "sha256" else f"{self.kind}:{self.name}"


def parse_json_path(text: str) -> tuple[PathPart, ...]:
    if not text.startswith("$"):
        raise ValueError(f"JSON path must start with '$', got {text!r}")
    parts: list[PathPart] = []
    i = 1
    while i < len(text):
        if text[i] == ".":
            m = _NAME.match(text, i + 1)
            if not m:
                raise ValueError(f"bad JSON path {text!r} at offset {i}")
            parts.append(m.group(0))
            i = m.end()
        elif m := _INDEX.match(text, i):
            parts.append(int(m.group(1)))
            i = m.end()
        elif m := _QUOTED.match(text, i):
            parts.append(m.group(1) if m.group(1) is not None else m.group(2))
            i = m.end()
        else:
            raise ValueError(f"bad JSON path {text!r} at offset {i}")
    if not parts:
        raise ValueError(f"JSON path {text!r} names no field")
    return tuple(parts)


def parse_source(text: str) -> KeySource:
    """``header:NAME``, ``json:PATH``, ``query:NAME``, ``form:NAME`` or ``sha256``;
    ValueError otherwise."""
    if text == "sha256":
        return KeySource("sha256")
    kind, sep, arg = text.partition(":")
    if not sep or not arg:
        raise ValueError(
            "expected header:NAME, json:PATH, query:NAME, form:NAME or sha256,"
            f" got {json.dumps(text)}"
        )
    if kind == "header":
        if not _TOKEN.fullmatch(arg):
            raise ValueError(f"invalid header name {json.dumps(arg)}")
        return KeySource("header", arg)
    if kind == "query":
        return KeySource("query", arg)
    if kind == "form":
        return KeySource("form", arg)
    if kind == "json":
        return KeySource("json", arg, parse_json_path(arg))
    raise ValueError(
        f"unknown key source {json.dumps(kind)} (expected header, json, query, form or sha256)"
    )


class _Invalid:
    """Marker: the body is not JSON."""


INVALID_JSON: Final = _Invalid()


@dataclass(slots=True)
class Payload:
    """One request's parts, with the body's JSON and hash computed at most once."""

    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes
    _json: Any = field(default=None, init=False)
    _json_done: bool = field(default=False, init=False)
    _sha256: str | None = field(default=None, init=False)
    _form: Mapping[str, str] | None = field(default=None, init=False)

    def json(self) -> Any:
        """The parsed body, or ``INVALID_JSON``. Numbers stay the text they were sent
        as (``Number``): as floats, ``1e999999`` and ``2e999999`` would both be
        ``inf``, and two large ids one apart the same float."""
        if not self._json_done:
            self._json_done = True
            try:
                self._json = json.loads(
                    self.body, parse_int=Number, parse_float=Number, parse_constant=NonFinite
                )
            except (ValueError, RecursionError):
                # Not JSON (or absurdly deep): json: sources are simply absent.
                self._json = INVALID_JSON
        return self._json

    def form(self) -> Mapping[str, str]:
        """The body's form fields (each name's first value); empty unless the body is
        ``application/x-www-form-urlencoded`` UTF-8 within ``MAX_FORM_FIELDS``."""
        if self._form is None:
            found: dict[str, str] = {}
            content_type = self.headers.get("Content-Type", "")
            if content_type.partition(";")[0].strip().lower() == FORM_TYPE:
                try:
                    pairs = parse_qsl(
                        self.body.decode("utf-8"),
                        keep_blank_values=True,
                        max_num_fields=MAX_FORM_FIELDS,
                    )
                except ValueError:  # not UTF-8, or too many fields: no form sources
                    pairs = []
                for name, value in pairs:
                    found.setdefault(name, value)
            self._form = found
        return self._form

    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = hashlib.sha256(self.body).hexdigest()
        return self._sha256


def walk(doc: Any, path: tuple[PathPart, ...], missing: Any = None) -> Any:
    """The value at ``path`` in a parsed body; ``missing`` when there is none (a JSON
    null is a value: filters tell ``exists`` from absent)."""
    node = doc
    for part in path:
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return missing
            node = node[part]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return missing
    return node


class Number(str):
    """A JSON number, as the exact text the sender wrote."""

    __slots__ = ()


class NonFinite(str):
    """``NaN``, ``Infinity`` or ``-Infinity`` (JSON extensions Python accepts): no key."""

    __slots__ = ()


def _scalar(value: Any) -> str | None:
    # bool is an int subclass, but "true" is never a meaningful event id.
    if isinstance(value, bool | NonFinite) or value is None:
        return None
    if isinstance(value, str):  # a string, or a Number's text
        return str(value) or None
    return None


def _bounded(value: str) -> str:
    """The key as stored and sent upstream: plain values as they are, anything else hashed.

    A lone surrogate (``"\\ud800"`` in a JSON body, or a non-UTF-8 header byte
    decoded with surrogateescape) cannot be encoded, so it cannot be stored; a
    control character (``"a\\nb"``) cannot go in the upstream's key header.
    """
    if len(value) <= MAX_KEY_LENGTH and not _CONTROL.search(value):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            pass
        else:
            return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def extract(source: KeySource, payload: Payload) -> str | None:
    """The key this source yields for the request, or None when absent."""
    if source.kind == "sha256":
        return payload.sha256()
    if source.kind == "header":
        value = payload.headers.get(source.name)
    elif source.kind == "query":
        value = payload.query.get(source.name)
    elif source.kind == "form":
        value = payload.form().get(source.name)
    else:
        doc = payload.json()
        value = None if doc is INVALID_JSON else _scalar(walk(doc, source.path))
    if value is None:
        return None
    value = value.strip()
    return _bounded(value) if value else None


def resolve(sources: Sequence[KeySource], payload: Payload) -> tuple[str, KeySource] | None:
    """The first source present wins."""
    for source in sources:
        key = extract(source, payload)
        if key is not None:
            return key, source
    return None


SHA256: Final = KeySource("sha256")


@dataclass(frozen=True, slots=True)
class Preset:
    keys: tuple[KeySource, ...]
    signature: str  # a scheme name in relay.signatures
    # The provider's URL check the relay answers itself (relay.intake.handshakes).
    handshake: str | None = None


def _sources(*texts: str) -> tuple[KeySource, ...]:
    return tuple(parse_source(t) for t in texts)


# Where a provider sends no id of its own, its key is the body's hash: a retry is
# the same body, byte for byte.
PRESETS: Final[Mapping[str, Preset]] = {
    "stripe": Preset(_sources("json:$.id"), "stripe"),
    "github": Preset(_sources("header:X-GitHub-Delivery"), "github"),
    "shopify": Preset(
        _sources("header:X-Shopify-Event-Id", "header:X-Shopify-Webhook-Id"), "shopify"
    ),
    "standard-webhooks": Preset(_sources("header:webhook-id"), "standard-webhooks"),
    "slack": Preset(_sources("json:$.event_id"), "slack", "slack"),
    "generic": Preset(_sources("header:Idempotency-Key", "sha256"), "hmac-sha256"),
    "razorpay": Preset(_sources("header:X-Razorpay-Event-Id"), "razorpay"),
    "twilio": Preset(
        _sources("header:I-Twilio-Idempotency-Token", "form:MessageSid", "form:CallSid"), "twilio"
    ),
    "asyncqueue": Preset(_sources("header:X-AsyncQueue-Task-Id", "json:$.taskId"), "hmac-sha256"),
    "paddle": Preset(_sources("json:$.event_id"), "paddle"),
    "square": Preset(_sources("json:$.event_id"), "square"),
    "gitlab": Preset(_sources("header:Idempotency-Key", "header:X-Gitlab-Event-UUID"), "gitlab"),
    "linear": Preset(_sources("header:Linear-Delivery"), "linear"),
    "mailgun": Preset(_sources("json:$.event-data.id"), "mailgun"),
    "zoom": Preset(_sources("sha256"), "zoom", "zoom"),
    "meta": Preset(_sources("sha256"), "meta", "meta"),
    "msgraph": Preset(_sources("sha256"), "msgraph", "msgraph"),
    "x": Preset(_sources("sha256"), "x", "x"),
    "dropbox": Preset(_sources("sha256"), "dropbox", "dropbox"),
}
