"""The port between the wings, as a process that delivers implements it."""

from __future__ import annotations

from relay.delivery.dispatcher import Dispatcher
from relay.runtime import InlineAttempt


class LocalDelivery:
    """``Outbound`` backed by this process's dispatcher, while one runs.

    The role hands this to its ``Relay`` at construction; the app attaches the
    dispatcher once the client session it needs exists, and detaches it at
    shutdown. Detached, nothing is woken or sent in line (the queue keeps it).
    """

    def __init__(self) -> None:
        self._dispatcher: Dispatcher | None = None

    def attach(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    def detach(self) -> None:
        self._dispatcher = None

    def wake(self, route: str) -> None:
        if self._dispatcher is not None:
            self._dispatcher.notify(route)

    async def deliver_now(self, route: str, upstream: str, event_id: int) -> InlineAttempt | None:
        if self._dispatcher is None:
            return None
        return await self._dispatcher.deliver_now(route, upstream, event_id)
