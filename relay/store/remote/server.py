"""The store over a Unix socket: one owner process serves its store to workers.

SQLite takes one writer process well and several badly, so in multi-process
mode one *owner* process holds the real store and serves it here, and each
*worker* reaches it through ``relay.store.remote.RemoteStore``.

Messages travel in batches, one frame per event-loop iteration
(``relay.store.remote.wire``):

* client -> server: ``(id, name, args, kwargs | None)``, ``id`` >= 1
* server -> client: ``(id, True, result)``, ``(id, False, (exception type,
  message))``, or a push ``(0, name, arg)``

Calls are answered out of order: the server runs each as its own task, so
concurrent ingests from many workers meet in the store's group commit.

Why pickle is acceptable: unpickling runs arbitrary code, so a peer must be
exactly as trusted as this process. The socket is created mode 0600 before it
listens, every peer's uid is checked with ``SO_PEERCRED`` and must equal ours,
and the supervisor puts the socket in a private (0700) directory. A peer that
passes all three is the same user, who could run any code as us anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, cast

from relay.errors import RelayError, StoreError, StoreUnavailable
from relay.logging import get_logger
from relay.store.base import DeliveryStore
from relay.store.remote.wire import FrameProtocol

log = get_logger()

VERSION: Final = 1
# Answered by the server itself: the client's handshake in ``open()``.
HELLO: Final = "__hello__"
# The hot path a client may call (inspection and maintenance stay with the
# owner); open/close belong to the owner.
STORE_CALLS: Final = frozenset(
    name
    for name, member in vars(DeliveryStore).items()
    if inspect.iscoroutinefunction(member) and name not in ("open", "close")
)
# The store's own errors travel by type and message; anything else is a bug on
# the owner's side, logged there and seen by the caller as StoreError.
PASSTHROUGH: Final = (RelayError, ValueError)
# How long close() lets calls still running on the owner finish before cancelling them.
CLOSE_TIMEOUT: Final = 10.0

_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_uid(sock: Any) -> int:
    """The effective uid the peer of a connected Unix socket had when it connected."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDS.size)
    _pid, uid, _gid = _CREDS.unpack(raw)
    return int(uid)


class _Connection(FrameProtocol):
    """The owner's side of one worker's connection."""

    def __init__(self, server: StoreServer) -> None:
        super().__init__()
        self.server = server
        self.accepted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        try:
            uid: int | None = peer_uid(transport.get_extra_info("socket"))
        except (OSError, TypeError, AttributeError):
            uid = None
        if uid != self.server._uid:
            # Frames are pickles: only our own user may send them.
            log.warning("store_rpc_peer_refused", peer_uid=uid, uid=self.server._uid)
            cast(asyncio.Transport, transport).abort()
            return
        if self.server._closing:  # accepted just before close() stopped listening
            cast(asyncio.Transport, transport).abort()
            return
        self.accepted = True
        self.server._connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.accepted:  # never unpickle a refused peer's bytes, even ones already read
            super().data_received(data)

    def connection_lost(self, _exc: Exception | None) -> None:
        self.server._connections.discard(self)

    def received(self, messages: list[Any]) -> None:
        server = self.server
        calls, tasks, create = server._calls, server._tasks, self.loop.create_task
        for rid, name, args, kwargs in messages:
            fn = calls.get(name)
            if fn is None:
                self._refuse(rid, name)
                continue
            task = create(server._run(self, rid, name, fn, args, kwargs))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def _refuse(self, rid: int, name: object) -> None:
        if name == HELLO:
            self.send((rid, True, VERSION))
            return
        log.warning("store_rpc_unknown_call", call=repr(name))
        self.send((rid, False, (StoreError, f"no such store call: {name!r}")))

    def unsendable(self, message: Any, exc: Exception) -> Any:
        rid, ok, _ = message
        log.error("store_rpc_unsendable", id=rid, ok=ok, error=repr(exc))
        if not rid:
            return None  # a push: there is nobody to tell
        return (rid, False, (StoreError, f"the store owner could not send the answer: {exc!r}"))


class StoreServer:
    """Serves ``store`` on a Unix socket; the caller opens and closes the store itself.

    ``after(name, args, result)`` runs after each successful call (store
    methods and extras alike), before the answer is sent. ``extras`` are more
    named calls; one named like a store method replaces it for the workers.
    """

    def __init__(
        self,
        store: DeliveryStore,
        path: str | os.PathLike[str],
        *,
        after: Callable[[str, tuple[Any, ...], Any], None] | None = None,
        extras: Mapping[str, Callable[..., Awaitable[Any]]] | None = None,
    ) -> None:
        self.store = store
        self.path = os.fspath(path)
        self._after = after
        # Only these names are callable; nothing is looked up by a name off the wire.
        self._calls: dict[str, Callable[..., Awaitable[Any]]] = {
            name: getattr(store, name) for name in sorted(STORE_CALLS)
        }
        self._calls.update(extras or {})
        self._calls.pop(HELLO, None)
        self._uid = os.geteuid()
        self._server: asyncio.AbstractServer | None = None
        self._closing = False
        self._inode: int | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def clients(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        if self._server is not None:
            return
        self._closing = False
        path = self.path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            _remove_stale_socket(path)
            sock.bind(path)
            # Before listen(): no one can connect while the mode is still the umask's.
            os.chmod(path, 0o600)
            self._inode = os.stat(path).st_ino
            self._server = await asyncio.get_running_loop().create_unix_server(
                lambda: _Connection(self), sock=sock
            )
        except BaseException as exc:
            sock.close()
            if isinstance(exc, OSError):
                raise StoreUnavailable(f"cannot serve the store on {path}: {exc}") from exc
            raise

    async def close(self) -> None:
        self._closing = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == self._inode:
                    os.unlink(self.path)
        for conn in list(self._connections):
            conn.close()
        self._connections.clear()
        if self._tasks:
            # Let store calls already running finish (their answers have nowhere to
            # go now); a call still stuck after the grace period is cancelled.
            _, stuck = await asyncio.wait(set(self._tasks), timeout=CLOSE_TIMEOUT)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    def push(self, name: str, arg: Any) -> None:
        for conn in self._connections:
            conn.send((0, name, arg))

    async def _run(
        self,
        conn: _Connection,
        rid: int,
        name: str,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
    ) -> None:
        try:
            result = await (fn(*args, **kwargs) if kwargs else fn(*args))
        except PASSTHROUGH as exc:
            conn.send((rid, False, (type(exc), str(exc))))
            return
        except Exception as exc:
            log.error("store_rpc_call_failed", call=name, error=repr(exc), exc_info=True)
            conn.send((rid, False, (StoreError, f"the store owner failed in {name}: {exc!r}")))
            return
        if self._after is not None:
            try:
                self._after(name, args, result)
            except Exception as exc:
                log.error("store_rpc_after_failed", call=name, error=repr(exc))
        conn.send((rid, True, result))


def _remove_stale_socket(path: str) -> None:
    """A socket file left by a dead owner is removed; a live owner's is not taken over."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        return  # bind() fails with a clear EADDRINUSE
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
    else:
        raise StoreUnavailable(f"another store owner is serving on {path}")
    finally:
        probe.close()
