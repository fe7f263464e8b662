"""The SQLite store's files on disk: private from the start, and still the ones open.

The database holds webhook bodies and the headers forwarded with them
(``Authorization``, ``Cookie``): its directory is created 0700 and the file 0600
whatever the umask (SQLite gives ``-wal`` and ``-shm`` the database file's mode).

A database file deleted or replaced under a running relay is not an error
SQLite reports: it keeps writing the open, unlinked inode, and a restart finds
none of it. ``Identity`` is the path's (device, inode) when the store opened;
the store compares it before every commit and every ping.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from relay.errors import StoreUnavailable
from relay.logging import get_logger

DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
SUFFIXES: Final = ("", "-wal", "-shm", ".lock")

Identity = tuple[int, int]
RunOnWriter = Callable[[Callable[[sqlite3.Connection], Path]], Awaitable[Path]]

log = get_logger()


def prepare(path: Path) -> list[str]:
    """Create the directory and the database file private; name every existing
    file of the store that is more open than 0600 (they are left as they are:
    an operator may have chosen a group on purpose)."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(parents=True, mode=DIR_MODE, exist_ok=True)
        os.chmod(parent, DIR_MODE)  # the umask may have taken bits we want: set exactly
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)
        finally:
            os.close(fd)
    loose = []
    for suffix in SUFFIXES:
        file = path.with_name(path.name + suffix)
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            loose.append(f"{file} is mode {mode:04o}: readable beyond its owner (chmod 600)")
    return loose


def identity(path: Path) -> Identity | None:
    """The (device, inode) the path names now; None when nothing is there."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def rescue(conn: sqlite3.Connection, path: Path) -> Path:
    """Copy the open database (WAL included) to a new file beside where it was,
    so what was acked after the file went missing is not lost with the process."""
    path.parent.mkdir(parents=True, mode=DIR_MODE, exist_ok=True)
    target = path.with_name(f"{path.name}.rescued-{int(time.time())}")
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    os.close(fd)
    copy = sqlite3.connect(target)
    try:
        conn.backup(copy)
    finally:
        copy.close()
    return target


class Watch:
    """Whether the store's path still names the file it opened. Once it does not,
    the store stays unavailable (no ack is written to a file a restart will not
    find) until the operator restarts it; the first look that sees it says so
    and copies the open database out (``rescue``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._identity: Identity | None = None
        self.lost: str | None = None

    def opened(self) -> None:
        self._identity = identity(self.path)
        self.lost = None

    def _went(self) -> bool:
        """True the first time the path is seen naming another file, or none."""
        if self.lost is not None:
            return False
        if self._identity is None or identity(self.path) == self._identity:
            return False
        self.lost = (
            f"{self.path} was deleted or replaced while open: refusing new events"
            " (restart after putting the rescued copy in place)"
        )
        log.error("store_file_lost", path=str(self.path))
        return True

    async def check(self, run_on_writer: RunOnWriter) -> None:
        """Raise ``StoreUnavailable`` if the file is gone or another one."""
        if self._went():
            try:
                copy = await run_on_writer(lambda conn: rescue(conn, self.path))
            except (OSError, sqlite3.Error, StoreUnavailable) as exc:
                log.error("store_rescue_failed", path=str(self.path), error=str(exc))
            else:
                log.warning("store_rescued", path=str(self.path), copy=str(copy))
        if self.lost is not None:
            raise StoreUnavailable(self.lost)

    def check_on_writer(self, conn: sqlite3.Connection) -> None:
        """``check`` from the writer thread itself (a commit about to begin)."""
        if self._went():
            try:
                copy = rescue(conn, self.path)
            except (OSError, sqlite3.Error) as exc:
                log.error("store_rescue_failed", path=str(self.path), error=str(exc))
            else:
                log.warning("store_rescued", path=str(self.path), copy=str(copy))
        if self.lost is not None:
            raise StoreUnavailable(self.lost)
