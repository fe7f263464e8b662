"""Fill a relay store directly: many rows in the relay's own schema, fast.

The relay's ``SQLiteStore`` opens the file first, so its migrations create the
schema; then plain ``sqlite3`` inserts rows shaped as the relay writes them
(``executemany``, big transactions, ``synchronous=OFF``). Ids, keys and times
rise together so every index is appended to, never split in the middle.

G1's store (delivered events, as a week of traffic leaves behind) is cached
under ``bench/.cache/`` and reused; what a run adds is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from bench.payload import ROUTE, ROUTE_PATH, body_for, fingerprint
from relay.store.rows import headers_json
from relay.store.sqlite import SQLiteStore

CACHE = Path(__file__).resolve().parent / ".cache"
BATCH = 50_000
# Rows are spread over the last SPREAD seconds, inside the default 7-day dedupe
# window; a cached file older than MAX_AGE is rebuilt before its rows expire.
SPREAD = 2 * 86400.0
MAX_AGE = 4 * 86400.0

State = Literal["delivered", "pending"]


@dataclass(frozen=True, slots=True)
class Meta:
    rows: int
    state: str
    created_at: float
    max_event_id: int
    max_delivery_id: int
    max_attempt_id: int


def _create_schema(path: Path) -> None:
    async def migrate() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.close()

    asyncio.run(migrate())


def _events(
    rows: int, state: State, upstream: str, now: float, prefix: str
) -> Iterator[tuple[tuple[object, ...], tuple[object, ...], tuple[object, ...] | None]]:
    for i in range(1, rows + 1):
        key = f"{prefix}-{i:09d}"
        body = body_for(key)
        at = now - SPREAD + SPREAD * i / rows if state == "delivered" else now - 1.0
        headers = headers_json(
            [
                ("Host", "127.0.0.1"),
                ("Content-Type", "application/json"),
                ("Idempotency-Key", key),
                ("Content-Length", str(len(body))),
            ]
        )
        event = (
            i, ROUTE, key, "header:Idempotency-Key", fingerprint(body), at, at, 0, 0,
            "POST", ROUTE_PATH, "", headers, body, None, None, "prefill",
        )  # fmt: skip
        delivery: tuple[object, ...]
        if state == "delivered":
            delivery = (
                i, i, ROUTE, upstream, None, "delivered", 1, None, None, None, 200, None, None,
                at, at + 0.005, at + 0.005,
            )  # fmt: skip
            attempt = (i, i, at, 4.2, 200, None)
            yield event, delivery, attempt
        else:
            delivery = (
                i, i, ROUTE, upstream, None, "pending", 0, at, None, None, None, None, None,
                at, at, None,
            )  # fmt: skip
            yield event, delivery, None


_INSERT_EVENT = (
    "INSERT INTO events (id, route, key, key_source, fingerprint, received_at, last_seen_at,"
    " duplicates, mismatches, method, path, query, headers, body, ordering_key, version,"
    " claim_token) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_DELIVERY = (
    "INSERT INTO deliveries (id, event_id, route, upstream, ordering_key, state, attempts,"
    " next_attempt_at, lease_token, lease_expires, last_status, last_error, reason,"
    " created_at, updated_at, delivered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_ATTEMPT = (
    "INSERT INTO attempts (id, delivery_id, started_at, duration_ms, status, error)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


def build(path: Path, rows: int, state: State, upstream: str, prefix: str = "prefill") -> Meta:
    """A new store at ``path`` holding ``rows`` events of one delivery each."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    _create_schema(path)
    now = time.time()
    started = time.monotonic()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # No journal while loading (a crash leaves a file that is rebuilt anyway);
        # the relay switches it back to WAL when it opens the store.
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -524288")  # 512 MiB
        rows_iter = _events(rows, state, upstream, now, prefix)
        done = 0
        while done < rows:
            chunk = [next(rows_iter) for _ in range(min(BATCH, rows - done))]
            conn.execute("BEGIN")
            conn.executemany(_INSERT_EVENT, (e for e, _, _ in chunk))
            conn.executemany(_INSERT_DELIVERY, (d for _, d, _ in chunk))
            conn.executemany(_INSERT_ATTEMPT, (a for _, _, a in chunk if a is not None))
            conn.execute("COMMIT")
            done += len(chunk)
            if rows >= 500_000 and done % 500_000 == 0:
                rate = done / (time.monotonic() - started)
                print(f"  pre-filled {done:,}/{rows:,} rows ({rate:,.0f}/s)", file=sys.stderr)
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()
    with_attempts = rows if state == "delivered" else 0
    return Meta(rows, state, now, rows, rows, with_attempts)


def _meta_path(path: Path) -> Path:
    return path.with_suffix(".json")


def revert(path: Path, meta: Meta) -> None:
    """Delete whatever a run added past the pre-filled ids."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM attempts WHERE id > ?", (meta.max_attempt_id,))
        conn.execute("DELETE FROM deliveries WHERE id > ?", (meta.max_delivery_id,))
        conn.execute("DELETE FROM events WHERE id > ?", (meta.max_event_id,))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def cached_store(rows: int, upstream: str) -> tuple[Path, Meta]:
    """G1's store of ``rows`` delivered events, built once and reused while fresh."""
    path = CACHE / f"g1-{rows}.db"
    meta_file = _meta_path(path)
    if path.exists() and meta_file.exists():
        try:
            meta = Meta(**json.loads(meta_file.read_text()))
        except (ValueError, TypeError):
            meta = None
        if meta is not None and meta.rows == rows and time.time() - meta.created_at < MAX_AGE:
            revert(path, meta)  # a run that was killed may have left rows behind
            return path, meta
    meta_file.unlink(missing_ok=True)
    print(f"  pre-filling {path} with {rows:,} delivered events (cached for reruns)")
    started = time.monotonic()
    meta = build(path, rows, "delivered", upstream)
    meta_file.write_text(json.dumps(asdict(meta)))
    print(f"  pre-filled in {time.monotonic() - started:.0f}s")
    return path, meta
