"""Group commit whose batches the writer thread takes itself.

``relay.store.batch.GroupCommitter`` takes a batch on the event loop, hands it
to the thread and waits for the answer before it takes the next. Under load the
answer waits its turn behind a loop iteration's worth of requests (milliseconds),
and the thread sat idle meanwhile: an ingest commit took 6 ms of which the
thread worked 3. Here the loop only queues items; the thread takes a batch,
commits it, posts the answers back in one callback and takes the next batch at
once. After each batch it queues itself behind whatever else waits for the
thread (a lease, the other committer's batch), so no caller is starved.

Same contract as ``GroupCommitter``: a caller is answered only after its batch
committed; a failing commit fails every caller of that batch; ``close`` commits
what is queued and refuses the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from relay.store.batch import BatchStats

T = TypeVar("T")
R = TypeVar("R")

Commit = Callable[[sqlite3.Connection, Sequence[T]], Sequence[R]]
Post = Callable[[Callable[[sqlite3.Connection], None]], None]


class PulledCommitter(Generic[T, R]):
    """``commit(connection, items)`` runs on the writer thread, in its own
    transaction (the caller's function opens and ends it), one batch at a time.
    ``post`` runs a function on that thread with no answer (``SQLiteThread.post``).
    ``share`` is asked on the thread before each batch: a smaller cap for it."""

    def __init__(
        self,
        post: Post,
        commit: Commit[T, R],
        *,
        max_batch: int,
        on_error: Callable[[BaseException], BaseException],
        closed_error: Callable[[], BaseException],
        stats: BatchStats | None = None,
        share: Callable[[], int | None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._post = post
        self._commit = commit
        self._max_batch = max_batch
        self._on_error = on_error
        self._closed_error = closed_error
        self._share = share
        self.stats = stats if stats is not None else BatchStats()
        # Appended on the loop, taken on the thread: deque's ends are thread-safe.
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False  # the loop's view: a chain of batches is on the thread
        self._committing = threading.Event()  # the thread's: a batch is being committed
        self._closed = False
        self._idle: asyncio.Future[None] | None = None

    @property
    def busy(self) -> bool:
        """Items are waiting or being committed (read on either thread)."""
        return self._committing.is_set() or bool(self._queue)

    def start(self) -> None:
        """Nothing to start: the first item schedules the thread (GroupCommitter's API)."""

    async def submit(self, item: T) -> R:
        if self._closed:
            raise self._closed_error()
        loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future))
        if not self._scheduled:
            self._schedule()
        # A cancelled caller leaves its item queued: it may still be committed,
        # which is safe (the sender's retry becomes a duplicate).
        return await future

    async def close(self) -> None:
        """Refuse new items, commit everything already queued, stop."""
        self._closed = True
        if self._scheduled and self._loop is not None:
            self._idle = self._loop.create_future()
            await self._idle
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(self._closed_error())

    # --- on the loop ------------------------------------------------------------

    def _schedule(self) -> None:
        self._scheduled = True
        try:
            self._post(self._drain)
        except Exception as exc:  # the thread is gone (the store closed under us)
            self._scheduled = False
            self._fail_queued(exc)

    def _fail_queued(self, cause: BaseException) -> None:
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(self._on_error(cause))

    def _answer(
        self,
        batch: list[tuple[T, asyncio.Future[R]]],
        results: Sequence[R] | None,
        error: BaseException | None,
        seconds: float,
    ) -> None:
        if results is None:
            self.stats.failed_batches += 1
            self.stats.observe(len(batch), seconds, False)
            cause = error or RuntimeError("commit failed")
            for _, future in batch:
                if not future.done():
                    future.set_exception(self._on_error(cause))
            return
        self.stats.batches += 1
        self.stats.rows += len(batch)
        self.stats.last_batch_size = len(batch)
        self.stats.commit_seconds += seconds
        self.stats.observe(len(batch), seconds, True)
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _drained(self) -> None:
        """The thread found nothing left: what came since starts another chain."""
        self._scheduled = False
        if self._queue:
            self._schedule()
        if not self._scheduled and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    # --- on the writer thread ----------------------------------------------------

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        cap = self._max_batch
        if self._share is not None and (share := self._share()) is not None:
            cap = max(1, min(cap, share))
        batch: list[tuple[T, asyncio.Future[R]]] = []
        while len(batch) < cap:
            try:
                batch.append(self._queue.popleft())
            except IndexError:
                break
        return batch

    def _drain(self, conn: sqlite3.Connection) -> None:
        loop = self._loop
        assert loop is not None
        try:
            self._committing.set()
            batch = self._take()
            if not batch:
                self._committing.clear()
                loop.call_soon_threadsafe(self._drained)
                return
            started = time.perf_counter()
            results: Sequence[R] | None = None
            error: BaseException | None = None
            try:
                results = self._commit(conn, [item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(
                        f"commit returned {len(results)} results for {len(batch)} items"
                    )
            except Exception as exc:
                results, error = None, exc
            finally:
                self._committing.clear()
            loop.call_soon_threadsafe(
                self._answer, batch, results, error, time.perf_counter() - started
            )
            # Behind whatever else waits for the thread; the next batch then.
            self._post(self._drain)
        except Exception:
            # The thread is shutting down: hand the chain back, so the loop fails
            # what is left instead of leaving its callers waiting.
            self._committing.clear()
            _call_soon(loop, self._drained)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(fn)
