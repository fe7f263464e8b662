"""Space on disk for the SQLite store: given back after a purge, measured, and
capped (``storage.max_bytes`` / ``max_rows``: the oldest finished data goes).

SQLite keeps deleted pages in the file for reuse; only a vacuum returns them to
the filesystem. A new file is made with incremental auto-vacuum, so housekeeping
can return free pages a few at a time (``give_back``: one short write each,
paced, never a whole-file ``VACUUM`` under load). A file from before that
converts once, at start, by a ``VACUUM``, which writes a whole copy of the file:
only when the disk has room for it; otherwise the relay runs as before and says
so (``store_vacuum_needs_room`` in the log, ``auto_vacuum`` in the status).
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Final

from relay.logging import get_logger
from relay.store.common_sql import NO_OPEN_WORK
from relay.store.sqlite.thread import SQLiteAccess

INCREMENTAL: Final = 2  # PRAGMA auto_vacuum's value for incremental
# Finished: a completed sync answer, or queued work with no delivery still open.
FINISHED: Final = f"(e.sync_state = 'completed' OR (e.sync_state IS NULL AND {NO_OPEN_WORK}))"
CAP_BODIES: Final = (
    f"SELECT e.id, length(e.body) FROM events AS e WHERE e.id > ? AND e.body IS NOT NULL"
    f" AND {FINISHED} ORDER BY e.id LIMIT ?"
)
# What an event's row, its deliveries and index entries take besides body and headers.
ROW_BYTES: Final = 256
CAP_EVENTS: Final = (
    f"DELETE FROM events WHERE id IN (SELECT e.id FROM events AS e WHERE {FINISHED}"
    " AND (?1 IS NULL OR e.last_seen_at < ?1) ORDER BY e.id LIMIT ?2)"
    f" RETURNING coalesce(length(body), 0) + length(headers) + length(key) + {ROW_BYTES}"
)
SLACK: Final = 64 * 2**20

log = get_logger()


def room_to_convert(free: int, size: int) -> bool:
    """A VACUUM writes a copy of the file (through the WAL): twice its size, and more."""
    return free >= 2 * size + SLACK


def prepare_vacuum(conn: sqlite3.Connection, path: Path) -> str:
    """Before the schema is made: ``incremental`` (new, or already), ``converted``
    (by a VACUUM just now) or ``needs_room`` (left as it is)."""
    if int(conn.execute("PRAGMA auto_vacuum").fetchone()[0]) == INCREMENTAL:
        return "incremental"
    fresh = int(conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]) == 0
    if fresh:
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # applies once the first table exists
        return "incremental"
    size = sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())
    free = shutil.disk_usage(path.parent).free
    if not room_to_convert(free, size):
        log.warning(
            "store_vacuum_needs_room",
            detail="the store gives no space back until it is converted, which needs free"
            " space twice its size; free space and restart",
            size=size,
            free=free,
        )
        return "needs_room"
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("VACUUM")
    log.info("store_vacuum_converted", size_before=size, size_after=path.stat().st_size)
    return "converted"


class SQLiteSpace(SQLiteAccess):
    # Set by SQLiteStore._connect.
    auto_vacuum: str = "incremental"

    async def give_back(self, pages: int) -> int:
        """Return up to ``pages`` free pages to the filesystem; how many bytes."""

        def run(c: sqlite3.Connection) -> int:
            before = int(c.execute("PRAGMA freelist_count").fetchone()[0])
            if not before:
                return 0
            # executescript steps it to the end: execute() frees one page and stops.
            c.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
            after = int(c.execute("PRAGMA freelist_count").fetchone()[0])
            return (before - after) * int(c.execute("PRAGMA page_size").fetchone()[0])

        freed: int = await self._db.call(run)
        return freed

    async def usage(self) -> int:
        """Bytes the store's pages hold (free pages not counted)."""

        def run(c: sqlite3.Connection) -> int:
            pages = int(c.execute("PRAGMA page_count").fetchone()[0])
            free = int(c.execute("PRAGMA freelist_count").fetchone()[0])
            return (pages - free) * int(c.execute("PRAGMA page_size").fetchone()[0])

        used: int = await self._reader.call(run)
        return used

    async def count_events(self) -> int:
        rows = await self._read_rows("SELECT count(*) FROM events")
        return int(rows[0][0])

    async def cap_bodies(self, after_id: int, limit: int) -> tuple[int | None, int, int]:
        def run(c: sqlite3.Connection) -> tuple[int | None, int, int]:
            rows = c.execute(CAP_BODIES, (after_id, limit)).fetchall()
            if not rows:
                return None, 0, 0
            ids = [int(r[0]) for r in rows]
            marks = ", ".join("?" * len(ids))
            c.execute(f"UPDATE events SET body = NULL WHERE id IN ({marks})", ids)
            gone = c.execute(
                "DELETE FROM attempts WHERE delivery_id IN"
                f" (SELECT id FROM deliveries WHERE event_id IN ({marks}))"
                f" RETURNING coalesce(length(answer), 0) + coalesce(length(error), 0) + 64",
                ids,
            ).fetchall()
            freed = sum(int(r[1]) for r in rows) + sum(int(r[0]) for r in gone)
            return ids[-1], len(ids), freed

        done: tuple[int | None, int, int] = await self._tx(run)
        return done

    async def cap_events(self, seen_before: float | None, limit: int) -> tuple[int, int]:
        def run(c: sqlite3.Connection) -> tuple[int, int]:
            sizes = [int(r[0]) for r in c.execute(CAP_EVENTS, (seen_before, limit))]
            return len(sizes), sum(sizes)

        done: tuple[int, int] = await self._tx(run)
        return done
