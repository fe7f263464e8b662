"""A worker's store: every call forwarded to the owner process (``server``).

``RemoteStore`` is a ``DeliveryStore`` (the hot path), so ingress, sync mode
and the dispatcher run on it unchanged; inspection and maintenance stay with
the owner. It never opens or closes the owner's store, only its connection.
When the owner goes away every waiting call fails with ``StoreUnavailable``
(the sender is answered 503 and retries, so nothing acked is lost), later
calls fail at once, and ``lost`` resolves: the worker should then stop, as
there is no store to come back to until the service manager restarts the group.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from relay.errors import StoreError, StoreUnavailable
from relay.logging import get_logger
from relay.store.base import (
    Attempt,
    Clock,
    Ingested,
    Lease,
    NewEvent,
    Outcome,
    Pause,
    StoredResponse,
    SyncClaim,
)
from relay.store.remote.server import HELLO, VERSION
from relay.store.remote.wire import FrameProtocol, rebuild_error

log = get_logger()

# Bounds on waiting for the owner: the handshake, and the calls close() lets finish.
OPEN_TIMEOUT: Final = 10.0
CLOSE_TIMEOUT: Final = 30.0

PushHandler = Callable[[str, Any], None]


class _Client(FrameProtocol):
    def __init__(self, on_push: PushHandler | None, lost: asyncio.Future[None]) -> None:
        super().__init__()
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.on_push = on_push
        self.lost = lost
        self.gone = False
        self._next_id = 0

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> Any:
        if self.gone:
            raise StoreUnavailable("the connection to the store owner is lost")
        self._next_id += 1
        rid = self._next_id
        future: asyncio.Future[Any] = self.loop.create_future()
        self.pending[rid] = future
        self.send((rid, name, args, kwargs))
        return future

    def received(self, messages: list[Any]) -> None:
        pending = self.pending
        for rid, ok, value in messages:
            if not rid:
                self._push(ok, value)
                continue
            future = pending.pop(rid, None)
            if future is None or future.done():
                continue  # its caller was cancelled
            if ok is True:
                future.set_result(value)
            else:
                future.set_exception(rebuild_error(value))

    def _push(self, name: str, arg: Any) -> None:
        if self.on_push is None:
            return
        try:
            self.on_push(name, arg)
        except Exception as exc:
            log.error("store_rpc_push_failed", push=name, error=repr(exc))

    def unsendable(self, message: Any, exc: Exception) -> Any:
        future = self.pending.pop(message[0], None)
        if future is not None and not future.done():
            future.set_exception(StoreError(f"cannot send {message[1]} to the store owner: {exc}"))
        return None

    def connection_lost(self, _exc: Exception | None) -> None:
        self.gone = True
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                # One instance per caller: a shared one would grow a shared traceback.
                future.set_exception(StoreUnavailable("the connection to the store owner was lost"))
        if not self.lost.done():
            self.lost.set_result(None)


class RemoteStore:
    """``relay.store.base.Store`` served by a ``StoreServer`` on ``path``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock = time.time,
        on_push: PushHandler | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.clock = clock
        # Set before open(): the owner's pushes go here.
        self.on_push = on_push
        self._conn: _Client | None = None
        self._lost: asyncio.Future[None] | None = None

    @property
    def lost(self) -> asyncio.Future[None]:
        """Resolves when the connection ends: the owner went away, or close() was called."""
        if self._lost is None:
            self._lost = asyncio.get_running_loop().create_future()
        return self._lost

    async def open(self) -> None:
        if self._conn is not None and not self._conn.gone:
            return
        loop = asyncio.get_running_loop()
        if self._lost is None or self._lost.done():
            self._lost = loop.create_future()
        lost = self._lost
        try:
            _, conn = await loop.create_unix_connection(
                lambda: _Client(self.on_push, lost), self.path
            )
        except OSError as exc:
            raise StoreUnavailable(f"cannot reach the store owner at {self.path}: {exc}") from exc
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                version = await conn.call(HELLO, (), None)
        except (StoreError, TimeoutError):
            conn.close()
            raise StoreUnavailable(
                f"the store owner at {self.path} did not accept the connection"
                " (it refuses peers running as another user)"
            ) from None
        if version != VERSION:
            conn.close()
            raise StoreUnavailable(
                f"the store owner at {self.path} speaks protocol {version}, we speak {VERSION}"
            )
        self._conn = conn

    async def close(self) -> None:
        """Let calls in flight finish, then disconnect; the owner's store stays open."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        waiting = [f for f in conn.pending.values() if not f.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=CLOSE_TIMEOUT)
        conn.close()
        if not conn.gone:
            await asyncio.shield(conn.lost)

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> Any:
        conn = self._conn
        if conn is None:
            raise StoreUnavailable("the remote store is not open")
        return conn.call(name, args, kwargs)

    async def call(self, name: str, *args: Any) -> Any:
        """One of the owner's extra calls, by name."""
        return await self._call(name, args)

    # --- queue mode ---------------------------------------------------------------

    async def ingest(self, event: NewEvent) -> Ingested:
        result: Ingested = await self._call("ingest", (event,))
        return result

    async def lease_due(
        self, route: str, upstream: str, limit: int, lease_ttl: float, *, hold_dead: bool = False
    ) -> list[Lease]:
        kwargs = {"hold_dead": True} if hold_dead else None
        result: list[Lease] = await self._call(
            "lease_due", (route, upstream, limit, lease_ttl), kwargs
        )
        return result

    async def lease_delivery(
        self, route: str, upstream: str, event_id: int, lease_ttl: float, *, hold_dead: bool = False
    ) -> Lease | None:
        kwargs = {"hold_dead": True} if hold_dead else None
        result: Lease | None = await self._call(
            "lease_delivery", (route, upstream, event_id, lease_ttl), kwargs
        )
        return result

    async def store_answer(self, event_id: int, response: StoredResponse) -> None:
        await self._call("store_answer", (event_id, response))

    async def stored_answer(self, event_id: int) -> StoredResponse | None:
        result: StoredResponse | None = await self._call("stored_answer", (event_id,))
        return result

    async def next_due_at(
        self, route: str, upstream: str, *, hold_dead: bool = False
    ) -> float | None:
        kwargs = {"hold_dead": True} if hold_dead else None
        result: float | None = await self._call("next_due_at", (route, upstream), kwargs)
        return result

    async def finish_attempt(self, lease: Lease, attempt: Attempt | None, outcome: Outcome) -> bool:
        # The owner fences by id and token and files the version by route, upstream and
        # key: the payload would only be pickled, sent and unpickled for nothing.
        slim = dataclasses.replace(lease, headers=(), body=b"")
        result: bool = await self._call("finish_attempt", (slim, attempt, outcome))
        return result

    # --- sync mode ----------------------------------------------------------------

    async def claim_sync(self, event: NewEvent, lease_ttl: float) -> SyncClaim:
        result: SyncClaim = await self._call("claim_sync", (event, lease_ttl))
        return result

    async def peek_sync(self, route: str, key: str) -> SyncClaim | None:
        result: SyncClaim | None = await self._call("peek_sync", (route, key))
        return result

    async def complete_sync(self, event_id: int, token: str, response: StoredResponse) -> bool:
        result: bool = await self._call("complete_sync", (event_id, token, response))
        return result

    async def release_sync(self, event_id: int, token: str) -> bool:
        result: bool = await self._call("release_sync", (event_id, token))
        return result

    # --- protecting the backend -----------------------------------------------------

    async def pauses(self) -> list[Pause]:
        result: list[Pause] = await self._call("pauses", ())
        return result

    async def make_due(self, route: str, upstream: str) -> int:
        result: int = await self._call("make_due", (route, upstream))
        return result

    async def count_due(self, route: str, upstream: str) -> int:
        result: int = await self._call("count_due", (route, upstream))
        return result

    # --- health ------------------------------------------------------------------

    async def ping(self) -> bool:
        # Like the local stores: an unreachable store answers False, it does not raise.
        try:
            result: bool = await self._call("ping", ())
        except StoreUnavailable:
            return False
        return result


if TYPE_CHECKING:
    from relay.store.base import DeliveryStore

    def _is_a_store(store: RemoteStore) -> DeliveryStore:
        return store
