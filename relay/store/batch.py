"""Group commit: many concurrent callers, one transaction.

A durable commit (fsync) costs the same for one row as for hundreds, so
callers queue their item and wait; one background task takes everything
queued (up to ``max_batch``), hands it to ``commit`` and resolves every
caller's future only after ``commit`` returned. A failing ``commit`` fails
every future of that batch.

``IngestBatch`` is what one batch of ingests means, shared by both SQL stores.
Copies of one (route, key) in the same batch are folded: the first is upserted,
the rest are its duplicates (one upsert cannot touch a row twice). After the
upsert, each row says whether this batch claimed the key; what follows from
that (deliveries to create, dead events to revive, mismatches to count, each
sender's answer) is the same for every store and lives here, free of I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from relay.store.base import Ingested, NewEvent

T = TypeVar("T")
R = TypeVar("R")


@dataclass(slots=True)
class BatchStats:
    """Counters for metrics; monotonic except ``last_batch_size``."""

    batches: int = 0  # batches committed
    rows: int = 0  # items committed
    last_batch_size: int = 0
    commit_seconds: float = 0.0  # wall time spent in successful commits
    failed_batches: int = 0
    # Optional hook, called after every batch with (items, seconds, committed):
    # metrics feed their histograms from it.
    observer: Callable[[int, float, bool], None] | None = field(
        default=None, repr=False, compare=False
    )

    def observe(self, size: int, seconds: float, ok: bool) -> None:
        if self.observer is not None:
            # A metrics failure must never fail a commit that already happened.
            with contextlib.suppress(Exception):
                self.observer(size, seconds, ok)


class GroupCommitter(Generic[T, R]):
    """Queue items, commit them in batches, answer each caller.

    ``commit`` receives a batch and returns one result per item, in order.
    ``on_error`` turns whatever ``commit`` raised into the exception each
    caller sees; ``closed_error`` builds the one raised after ``close()``.
    """

    def __init__(
        self,
        commit: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int,
        on_error: Callable[[BaseException], BaseException],
        closed_error: Callable[[], BaseException],
        stats: BatchStats | None = None,
        share: Callable[[], int | None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._commit = commit
        self._max_batch = max_batch
        self._on_error = on_error
        self._closed_error = closed_error
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._committing = False
        # Asked before each batch: a smaller cap for it (another committer's fair share).
        self._share = share
        self.stats = stats if stats is not None else BatchStats()

    @property
    def busy(self) -> bool:
        """Items are waiting or being committed."""
        return self._committing or bool(self._queue)

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    async def submit(self, item: T) -> R:
        if self._closed:
            raise self._closed_error()
        self.start()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._wake.set()
        # A cancelled caller leaves its item in the batch: it may still be
        # committed, which is safe (the sender's retry becomes a duplicate).
        return await future

    async def close(self) -> None:
        """Refuse new items, commit everything already queued, stop."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        # Items queued with no task to run them (never started) must not hang.
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(self._closed_error())

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                await self._commit_one(self._take())
            if self._closed:
                return

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        cap = self._max_batch
        if self._share is not None and (share := self._share()) is not None:
            cap = max(1, min(cap, share))
        while self._queue and len(batch) < cap:
            batch.append(self._queue.popleft())
        return batch

    async def _commit_one(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        started = time.perf_counter()
        self._committing = True
        try:
            results = await self._commit([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"commit returned {len(results)} results for {len(batch)} items")
        except BaseException as exc:
            self.stats.failed_batches += 1
            self.stats.observe(len(batch), time.perf_counter() - started, False)
            for _, future in batch:
                if not future.done():
                    future.set_exception(self._on_error(exc))
            if not isinstance(exc, Exception):
                raise  # cancelled: the callers are answered, now stop
            return
        finally:
            self._committing = False
        elapsed = time.perf_counter() - started
        self.stats.batches += 1
        self.stats.rows += len(batch)
        self.stats.last_batch_size = len(batch)
        self.stats.commit_seconds += elapsed
        self.stats.observe(len(batch), elapsed, True)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


# --- one batch of ingests -------------------------------------------------------

Key = tuple[str, str]  # (route, key)
# A new delivery: (event id, route, upstream, ordering key, the filter rule that
# dropped it: None for one to deliver).
NewDelivery = tuple[int, str, str, str | None, str | None]


@dataclass(slots=True)
class Followups:
    """What the upsert's rows require, written in the same transaction."""

    deliveries: list[NewDelivery] = field(default_factory=list)
    revive: list[int] = field(default_factory=list)  # event ids, for revive_dead
    # (event id, copies in this batch whose body differs from the stored one that
    # the upsert did not count: it compared only the first copy).
    mismatches: list[tuple[int, int]] = field(default_factory=list)


class IngestBatch:
    def __init__(self, events: Sequence[NewEvent], token: str) -> None:
        self.events = events
        self.token = token
        self.groups: dict[Key, list[int]] = {}
        for index, event in enumerate(events):
            self.groups.setdefault((event.route, event.key), []).append(index)

    def upserts(self) -> list[tuple[NewEvent, int, int]]:
        """Per (route, key): its first copy, how many more copies, how many of those differ."""
        out = []
        for indexes in self.groups.values():
            first, rest = self.events[indexes[0]], [self.events[i] for i in indexes[1:]]
            out.append((first, len(rest), sum(e.fingerprint != first.fingerprint for e in rest)))
        return out

    def followups(self, by_key: Mapping[Key, Any]) -> Followups:
        """``by_key``: the upsert's returned rows (id, fingerprint, claim_token) by (route, key)."""
        todo = Followups()
        for (route, key), indexes in self.groups.items():
            row, first = by_key[(route, key)], self.events[indexes[0]]
            event_id = int(row["id"])
            if row["claim_token"] == self.token:
                todo.deliveries += [
                    (event_id, route, up, first.ordering_key, first.filtered)
                    for up in first.upstreams
                ]
                continue
            if first.revive_dead:
                todo.revive.append(event_id)
            stored = row["fingerprint"]
            if extra := sum(self.events[i].fingerprint != stored for i in indexes[1:]):
                todo.mismatches.append((event_id, extra))
        return todo

    def results(self, by_key: Mapping[Key, Any], revived: Mapping[int, int]) -> list[Ingested]:
        """Each sender's answer, in the order of ``events``."""
        results: list[Ingested | None] = [None] * len(self.events)
        for (route, key), indexes in self.groups.items():
            row = by_key[(route, key)]
            event_id, stored = int(row["id"]), str(row["fingerprint"])
            claimed = row["claim_token"] == self.token
            trace = row["trace_context"]
            results[indexes[0]] = Ingested(
                event_id, claimed, stored, revived.get(event_id, 0), stored_trace=trace
            )
            for index in indexes[1:]:
                results[index] = Ingested(event_id, False, stored, stored_trace=trace)
        return [r for r in results if r is not None]
