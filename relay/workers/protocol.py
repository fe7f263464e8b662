"""What the owner and its workers say to each other, besides store calls.

Both roles import this module and never each other. Over the store's socket
(``relay.store.remote``) a worker makes the owner calls below, and the owner
pushes to every worker; each has one typed function per direction here, so
no role spells a name on the wire itself.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Any, Final

from relay.backlog import Backlog
from relay.runtime import InlineAttempt
from relay.store.base import Attempt, DeliveryStore, Ingested, Lease, NewEvent, Outcome
from relay.store.remote import RemoteStore, StoreServer
from relay.store.remote.client import PushHandler

# Set by the owner for each worker it starts.
ENV_SOCKET: Final = "RELAY_WORKER_STORE_SOCKET"
ENV_LISTEN_FD: Final = "RELAY_WORKER_LISTEN_FD"
ENV_INDEX: Final = "RELAY_WORKER_INDEX"
# The worker's module, as the owner starts it: ``python -m WORKER_MODULE``.
WORKER_MODULE: Final = "relay.workers.worker"


class OwnerCall(enum.StrEnum):
    READY = "ready"  # (index): this worker accepts on the listener
    UNDELIVERED = "undelivered"  # (): the group's exact backpressure counts


class Push(enum.StrEnum):
    WAKE = "wake"  # route: an admin replay requeued work for it


# --- the worker's side ------------------------------------------------------------


async def report_ready(owner: RemoteStore, index: int) -> None:
    await owner.call(OwnerCall.READY.value, index)


async def undelivered(owner: RemoteStore) -> dict[str, float]:
    counts: dict[str, float] = await owner.call(OwnerCall.UNDELIVERED.value)
    return counts


def on_push(wake: Callable[[str], None]) -> PushHandler:
    """The worker's handler of the owner's pushes."""

    def handle(name: str, arg: Any) -> None:
        # Deliver requeued work now, not at the next poll.
        if name == Push.WAKE:
            wake(str(arg))

    return handle


# --- the owner's side -------------------------------------------------------------


class WakeWorkers:
    """The owner's ``Outbound``: it delivers nothing itself, so a wake (an admin
    replay, a revived event) is pushed to every worker's dispatcher, once the
    store's server that reaches them is attached."""

    def __init__(self) -> None:
        self._server: StoreServer | None = None

    def attach(self, server: StoreServer) -> None:
        self._server = server

    def wake(self, route: str) -> None:
        if self._server is not None:
            self._server.push(Push.WAKE.value, route)

    async def deliver_now(
        self, _route: str, _upstream: str, _event_id: int
    ) -> InlineAttempt | None:
        return None  # the owner has no listener: nothing of its own goes in line


def owner_calls(
    store: DeliveryStore, backlog: Backlog, ready: Callable[[int], Awaitable[None]]
) -> dict[str, Callable[..., Awaitable[Any]]]:
    """The calls the owner serves besides its store's own.

    Ingest and finish go through here too: the owner sees every one of the
    group's, so the exact backpressure counts are kept in its ``backlog``.
    """

    async def ingest(event: NewEvent) -> Ingested:
        got = await store.ingest(event)
        backlog.ingested(event.route, got)
        return got

    async def finish_attempt(lease: Lease, attempt: Attempt | None, outcome: Outcome) -> bool:
        recorded = await store.finish_attempt(lease, attempt, outcome)
        backlog.finished(lease, outcome, recorded)
        return recorded

    async def counts() -> dict[str, float]:
        return backlog.snapshot()

    # Named after the store's own methods, which these replace for the workers.
    return {
        DeliveryStore.ingest.__name__: ingest,
        DeliveryStore.finish_attempt.__name__: finish_attempt,
        OwnerCall.UNDELIVERED.value: counts,
        OwnerCall.READY.value: ready,
    }
