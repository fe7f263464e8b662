"""Connection limits on the webhook listener: a cap on open connections, and a
deadline for a request's headers, so slow senders (slowloris) cannot hold the
listener.

aiohttp has neither, so the guard hooks the server's public connection and
request-factory hooks: every connection gets ``header_timeout`` to deliver a
complete request head; the timer stops when the head is parsed and starts
again once the response is sent (an idle keep-alive connection is closed after
the same time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

Refused = Callable[[str], None]  # called with "max_connections" or "header_timeout"


class Tally:
    """Refusals said in one line now and then, not one line each: whoever opens
    connections by the thousand must not be able to flood the log."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self._counts: dict[str, int] = {}
        self._next: dict[str, float] = {}

    def add(self, reason: str, now: float) -> int | None:
        """Count one; the count to say (since the last line) when a line is due."""
        count = self._counts.get(reason, 0) + 1
        if now < self._next.get(reason, now):
            self._counts[reason] = count
            return None
        self._counts[reason] = 0
        self._next[reason] = now + self.every
        return count


class ConnectionGuard:
    def __init__(self, max_connections: int, header_timeout: float, on_refused: Refused) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.on_refused = on_refused
        # Per connection: when it began waiting for a request head (loop time), or
        # None while a request is being handled. One sweep checks them all now and
        # then: a timer per request would cost more than the rest of the guard.
        self._since: dict[RequestHandler, float | None] = {}
        self._transports: dict[RequestHandler, asyncio.Transport] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        # A head is cut between header_timeout and header_timeout + tick after it began.
        self.tick = min(1.0, max(0.01, header_timeout / 4))

    def install(self, server: Server) -> None:
        """Hook a runner's server before its sites start accepting."""
        made, lost, factory = server.connection_made, server.connection_lost, server.request_factory
        loop = asyncio.get_running_loop()

        def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            made(handler, transport)
            if len(self._since) >= self.max_connections:
                # Over the cap: drop it; the sender's retry comes back later. Not
                # aborted here: the handler's task, scheduled after this returns,
                # would start on a closed connection and fail (a traceback each).
                self.on_refused("max_connections")
                loop.call_soon(transport.abort)
                return
            self._since[handler] = loop.time()
            self._transports[handler] = transport
            if self._sweeper is None:
                self._sweeper = loop.call_later(self.tick, self._sweep)

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            self._since.pop(handler, None)
            self._transports.pop(handler, None)
            lost(handler, exc)

        def request_factory(
            message: Any, payload: Any, protocol: RequestHandler, *rest: Any
        ) -> Any:
            # The request head is complete: stop the clock while it is handled.
            if protocol in self._since:
                self._since[protocol] = None
            return factory(message, payload, protocol, *rest)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]
        server.request_factory = request_factory

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = None
        deadline = loop.time() - self.header_timeout
        late = [h for h, since in self._since.items() if since is not None and since <= deadline]
        for handler in late:
            transport = self._transports.get(handler)
            self._since.pop(handler, None)
            self.on_refused("header_timeout")
            if transport is not None:
                transport.abort()
        if self._since:
            self._sweeper = loop.call_later(self.tick, self._sweep)

    def rearm(self, request: web.Request) -> None:
        """After a response: the next request head on this connection gets the deadline."""
        protocol = request.protocol
        if protocol in self._since:
            transport = request.transport
            if transport is not None and not transport.is_closing():
                self._since[protocol] = asyncio.get_running_loop().time()
