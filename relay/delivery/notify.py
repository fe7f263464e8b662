"""Notifications (``notify:``) for operators without Prometheus: a breaker open, dead
letters on a route, the oldest undelivered event older than ``backlog_age``, the
disk near or below ``storage.min_free``, the store near or at its cap, a refused
reload.

Every ``TICK`` the process that keeps house looks at what fires now and asks the
store, per target and condition, whether a message is due (``relay.store.base.
Notices``): when a condition starts, again at most once per ``interval`` while it
lasts, and once when it clears. The store decides, so replicas and an owner's
workers send one message between them. Messages go from background tasks with
retries (a message that never went is due again), never in the way of ingest;
the state they need is one small table, which caps, ``max_pending`` and pauses
do not touch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp

from relay.breaker import State
from relay.config import NotifyTarget
from relay.disk import threshold
from relay.errors import StoreError
from relay.forward import shown_url
from relay.logging import get_logger
from relay.runtime import Relay
from relay.store.base import RouteBacklog, Store

TICK: Final = 5.0
TRIES: Final = 3
RETRY_BASE: Final = 1.0  # seconds before the second try; doubled before the third
TIMEOUT: Final = aiohttp.ClientTimeout(total=10)
_ICON: Final = {
    "firing": ":red_circle:",
    "reminder": ":large_orange_circle:",
    "resolved": ":white_check_mark:",
}

log = get_logger()


# "Near": the disk with less than twice storage.min_free left, the store past this
# share of storage.max_bytes.
NEAR_FREE: Final = 2.0
NEAR_CAP: Final = 0.9


def firing(
    relay: Relay,
    backlog: Mapping[str, RouteBacklog],
    full: str | None,
    now: float,
    age: float,
    used: int | None,
    breakers: list[tuple[str, str, int, str | None]],
) -> dict[str, str]:
    """What fires now, as condition -> summary (a condition names its route or upstream);
    ``used``: the store's bytes, when a ``max_bytes`` cap is set; ``breakers``: those
    not closed (``Metrics.breakers``)."""
    out: dict[str, str] = {}
    for route, upstream, state, why in breakers:
        if state == State.OPEN:
            shown = shown_url(upstream)
            out[f"breaker:{route}:{shown}"] = f"route {route}: the breaker is open for {shown}" + (
                f" ({why})" if why else ""
            )
    for name, b in sorted(backlog.items()):
        if b.dead:
            out[f"dead:{name}"] = f"route {name}: {b.dead} dead letters"
        if b.oldest_open_at is not None and now - b.oldest_open_at > age:
            minutes = (now - b.oldest_open_at) / 60
            out[f"backlog:{name}"] = (
                f"route {name}: the oldest undelivered event is {minutes:.0f} min old"
                f" ({b.pending} pending)"
            )
    disk = relay.disk
    if disk.low():
        out["disk_low"] = "the store's disk is below storage.min_free: new webhooks get 503"
    elif (room := disk.room()) is not None:
        floor = threshold(disk.min_bytes, disk.min_ratio, room.total)
        if room.free < NEAR_FREE * floor:
            out["disk_near"] = (
                f"the store's disk has {room.free / 2**20:,.0f} MiB free, near storage.min_free"
                f" ({floor / 2**20:,.0f} MiB), below which new webhooks get 503"
            )
    cap = relay.config.storage.max_bytes
    if full is None and cap and used is not None and used > NEAR_CAP * cap:
        out["store_near_cap"] = (
            f"the store holds {used / 2**20:,.0f} MiB of its storage.max_bytes"
            f" ({cap / 2**20:,.0f} MiB): the oldest finished data is going"
        )
    if full is not None:
        out["store_full"] = full
    reload = relay.metrics.last_reload
    if reload is not None and not reload.ok:
        first = reload.errors[0] if reload.errors else "the file is invalid"
        out["reload_refused"] = f"a reload was refused, the old config runs on: {first}"
    return out


def message(target: NotifyTarget, condition: str, state: str, summary: str, now: float) -> Any:
    host = socket.gethostname()
    if target.format == "slack":
        said = "cleared: " if state == "resolved" else ""
        return {"text": f"{_ICON[state]} webhook-relay on {host}: {said}{summary}"}
    return {
        "relay": host,
        "target": target.name,
        "condition": condition,
        "state": state,
        "summary": summary,
        "at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
    }


class Notifications:
    """The loop, and the messages in flight."""

    def __init__(self, relay: Relay, store: Store) -> None:
        self.relay = relay
        self.store = store
        self.sending: set[asyncio.Task[None]] = set()
        self.session: aiohttp.ClientSession | None = None

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(TICK)
                if self.relay.config.notify:
                    try:
                        await self.round()
                    except StoreError as exc:
                        log.warning("notify_round_failed", error=str(exc))
        finally:
            await self.close()

    async def close(self) -> None:
        for task in self.sending:
            task.cancel()
        await asyncio.gather(*self.sending, return_exceptions=True)
        if self.session is not None:
            await self.session.close()

    async def round(self) -> None:
        store = self.store
        backlog = await store.backlog()
        at = store.clock()
        used = await store.usage() if self.relay.config.storage.max_bytes else None
        breakers = self.relay.metrics.breakers()  # read once a round, whatever the targets
        for target in self.relay.config.notify:
            fires = firing(self.relay, backlog, store.full, at, target.backlog_age, used, breakers)
            for condition, summary in fires.items():
                kind = await store.notice_fire(target.name, condition, at, target.interval, summary)
                if kind is not None:
                    self._send(target, condition, kind, summary, at)
            for condition in await store.notices_active(target.name):
                if condition not in fires:
                    said = f"{condition} cleared"
                    if await store.notice_resolve(target.name, condition, at, said):
                        self._send(target, condition, "resolved", said, at)

    def _send(
        self, target: NotifyTarget, condition: str, state: str, summary: str, now: float
    ) -> None:
        task = asyncio.create_task(
            self._deliver(target, condition, state, summary, now), name=f"notify-{target.name}"
        )
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def _deliver(
        self, target: NotifyTarget, condition: str, state: str, summary: str, now: float
    ) -> None:
        body = json.dumps(message(target, condition, state, summary, now)).encode()
        if self.session is None:  # its own: the one the public app has may not exist here
            self.session = aiohttp.ClientSession(timeout=TIMEOUT)
        why = ""
        for attempt in range(TRIES):
            try:
                async with self.session.post(
                    target.url, data=body, headers={"Content-Type": "application/json"}
                ) as resp:
                    if resp.status < 300:
                        log.info(
                            "notify_sent", target=target.name, condition=condition, state=state
                        )
                        return
                    why = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                why = type(exc).__name__
            if attempt + 1 < TRIES:
                await asyncio.sleep(RETRY_BASE * 2**attempt)
        # The URL is a secret: only the target's name is said.
        log.warning("notify_failed", target=target.name, condition=condition, error=why)
        with contextlib.suppress(StoreError):  # the store down: the next round decides
            await self.store.notice_unsend(target.name, condition, state == "resolved")
