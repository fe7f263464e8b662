"""Slowing down token guesses, per client (no I/O).

A client's first few wrong tokens cost nothing (a typo, a stale CLI variable);
after that each further wrong one locks it out for twice as long as the last,
up to a ceiling, and every request it makes while locked out gets 429 with
``Retry-After`` without its token being looked at. A right token clears the
record. Records are forgotten after a quiet spell and their number is bounded,
so a flood of clients cannot grow memory without end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

FREE_FAILURES: Final = 5
FIRST_LOCKOUT: Final = 1.0
MAX_LOCKOUT: Final = 300.0
FORGET_AFTER: Final = 900.0
MAX_CLIENTS: Final = 10_000


@dataclass(frozen=True, slots=True)
class Record:
    failures: int
    last: float
    locked_until: float


class Throttle:
    def __init__(
        self,
        free: int = FREE_FAILURES,
        first: float = FIRST_LOCKOUT,
        ceiling: float = MAX_LOCKOUT,
        forget: float = FORGET_AFTER,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.free = free
        self.first = first
        self.ceiling = ceiling
        self.forget = forget
        self.max_clients = max_clients
        self._clients: dict[str, Record] = {}

    def wait(self, client: str, now: float) -> float:
        """Seconds this client must wait before its token is looked at again (0: none)."""
        record = self._clients.get(client)
        if record is None:
            return 0.0
        if now - record.last > self.forget:
            del self._clients[client]
            return 0.0
        return max(0.0, record.locked_until - now)

    def failed(self, client: str, now: float) -> bool:
        """Record a wrong token; True when this failure starts a lockout burst (log it once)."""
        record = self._clients.pop(client, None)
        if record is not None and now - record.last > self.forget:
            record = None
        failures = (record.failures if record else 0) + 1
        over = failures - self.free
        lockout = min(self.ceiling, self.first * 2 ** (over - 1)) if over > 0 else 0.0
        self._clients[client] = Record(failures, now, now + lockout)  # newest last
        while len(self._clients) > self.max_clients:
            del self._clients[next(iter(self._clients))]
        return over == 1

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)
