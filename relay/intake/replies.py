"""What a sender is answered: acks, a backend's answer passed on or replayed, refusals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from aiohttp import web

from relay.config import Route
from relay.forward import Result
from relay.store.base import StoredResponse

REPLAYED: Final = "Idempotent-Replayed"
STORE_RETRY_AFTER: Final = 5
# A full store frees room each cleanup_interval (60 s by default).
STORE_FULL_RETRY_AFTER: Final = 60

_ACCEPTED_ACK: Final = b'{"status": "accepted", "event_id": %d}'
_DUPLICATE_ACK: Final = b'{"status": "duplicate", "event_id": %d}'


@dataclass(slots=True)
class Reply:
    response: web.Response
    outcome: str  # accepted | duplicate | forwarded | replayed | rejected | ...
    key: str | None = None
    reason: str | None = None


def queue_ack(cfg: Route, event_id: int, duplicate: bool) -> web.Response:
    """The queue's answer to a sender: stored (and, ``duplicate``, seen before)."""
    if cfg.ack.body is not None:
        body = cfg.ack.body.encode()
    else:
        # Formatted, not json.dumps: one per webhook, and both fields are plain.
        body = (_DUPLICATE_ACK if duplicate else _ACCEPTED_ACK) % event_id
    resp = web.Response(status=cfg.ack.status, body=body, content_type=None)
    resp.headers["Content-Type"] = cfg.ack.content_type
    if duplicate:
        resp.headers[REPLAYED] = "true"
    return resp


def filtered_answer(event_id: int, replayed: bool) -> web.Response:
    """A sync or hybrid route's answer to an event a filter dropped (stored, not sent)."""
    resp = web.json_response({"status": "filtered", "event_id": event_id})
    if replayed:
        resp.headers[REPLAYED] = "true"
    return resp


def answer(status: int, content_type: str | None, body: bytes, replayed: bool) -> web.Response:
    """A backend's answer passed on to a sender (``replayed``: to a duplicate)."""
    resp = web.Response(status=status, body=body, content_type=None)
    if content_type:
        resp.headers["Content-Type"] = content_type
    if replayed:
        resp.headers[REPLAYED] = "true"
    return resp


def replay(stored: StoredResponse) -> web.Response:
    """A stored final answer, again, to a duplicate."""
    resp = answer(stored.status, stored.content_type, stored.body, replayed=True)
    if stored.body_omitted:
        resp.headers["Idempotent-Body-Omitted"] = "true"
    return resp


def kept(result: Result, cap: int) -> StoredResponse:
    """A final answer as the store keeps it for duplicates: a body over ``cap`` omitted."""
    omitted = len(result.body) > cap
    return StoredResponse(
        status=result.status or 0,
        content_type=result.content_type,
        body=b"" if omitted else result.body,
        body_omitted=omitted,
    )


def error(status: int, reason: str, message: str, retry_after: float | None = None) -> web.Response:
    headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else None
    return web.json_response({"error": reason, "message": message}, status=status, headers=headers)


def reject(status: int, reason: str, message: str, retry_after: float | None = None) -> Reply:
    return Reply(error(status, reason, message, retry_after), "rejected", reason=reason)
