"""The disk under a SQLite store: how big the store is, how much room is left, and
whether that is below ``storage.min_free``, so ingest can answer 503 before SQLite
meets a full disk (deliveries and their finishes go on: they free space).

Read with ``statvfs`` (a few microseconds) at most every ``EVERY`` seconds, in
every process that takes webhooks; a PostgreSQL store has no such disk here (the
server owns its own) and is never low.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

EVERY: Final = 0.5
SUFFIXES: Final = ("", "-wal")  # the -shm is a few pages of index, mapped


@dataclass(frozen=True, slots=True)
class Room:
    free: int  # bytes an unprivileged writer may still use
    total: int
    store: int  # the database file and its WAL


def sqlite_path(url: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(url[len(prefix) :]) if url.startswith(prefix) else None


def threshold(min_bytes: int, min_ratio: float, total: int) -> int:
    """``storage.min_free`` in bytes: a size, or a share of the filesystem."""
    return int(min_ratio * total) if min_ratio else min_bytes


@dataclass(slots=True)
class DiskSpace:
    path: Path | None
    min_bytes: int
    min_ratio: float = 0.0
    statvfs: Callable[[str], os.statvfs_result] = os.statvfs
    clock: Callable[[], float] = time.monotonic
    _room: Room | None = field(default=None, init=False)
    _read_at: float = field(default=float("-inf"), init=False)

    def room(self) -> Room | None:
        """Now (at most ``EVERY`` s old); None without a SQLite file or when unreadable."""
        if self.path is None:
            return None
        now = self.clock()
        if now - self._read_at >= EVERY:
            self._read_at = now
            self._room = self._read(self.path)
        return self._room

    def low(self) -> bool:
        room = self.room()
        return room is not None and room.free < threshold(
            self.min_bytes, self.min_ratio, room.total
        )

    def _read(self, path: Path) -> Room | None:
        try:
            st = self.statvfs(str(path.parent))
        except OSError:
            return None  # the directory is gone: the store reports that itself
        size = 0
        for suffix in SUFFIXES:
            with contextlib.suppress(OSError):
                size += path.with_name(path.name + suffix).stat().st_size
        return Room(st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize, size)
