"""WAL checkpoints on their own thread and connection, off the commit path.

SQLite's automatic checkpoint runs inside the COMMIT that crosses the WAL's
size threshold: that commit then copies thousands of pages into the database
file and fsyncs it, and every webhook in its group commit waits (the p99 of
ingest, worse on a large file where those pages are scattered). A PASSIVE
checkpoint from a second connection needs no write lock: it copies what it can
while commits go on, and the next commit after a complete one starts the WAL
from the top again.

Durability does not depend on checkpoints: a commit is durable once its WAL
frames are fsynced (``synchronous=FULL`` on the writer).
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Final

from relay.logging import get_logger

# How often the WAL is copied back. Short: a WAL kept small is cheap to copy.
INTERVAL: Final = 0.1
# The writer's own automatic checkpoint stays as a backstop, far above what the
# thread lets the WAL grow to (pages of 4 KiB: 64 MiB).
BACKSTOP_PAGES: Final = 16384

log = get_logger()


class Checkpointer:
    def __init__(self, path: Path, busy_timeout: float, interval: float = INTERVAL) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.interval = interval
        self.checkpoints = 0  # completed PASSIVE checkpoints (tests, diagnostics)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the checkpoint in progress, if any (closing the store waits for it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout)
        except sqlite3.Error as exc:
            log.error("checkpointer_failed", error=str(exc), hint="the writer checkpoints itself")
            return
        failed = False
        try:
            conn.execute("PRAGMA synchronous = FULL")
            while not self._stop.wait(self.interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    # Transient (the disk, a lock): the writer's backstop still bounds the WAL.
                    if not failed:
                        log.warning("checkpoint_failed", error=str(exc))
                    failed = True
                    continue
                failed = False
                self.checkpoints += 1
        finally:
            conn.close()
