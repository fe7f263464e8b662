"""``rekey``: move everything older keys sealed to the current key, in the background
and paced, then forget the old keys (``POST /api/v1/store/rekey``); and what the
store's keys are (``GET /api/v1/store/keys``).

Runs in the process that holds the store, batch by batch (each batch one short
transaction), at most ``RATE`` rows a second, so ingest keeps its latency. Rows
written meanwhile are sealed with the current key already; the old keys leave the
store's record only after a whole pass, and only then may their files go.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from relay.admin.control import STORE, audit, parse_reason, read_json
from relay.admin.views import iso
from relay.errors import StoreError
from relay.logging import get_logger
from relay.runtime import RELAY
from relay.store.base import RESEALED, Keys
from relay.store.sealing import key_id

# Rows a second, and rows a transaction: a batch holds the writer about a millisecond.
RATE: Final = 2000.0
BATCH: Final = 200

log = get_logger()


@dataclass(slots=True)
class Rekeying:
    """Where the last (or the running) rekey is."""

    started_at: float | None = None
    finished_at: float | None = None
    table: str | None = None
    after_id: int = 0  # in ``table``: every row up to this one is done
    resealed: int = 0
    forgotten: tuple[str, ...] = ()
    error: str | None = None
    task: asyncio.Task[None] | None = None

    def restart(self, store: Keys) -> None:
        self.started_at, self.finished_at, self.table, self.after_id = time.time(), None, None, 0
        self.resealed, self.forgotten, self.error = 0, (), None
        self.task = asyncio.create_task(run(store, self), name="rekey")

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def json(self) -> dict[str, Any]:
        state = "idle" if self.started_at is None else "running" if self.running else "done"
        return {
            "state": "failed" if self.error else state,
            "started_at": None if self.started_at is None else iso(self.started_at),
            "finished_at": None if self.finished_at is None else iso(self.finished_at),
            "table": self.table,
            "after_id": self.after_id,
            "resealed": self.resealed,
            "forgotten_keys": list(self.forgotten),
            "error": self.error,
        }


REKEYING: Final = web.AppKey("rekeying", Rekeying)


async def run(store: Keys, progress: Rekeying, rate: float = RATE, batch: int = BATCH) -> None:
    """One whole pass over every sealed table, then the old keys are forgotten."""
    try:
        for table in RESEALED:
            progress.table, progress.after_id = table, 0
            upto = await store.high_water(table)
            while progress.after_id < upto:
                last, changed = await store.reseal(table, progress.after_id, batch)
                if last is None:
                    break
                progress.resealed += changed
                progress.after_id = last
                await asyncio.sleep(batch / rate)
        progress.forgotten = tuple(await store.forget_keys())
        progress.table = None
        log.info("rekey_done", resealed=progress.resealed, forgotten=list(progress.forgotten))
    except StoreError as exc:
        progress.error = str(exc)
        log.error("rekey_failed", error=str(exc), table=progress.table)
    except Exception as exc:  # a bug: said, not lost in an unwatched task
        progress.error = f"{type(exc).__name__}: {exc}"
        log.exception("rekey_failed", table=progress.table)
    finally:
        progress.finished_at = time.time()


async def start_rekey(request: web.Request) -> web.Response:
    doc = await read_json(request, ("reason",))
    reason = parse_reason(doc, bulk=False)
    progress = request.app[REKEYING]
    if not progress.running:
        progress.restart(request.app[STORE])
        log.info("rekey_started")
        await audit(request, "rekey", {}, 0, reason)
    return web.json_response({"rekey": progress.json()}, status=202)


async def keys(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    enc = relay.config.storage.encryption
    configured = [] if enc is None else [key_id(k) for k in (enc.current, *enc.old) if k]
    return web.json_response(
        {
            "current": None if enc is None or enc.current is None else key_id(enc.current),
            "configured": configured,
            "in_store": await request.app[STORE].key_ids(),
            "rekey": request.app[REKEYING].json(),
        }
    )


async def _stop_rekey(app: web.Application) -> AsyncIterator[None]:
    yield
    task = app[REKEYING].task
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def add_rekey_routes(app: web.Application) -> None:
    app[REKEYING] = Rekeying()
    app.cleanup_ctx.append(_stop_rekey)
    app.router.add_get("/api/v1/store/keys", keys)
    app.router.add_post("/api/v1/store/rekey", start_rekey)
