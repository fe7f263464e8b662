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


class ConnectionGuard:
    def __init__(self, max_connections: int, header_timeout: float, on_refused: Refused) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.on_refused = on_refused
        self._timers: dict[RequestHandler, asyncio.TimerHandle | None] = {}

    @property
    def open_connections(self) -> int:
        return len(self._timers)

    def install(self, server: Server) -> None:
        """Hook a runner's server before its sites start accepting."""
        made, lost, factory = server.connection_made, server.connection_lost, server.request_factory

        def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            made(handler, transport)
            if len(self._timers) >= self.max_connections:
                # Over the cap: drop at once; the sender's retry comes back later.
                self.on_refused("max_connections")
                transport.abort()
                return
            self._timers[handler] = None
            self._arm(handler, transport)

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            timer = self._timers.pop(handler, None)
            if timer is not None:
                timer.cancel()
            lost(handler, exc)

        def request_factory(
            message: Any, payload: Any, protocol: RequestHandler, *rest: Any
        ) -> Any:
            # The request head is complete: stop the clock while it is handled.
            timer = self._timers.get(protocol)
            if timer is not None:
                timer.cancel()
                self._timers[protocol] = None
            return factory(message, payload, protocol, *rest)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]
        server.request_factory = request_factory

    def _arm(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()

        def expire() -> None:
            if handler in self._timers:
                self.on_refused("header_timeout")
                transport.abort()

        self._timers[handler] = loop.call_later(self.header_timeout, expire)

    def rearm(self, request: web.Request) -> None:
        """After a response: the next request head on this connection gets the deadline."""
        protocol = request.protocol
        transport = request.transport
        if protocol in self._timers and transport is not None and not transport.is_closing():
            self._arm(protocol, transport)
