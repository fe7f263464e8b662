"""The 1 KiB webhook body every scenario sends; ``bench/lua.py`` builds the same bytes."""

from __future__ import annotations

import hashlib

BODY_SIZE = 1024
ROUTE = "bench"
ROUTE_PATH = "/hook"
SINK_PATH = "/sink"  # the backend answers 200 at once
HANG_PATH = "/hang"  # the backend holds the request (keeps the dispatcher idle)
STATS_PATH = "/__bench/stats"


def body_for(event_id: str, size: int = BODY_SIZE) -> bytes:
    """A JSON object with the event's id, padded to exactly ``size`` bytes."""
    head = '{"id":"' + event_id + '","type":"bench.event","data":"'
    tail = '"}'
    pad = size - len(head) - len(tail)
    if pad < 0:
        raise ValueError(f"event id {event_id!r} does not fit in {size} bytes")
    return (head + "x" * pad + tail).encode()


def fingerprint(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
