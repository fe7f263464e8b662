"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from relay.store.base import Store


class FakeClock:
    """A clock tests move by hand, so leases expire without sleeping."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# A backend factory gets the test's tmp_path and clock and returns a function
# that builds a new, unopened store on one and the same database each call
# (so a test can close it and reopen the same data).
StoreMaker = Callable[..., Store]


def _sqlite(tmp_path: Path, clock: FakeClock) -> StoreMaker:
    from relay.store.sqlite import SQLiteStore

    path = tmp_path / "relay.db"

    def make(**tuning: object) -> Store:
        return SQLiteStore(path, clock=clock, **tuning)  # type: ignore[arg-type]

    return make


STORE_BACKENDS: dict[str, Callable[[Path, FakeClock], StoreMaker]] = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(STORE_BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(backend: str, tmp_path: Path, clock: FakeClock) -> StoreMaker:
    return STORE_BACKENDS[backend](tmp_path, clock)


@pytest.fixture
async def store(make_store: StoreMaker) -> AsyncIterator[Store]:
    store = make_store()
    await store.open()
    yield store
    await store.close()
