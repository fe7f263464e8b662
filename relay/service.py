"""Lifecycle: build the apps, run the listeners, handle signals, drain, close."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

from relay import logging as relay_logging
from relay.admin import build_admin_app
from relay.config import Config
from relay.dispatcher import Dispatcher
from relay.errors import RelayError, StoreError, StoreUnavailable
from relay.housekeeping import background, housekeeping, report_orphans
from relay.ingress import add_routes
from relay.limits import ConnectionGuard
from relay.logging import get_logger
from relay.metrics import Metrics
from relay.reload import reload
from relay.runtime import RELAY, Relay
from relay.sdnotify import Notifier, watchdog_interval
from relay.store import open_store_for_url
from relay.store.base import Store
from relay.store.remote import RemoteStore

DISPATCHER: Final = web.AppKey("dispatcher", Dispatcher)
GUARD: Final = web.AppKey("guard", ConnectionGuard)
# Set when a background task dies: the service must stop with a non-zero exit.
FAILED: Final = web.AppKey("failed", asyncio.Future[BaseException])
CUT_OFF_MARGIN: Final = 1.0
# Workers: how often backpressure counts are re-read from the owner (in memory there).
BACKLOG_REFRESH: Final = 1.0

log = get_logger()


def build_app(
    config: Config,
    *,
    store: Store | None = None,
    metrics: Metrics | None = None,
    start_dispatcher: bool = True,
    worker: bool = False,
) -> web.Application:
    """The public app; its cleanup_ctx owns the store, the client session and the dispatcher.

    ``worker``: one of several worker processes (``relay.workers.worker``). The store is
    the owner's, reached over RPC: the owner recovers leases and does the
    housekeeping, the worker only refreshes its backpressure counts from it.
    """
    store = store or open_store_for_url(config.storage.url)
    relay = Relay(config=config, store=store, metrics=metrics or Metrics(), routes={})
    relay.set_routes(config.routes)
    limits = config.limits
    guard = ConnectionGuard(
        limits.max_connections,
        limits.header_timeout,
        # Refused before any route is known: counted under route "".
        lambda reason: relay.metrics.rejected.labels("", reason).inc(),
    )
    relay.after_request = guard.rearm
    app = web.Application(client_max_size=limits.max_body)
    app[RELAY] = relay
    app[GUARD] = guard
    app[FAILED] = asyncio.get_running_loop().create_future()
    app.cleanup_ctx.append(_worker_store_ctx if worker else _store_ctx)
    app.cleanup_ctx.append(_session_ctx)
    app.cleanup_ctx.append(_dispatcher_ctx(start_dispatcher))
    app.cleanup_ctx.append(_task_ctx(_refresh_backlog if worker else _housekeeping))
    app.on_shutdown.append(_on_shutdown)
    add_routes(app)
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    relay = app[RELAY]
    await relay.store.open()
    # Leases left by a crashed process: deliveries go back to pending, sync claims free.
    returned = await relay.store.recover()
    if returned:
        log.warning("leases_recovered", deliveries=returned)
    relay.undelivered = {r: float(n) for r, n in (await relay.store.undelivered_counts()).items()}
    yield
    await relay.store.close()


async def _worker_store_ctx(app: web.Application) -> AsyncIterator[None]:
    relay = app[RELAY]
    store = relay.store
    assert isinstance(store, RemoteStore)
    await store.open()

    # The owner going away leaves nothing to store into: stop, do not answer 503 forever.
    # (Our own close at shutdown resolves ``lost`` too: by then we are draining.)
    def owner_gone(_: object) -> None:
        if not relay.draining:
            log.error("owner_lost", hint="the store's owner process is gone; stopping")
            _fail(app, StoreUnavailable("the owner process is gone"))

    store.lost.add_done_callback(owner_gone)
    relay.undelivered = dict(await store.call("undelivered"))
    yield
    await store.close()


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    relay = app[RELAY]
    # One shared session: connection reuse to the backend is most of a proxy's speed.
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, enable_cleanup_closed=True)
    relay.session = aiohttp.ClientSession(
        connector=connector,
        auto_decompress=True,
        cookie_jar=aiohttp.DummyCookieJar(),  # a relay must not carry cookies between senders
    )
    yield
    await relay.session.close()


def _dispatcher_ctx(start: bool) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        relay = app[RELAY]
        assert relay.session is not None
        dispatcher = Dispatcher(relay.store, relay.session, relay.metrics, log)
        dispatcher.set_routes(list(relay.routes.values()), start=start)
        app[DISPATCHER] = dispatcher
        relay.wake = dispatcher.notify
        dispatcher.settled = relay.settled
        dispatcher.failed.add_done_callback(lambda f: _fail(app, f.result()))
        yield
        relay.wake = lambda route: None
        # Begun by _on_shutdown, alongside the request drain (one grace for both).
        await dispatcher.begin_stop(relay.config.shutdown_grace)

    return ctx


def _fail(app: web.Application, exc: BaseException) -> None:
    if not app[FAILED].done():
        app[FAILED].set_result(exc)


def _task_ctx(
    body: Callable[[web.Application], Coroutine[Any, Any, None]],
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A named background task that lives as long as the app; its death stops the service."""

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
        _fail(app, exc)


async def _housekeeping(app: web.Application) -> None:
    await housekeeping(app[RELAY])


async def _refresh_backlog(app: web.Application) -> None:
    """Worker: the owner keeps the exact counts (it sees every ingest and finish); ours
    only add this worker's own ingests between two refreshes."""
    relay = app[RELAY]
    store = relay.store
    assert isinstance(store, RemoteStore)
    while True:
        await asyncio.sleep(BACKLOG_REFRESH)
        try:
            relay.undelivered = dict(await store.call("undelivered"))
        except StoreError as exc:
            log.error("backlog_refresh_failed", error=str(exc))


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
        app[DISPATCHER].begin_stop(app[RELAY].config.shutdown_grace)


async def start_public(app: web.Application) -> web.AppRunner | None:
    """Set up the public app (its cleanup_ctx opens the store and starts the dispatcher)
    and guard its server; None, logged and cleaned up, if that fails."""
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        # Past our own cut-off (see _on_shutdown), so aiohttp never waits twice.
        shutdown_timeout=app[RELAY].config.shutdown_grace + CUT_OFF_MARGIN,
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


def stop_on_signals() -> asyncio.Event:
    """An event SIGTERM and SIGINT set: the start of the shutdown sequence."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def log_started(config: Config, **extra: Any) -> None:
    log.info(
        "relay_started",
        listen=str(config.listen),
        admin=str(config.admin.listen),
        routes=[r.name for r in config.routes],
        storage=config.storage.url.split("://", 1)[0],
        **extra,
    )


async def serve(config: Config, config_path: Path | None = None) -> int:
    """Run until SIGTERM/SIGINT; 0 on a clean stop, 1 if a background task died."""
    loop = asyncio.get_running_loop()
    notifier = Notifier()
    try:
        app = build_app(config)
    except (RelayError, ValueError) as exc:
        log.error("startup_failed", error=str(exc))
        return 1
    runner = await start_public(app)
    if runner is None:
        return 1
    relay = app[RELAY]
    admin_runner = web.AppRunner(build_admin_app(relay), handle_signals=False, access_log=None)
    await admin_runner.setup()
    # Work stored for a route this config no longer has: reported, kept pending.
    background(report_orphans(relay, "startup_orphaned_events"))
    try:
        for r, listen in ((runner, config.listen), (admin_runner, config.admin.listen)):
            await web.TCPSite(r, listen.host, listen.port, reuse_address=True, backlog=1024).start()
    except OSError as exc:
        log.error("listen_failed", error=str(exc))
        await admin_runner.cleanup()
        await runner.cleanup()
        return 1

    stop = stop_on_signals()
    if config_path is not None:
        loop.add_signal_handler(signal.SIGHUP, lambda: reload_app(app, config_path, notifier))
    watchdog = start_watchdog(notifier)
    log_started(config)
    notifier.ready(f"serving {len(config.routes)} routes")

    stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    failure: asyncio.Future[Any] = app[FAILED]
    await asyncio.wait([stopper, failure], return_when=asyncio.FIRST_COMPLETED)
    failed = app[FAILED].done()
    stopper.cancel()

    # Shutdown, in order:
    # 1. tell systemd and load balancers we are going (readyz answers 503);
    notifier.stopping("draining: finishing requests and attempts in flight")
    relay.draining = True
    log.info("relay_stopping", reason="task_failed" if failed else "signal")
    # 2. stop accepting and drain requests in flight within the grace period, cancel
    #    the rest; then the cleanup_ctx stops the dispatcher (attempts in flight get
    #    the grace too, the rest go back to pending), closes the session and the store;
    await runner.cleanup()
    # 3. the admin listener last, so probes see "draining" until the end.
    await admin_runner.cleanup()
    if watchdog is not None:
        watchdog.cancel()
    notifier.close()
    log.info("relay_stopped")
    relay_logging.flush()
    return 1 if failed else 0


def start_watchdog(notifier: Notifier) -> asyncio.Task[None] | None:
    interval = watchdog_interval()
    if interval is None or not notifier.enabled:
        return None

    async def ping() -> None:
        while True:
            notifier.watchdog()
            await asyncio.sleep(interval)

    return asyncio.create_task(ping(), name="watchdog")


def reload_app(app: web.Application, path: Path, notifier: Notifier) -> None:
    """SIGHUP for a process with a public app: its routes, then its dispatcher's."""
    reload(
        app[RELAY],
        path,
        notifier,
        lambda: app[DISPATCHER].set_routes(list(app[RELAY].routes.values())),
    )


def settle_heap() -> None:
    """Start-up is done: move what it allocated out of the collector's way.

    The modules, the app and the config live until exit; without this every
    full collection walks them again, a pause in the middle of a request.
    """
    gc.collect()
    gc.freeze()


def run(config: Config, config_path: Path | None = None) -> int:
    if config.workers:
        from relay.workers.owner import supervise

        return run_loop(supervise(config, config_path))
    return run_loop(serve(config, config_path))


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop where it is installed, else on asyncio's loop."""
    loop_factory: Any = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)
