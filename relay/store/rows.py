"""Rows into records, shared by both stores (Row and asyncpg.Record both
read by column name), and the JSON form of stored headers."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Final, Protocol

from relay.store.base import (
    AttemptInfo,
    AuditEntry,
    Busy,
    Completed,
    DeliveryInfo,
    EventInfo,
    Header,
    Lease,
    Pause,
    Preview,
    RecentAttempt,
    StoredResponse,
    SyncClaim,
    UpstreamCounts,
)
from relay.store.sealing import CLEAR_SEALER, Sealer

# Each sealed column's name is the associated data of what it holds.
HEADERS: Final = b"headers"
BODY: Final = b"body"
RESPONSE: Final = b"response_body"
ANSWER: Final = b"answer"


class Row(Protocol):
    """sqlite3.Row and asyncpg.Record alike: read by column name."""

    def __getitem__(self, key: str, /) -> Any: ...


# One encoder for every event: json.dumps with options builds a new one per call.
_compact: Final = json.JSONEncoder(separators=(",", ":")).encode


def headers_json(headers: Sequence[Header], sealer: Sealer = CLEAR_SEALER) -> str:
    # Pairs are written as JSON arrays: [["Name","value"],...].
    return sealer.seal_text(_compact(headers), HEADERS)


def headers_from_json(text: str, sealer: Sealer = CLEAR_SEALER) -> tuple[Header, ...]:
    opened = json.loads(sealer.open_text(text, HEADERS))
    return tuple((str(name), str(value)) for name, value in opened)


def lease_from_rows(d: Row, e: Row, delivered_version: str | None, sealer: Sealer) -> Lease:
    return Lease(
        delivery_id=int(d["id"]),
        event_id=int(d["event_id"]),
        token=str(d["lease_token"]),
        route=str(d["route"]),
        upstream=str(d["upstream"]),
        attempts=int(d["attempts"]),
        # The retry window (max_age) starts when the delivery was created, revived or requeued.
        received_at=float(d["created_at"]),
        key=str(e["key"]),
        method=str(e["method"]),
        path=str(e["path"]),
        query=str(e["query"]),
        headers=headers_from_json(e["headers"], sealer),
        # drop_payloads only empties fully delivered events, which are never
        # leased again (requeue and revive touch dead and stale ones only).
        body=sealer.open(e["body"], BODY) or b"",
        ordering_key=e["ordering_key"],
        version=e["version"],
        expires=float(d["lease_expires"]),
        delivered_version=delivered_version,
        trace=e["trace_context"],
    )


def event_info(
    e: Row, deliveries: Iterable[Row], attempts: Iterable[Row], sealer: Sealer
) -> EventInfo:
    return EventInfo(
        id=int(e["id"]),
        route=str(e["route"]),
        key=str(e["key"]),
        key_source=str(e["key_source"]),
        fingerprint=str(e["fingerprint"]),
        received_at=float(e["received_at"]),
        last_seen_at=float(e["last_seen_at"]),
        duplicates=int(e["duplicates"]),
        mismatches=int(e["mismatches"]),
        method=str(e["method"]),
        path=str(e["path"]),
        query=str(e["query"]),
        headers=headers_from_json(e["headers"], sealer),
        body=sealer.open(e["body"], BODY),
        sync_state=e["sync_state"],
        first_duplicate_at=e["first_duplicate_at"],
        deliveries=tuple(
            DeliveryInfo(
                id=int(d["id"]),
                upstream=str(d["upstream"]),
                state=d["state"],
                attempts=int(d["attempts"]),
                next_attempt_at=d["next_attempt_at"],
                last_status=d["last_status"],
                last_error=d["last_error"],
                reason=d["reason"],
                updated_at=float(d["updated_at"]),
            )
            for d in deliveries
        ),
        attempts=tuple(
            AttemptInfo(
                delivery_id=int(a["delivery_id"]),
                started_at=float(a["started_at"]),
                duration_ms=float(a["duration_ms"]),
                status=a["status"],
                error=a["error"],
                answer=sealer.open(a["answer"], ANSWER),
                id=int(a["id"]),
            )
            for a in attempts
        ),
    )


# A duplicate of a queue-mode event reaching a route that now runs in sync
# mode: the event was already accepted and queued, so answer as the queue
# route did rather than forward it a second time.
def sync_claim_from_row(row: Row, sealer: Sealer) -> SyncClaim:
    event_id, fingerprint, trace = int(row["id"]), str(row["fingerprint"]), row["trace_context"]
    if row["sync_state"] == "in_flight":
        return Busy(event_id, fingerprint, float(row["lease_expires"]), trace)
    if row["sync_state"] is None and row["response_status"] is None:
        # Stored by the queue (the route's mode changed): no answer to replay.
        return Completed(event_id, fingerprint, None, trace)
    return Completed(event_id, fingerprint, stored_response(row, sealer), trace)


def answer_params(r: StoredResponse, sealer: Sealer) -> tuple[Any, ...]:
    """A kept answer's columns, its body sealed: status, content type, body, omitted."""
    return r.status, r.content_type, sealer.seal(r.body, RESPONSE), r.body_omitted


def stored_response(row: Row, sealer: Sealer) -> StoredResponse:
    return StoredResponse(
        status=int(row["response_status"]),
        content_type=row["response_content_type"],
        body=sealer.open(row["response_body"], RESPONSE) or b"",
        body_omitted=bool(row["response_body_omitted"]),
    )


def pause(row: Any) -> Pause:
    return Pause(str(row[0]), str(row[1]), float(row[2]), None if row[3] is None else str(row[3]))


def audit_entry(row: Any) -> AuditEntry:
    return AuditEntry(
        id=int(row[0]),
        at=float(row[1]),
        action=str(row[2]),
        target=str(row[3]),
        affected=int(row[4]),
        reason=None if row[5] is None else str(row[5]),
        credential=str(row[6]),
        client=None if row[7] is None else str(row[7]),
    )


def preview(rows: Any) -> Preview:
    """A preview from the ``(route, event id)`` of every row the change touched."""
    counted = Counter(str(r[0]) for r in rows)
    events = len({int(r[1]) for r in rows})
    return Preview(sum(counted.values()), tuple(sorted(counted.items())), events)


def upstream_counts(rows: Iterable[Any]) -> list[UpstreamCounts]:
    by: dict[tuple[str, str], dict[str, int]] = {}
    for route, upstream, state, n in rows:
        by.setdefault((str(route), str(upstream)), {})[str(state)] = int(n)
    return [
        UpstreamCounts(route, upstream, **counts)
        for (route, upstream), counts in sorted(by.items())
    ]


def recent_attempt(r: Any) -> RecentAttempt:
    return RecentAttempt(
        id=int(r[0]),
        event_id=int(r[1]),
        route=str(r[2]),
        upstream=str(r[3]),
        started_at=float(r[4]),
        duration_ms=float(r[5]),
        status=None if r[6] is None else int(r[6]),
        error=None if r[7] is None else str(r[7]),
    )
