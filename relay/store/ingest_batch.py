"""One group commit of ingests, in domain terms: shared by the SQLite and PostgreSQL stores.

Copies of one (route, key) in the same batch are folded: the first is upserted,
the rest are its duplicates (one upsert cannot touch a row twice). After the
upsert, each row says whether this batch claimed the key; what follows from
that (deliveries to create, dead events to revive, mismatches to count, each
sender's answer) is the same for every store and lives here, free of I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.store.base import Ingested, NewEvent

Key = tuple[str, str]  # (route, key)
# A new delivery: (event id, route, upstream, ordering key).
NewDelivery = tuple[int, str, str, str | None]


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
                    (event_id, route, up, first.ordering_key) for up in first.upstreams
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
            results[indexes[0]] = Ingested(event_id, claimed, stored, revived.get(event_id, 0))
            for index in indexes[1:]:
                results[index] = Ingested(event_id, False, stored)
        return [r for r in results if r is not None]
