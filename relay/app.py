"""The public app, assembled from the parts a process role hands it.

The role decides where the store comes from and what keeps it in shape (its
``store_ctx`` and ``tasks``); this module adds what every role's public
listener has: the connection guard, the one shared client session, the
dispatcher, the webhook handler, and the drain at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from relay.delivery.dispatcher import Dispatcher
from relay.delivery.outbound import LocalDelivery
from relay.errors import RelayError
from relay.forward import new_session
from relay.intake.limits import ConnectionGuard, Tally
from relay.intake.listener import add_routes
from relay.lifecycle import settle_heap
from relay.logging import get_logger
from relay.reload import reload
from relay.runtime import RELAY, Relay
from relay.sdnotify import Notifier

DISPATCHER: Final = web.AppKey("dispatcher", Dispatcher)
GUARD: Final = web.AppKey("guard", ConnectionGuard)
# Set when a background task dies: the process must stop with a non-zero exit.
FAILED: Final = web.AppKey("failed", asyncio.Future[BaseException])
# aiohttp's own shutdown timeout sits past our cut-off (see _on_shutdown).
CUT_OFF_MARGIN: Final = 1.0
# Headers a request may carry (aiohttp's parser answers 400 past it). Senders use a
# few dozen; CPython's http.client stops at 100.
MAX_HEADERS: Final = 128

# A cleanup context: set up before ``yield``, torn down after.
Context = Callable[[web.Application], AsyncIterator[None]]
# A background task's body: it lives as long as the app; its death stops the process.
Task = Callable[[web.Application], Coroutine[Any, Any, None]]

log = get_logger()


def build_app(
    relay: Relay,
    delivery: LocalDelivery,
    *,
    store_ctx: Context,
    tasks: Sequence[Task] = (),
    start_dispatcher: bool = True,
) -> web.Application:
    """The public app on ``relay``; ``store_ctx`` opens and closes its store, and its
    dispatcher stands behind ``delivery`` (the port the role gave ``relay``).

    ``start_dispatcher=False`` registers the delivery loops without running
    them, so tests and tools drive delivery with ``Dispatcher.burst()``.
    """
    limits = relay.config.limits
    tally = Tally()

    def refused(reason: str) -> None:
        # Refused before any route is known: counted under route "".
        relay.metrics.rejected.labels("", reason).inc()
        if (count := tally.add(reason, time.monotonic())) is not None:
            log.warning("connections_refused", reason=reason, count=count, every=tally.every)

    guard = ConnectionGuard(limits.max_connections, limits.header_timeout, refused)
    relay.after_request = guard.rearm
    app = web.Application(client_max_size=limits.max_body)
    app[RELAY] = relay
    app[GUARD] = guard
    app[FAILED] = asyncio.get_running_loop().create_future()
    app.cleanup_ctx.append(_tracing_ctx)
    app.cleanup_ctx.append(store_ctx)
    app.cleanup_ctx.append(_session_ctx)
    app.cleanup_ctx.append(_dispatcher_ctx(delivery, start_dispatcher))
    app.cleanup_ctx.extend(_task_ctx(body) for body in tasks)
    app.on_shutdown.append(_on_shutdown)
    add_routes(app)
    return app


def fail(app: web.Application, exc: BaseException) -> None:
    """Stop the process with a non-zero exit (the first failure wins)."""
    if not app[FAILED].done():
        app[FAILED].set_result(exc)


async def _tracing_ctx(app: web.Application) -> AsyncIterator[None]:
    """OpenTelemetry when ``tracing.enabled``: first up, last down (spans of the
    shutdown drain are exported too)."""
    relay = app[RELAY]
    if relay.tracing is None and relay.config.tracing.enabled:
        from relay.tracing import otel  # the extra: imported only when switched on

        relay.tracing = otel.from_environment(relay.config.tracing)
    yield
    if relay.tracing is not None:
        await asyncio.to_thread(relay.tracing.shutdown)
        relay.tracing = None


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    relay = app[RELAY]
    relay.session = new_session()
    yield
    await relay.session.close()


def _dispatcher_ctx(delivery: LocalDelivery, start: bool) -> Context:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        relay = app[RELAY]
        assert relay.session is not None
        # With workers: N every worker delivers: each takes 1/N of an upstream's rate.
        share = 1.0 / max(1, relay.config.workers)
        dispatcher = Dispatcher(
            relay.store,
            relay.session,
            relay.metrics,
            log,
            backlog=relay.backlog,
            rate_share=share,
            answer_bytes=relay.config.storage.answer_bytes,
            tracing=relay.tracing,
        )
        dispatcher.set_routes(list(relay.routes.values()), start=start)
        app[DISPATCHER] = dispatcher
        delivery.attach(dispatcher)
        dispatcher.failed.add_done_callback(lambda f: fail(app, f.result()))
        yield
        delivery.detach()  # nothing is woken or sent in line any more
        # Begun by _on_shutdown, alongside the request drain (one grace for both).
        await dispatcher.begin_stop(relay.config.shutdown_grace)

    return ctx


def _task_ctx(body: Task) -> Context:
    """A named background task that lives as long as the app; its death stops the process."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(body(app), name=body.__name__.strip("_"))
        task.add_done_callback(functools.partial(_watch_task, app))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx


def _watch_task(app: web.Application, task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("task_died", task=task.get_name(), error=repr(exc))
        fail(app, exc)


async def _on_shutdown(app: web.Application) -> None:
    # Listeners are closed by now; requests still arriving on open connections get 503.
    relay = app[RELAY]
    relay.draining = True
    # aiohttp waits for handlers, then cancels them and waits as long again; we cut
    # them off ourselves when the grace ends (a sync claim is released on the way out).
    asyncio.get_running_loop().call_later(relay.config.shutdown_grace, relay.cut_off)
    # The dispatcher drains while aiohttp drains requests, so SIGTERM-to-exit stays
    # within one grace period instead of one after the other.
    if DISPATCHER in app:
        app[DISPATCHER].begin_stop(relay.config.shutdown_grace)


async def start_public(app: web.Application) -> web.AppRunner | None:
    """Set up the public app (its cleanup_ctx opens the store and starts the dispatcher)
    and guard its server; None, logged and cleaned up, if that fails."""
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        # Past our own cut-off (see _on_shutdown), so aiohttp never waits twice.
        shutdown_timeout=app[RELAY].config.shutdown_grace + CUT_OFF_MARGIN,
        max_headers=MAX_HEADERS,
    )
    try:
        await runner.setup()
    except (RelayError, OSError) as exc:
        log.error("startup_failed", error=str(exc))
        await runner.cleanup()
        return None
    assert runner.server is not None
    app[GUARD].install(runner.server)  # before a listener accepts its first connection
    settle_heap()
    return runner


def apply_reload(app: web.Application, path: Path, notifier: Notifier) -> bool:
    """SIGHUP for a process with a public app: its routes, then its dispatcher's."""
    return reload(
        app[RELAY],
        path,
        notifier,
        lambda: app[DISPATCHER].set_routes(list(app[RELAY].routes.values())),
    )
