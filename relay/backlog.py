"""Backpressure counts: undelivered events per route, kept in memory.

A COUNT over a million pending rows is not free, so every process keeps its
own count and corrects it now and then. The rules of the count live here and
nowhere else: one ingest that claimed its key adds one event, one delivery
that reached a final state takes away its share of the event (an event with
two upstreams settles in halves), and a fresh reading replaces it all (drift,
other replicas, or in a worker process the owner's exact counts).

One ``Backlog`` per process, owned by its ``Relay``; ingress, the dispatcher
and the owner of a worker group report to it, housekeeping refreshes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping

from relay.store.base import Ingested, Lease, Outcome

Counts = Mapping[str, float]


class Backlog:
    def __init__(self) -> None:
        self._counts: dict[str, float] = {}
        self._share: dict[str, float] = {}  # route -> 1 / number of upstreams

    def set_routes(self, routes: Iterable[tuple[str, int]]) -> None:
        """The routes' fan-out, as ``(name, number of upstreams)``: what one delivery weighs."""
        self._share = {name: 1.0 / n for name, n in routes if n > 0}

    # --- reported by the processes that ingest and deliver ----------------------

    def ingested(self, route: str, got: Ingested) -> None:
        """An ingest returned; a first copy is one more undelivered event."""
        if got.first:
            self._counts[route] = self._counts.get(route, 0.0) + 1.0

    def finished(self, lease: Lease, outcome: Outcome, recorded: bool) -> None:
        """An attempt's outcome was recorded (``recorded``: the lease still held)."""
        if recorded and outcome.state != "pending":
            route = lease.route
            share = self._share.get(route, 1.0)
            self._counts[route] = max(0.0, self._counts.get(route, 0.0) - share)

    # --- read and refreshed -----------------------------------------------------

    def full(self, route: str, limit: int) -> bool:
        return self._counts.get(route, 0.0) >= limit

    def snapshot(self) -> dict[str, float]:
        return dict(self._counts)

    def replace(self, counts: Counts) -> None:
        self._counts = {route: float(n) for route, n in counts.items()}

    async def refresh(self, read: Callable[[], Awaitable[Counts]]) -> None:
        """Replace the counts by a fresh reading (the store's, or the owner's)."""
        self.replace(await read())
