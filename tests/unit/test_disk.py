"""The disk watermark's rule, on a made-up filesystem: below ``storage.min_free``
(a size or a share) the store is low; read at most every half second; a store on
PostgreSQL, or a directory that cannot be read, is never low."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from relay.config import from_mapping
from relay.disk import EVERY, DiskSpace, sqlite_path
from relay.errors import ConfigError

MiB = 2**20


class Fake:
    def __init__(self, free: int, total: int = 1000 * MiB) -> None:
        self.free, self.total, self.calls, self.now = free, total, 0, 0.0

    def statvfs(self, _path: str) -> Any:
        self.calls += 1
        if self.free < 0:
            raise FileNotFoundError
        return os.statvfs_result((4096, 4096, self.total // 4096, 0, self.free // 4096) + (0,) * 5)


def disk(fake: Fake, tmp_path: Path, **kw: Any) -> DiskSpace:
    return DiskSpace(tmp_path / "relay.db", statvfs=fake.statvfs, clock=lambda: fake.now, **kw)


def test_below_the_floor_is_low_and_above_it_is_not(tmp_path: Path) -> None:
    fake = Fake(free=99 * MiB)
    d = disk(fake, tmp_path, min_bytes=100 * MiB)
    assert d.low()
    fake.free, fake.now = 101 * MiB, EVERY
    assert not d.low()
    (tmp_path / "relay.db").write_bytes(b"x" * 1000)
    (tmp_path / "relay.db-wal").write_bytes(b"x" * 24)
    fake.now += EVERY
    room = d.room()
    assert room is not None and (room.store, room.free) == (1024, 101 * MiB)


def test_a_share_of_the_filesystem_and_reads_at_most_every_half_second(tmp_path: Path) -> None:
    fake = Fake(free=40 * MiB, total=1000 * MiB)
    d = disk(fake, tmp_path, min_bytes=0, min_ratio=0.05)  # 50 MiB
    assert d.low() and d.low() and fake.calls == 1
    fake.free, fake.now = 60 * MiB, EVERY / 2
    assert d.low()  # not read again yet
    fake.now = EVERY
    assert not d.low() and fake.calls == 2


def test_postgres_or_an_unreadable_directory_is_never_low(tmp_path: Path) -> None:
    assert sqlite_path("postgresql://db/relay") is None
    assert not DiskSpace(None, 10**15).low()
    fake = Fake(free=-1)
    assert not disk(fake, tmp_path, min_bytes=10**15).low()


def config(min_free: Any) -> Any:
    doc = {
        "storage": {"min_free": min_free},
        "routes": [{"name": "r", "path": "/r", "upstream": "http://127.0.0.1:3000/"}],
    }
    return from_mapping(doc, env={}).storage


def test_min_free_is_a_size_or_a_share() -> None:
    defaults = from_mapping({"routes": [{"name": "r", "path": "/r", "upstream": "http://x/"}]})
    assert (defaults.storage.min_free, defaults.storage.min_free_ratio) == (100 * MiB, 0.0)
    assert config("2GiB").min_free == 2 * 2**30
    assert config("5%").min_free_ratio == pytest.approx(0.05)
    for bad in ("0%", "100%", "lots", "-1%"):
        with pytest.raises(ConfigError) as info:
            config(bad)
        assert info.value.errors[0].startswith("storage.min_free:")
