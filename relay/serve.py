"""The single-process role (``workers: 0``, the default): one process holds the
store, serves the public and admin listeners, delivers, and keeps house."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from aiohttp import web

from relay.admin import build_admin_app
from relay.app import FAILED, apply_reload, build_app, start_public
from relay.config import Config
from relay.delivery.notify import Notifications
from relay.delivery.outbound import LocalDelivery
from relay.errors import RelayError
from relay.housekeeping import housekeeping, open_store, report_orphans, take_over
from relay.lifecycle import (
    background,
    begin_shutdown,
    linger,
    log_started,
    log_stopped,
    on_reload_signal,
    start_watchdog,
    stop_on_signals,
    until_stopped,
)
from relay.logging import get_logger
from relay.metrics import Metrics
from relay.runtime import RELAY, Relay
from relay.sdnotify import Notifier
from relay.store.base import Store

# The whole store this process holds (its hot path, admin and upkeep alike).
OWN_STORE: Final = web.AppKey("own_store", Store)

log = get_logger()


def single_process_app(
    config: Config,
    *,
    store: Store | None = None,
    metrics: Metrics | None = None,
    start_dispatcher: bool = True,
) -> web.Application:
    """The public app of a process that holds its own store (the store named by the
    config unless one is given); its cleanup_ctx opens, recovers and closes it."""
    store = store or open_store(config)
    delivery = LocalDelivery()
    relay = Relay(config=config, store=store, metrics=metrics or Metrics(), outbound=delivery)
    relay.set_routes(config.routes)

    async def store_ctx(_app: web.Application) -> AsyncIterator[None]:
        await store.open()
        await take_over(relay, store)
        yield
        await store.close()

    async def keep_house(_app: web.Application) -> None:
        await housekeeping(relay, store)

    async def notify(_app: web.Application) -> None:
        await Notifications(relay, store).run()

    app = build_app(
        relay,
        delivery,
        store_ctx=store_ctx,
        tasks=[keep_house, notify],
        start_dispatcher=start_dispatcher,
    )
    app[OWN_STORE] = store
    return app


async def serve(config: Config, config_path: Path | None = None) -> int:
    """Run until SIGTERM/SIGINT; 0 on a clean stop, 1 if a background task died."""
    notifier = Notifier()
    try:
        app = single_process_app(config)
    except (RelayError, ValueError) as exc:
        log.error("startup_failed", error=str(exc))
        return 1
    runner = await start_public(app)
    if runner is None:
        return 1
    relay, store = app[RELAY], app[OWN_STORE]
    admin_runner = web.AppRunner(
        build_admin_app(relay, store), handle_signals=False, access_log=None
    )
    await admin_runner.setup()
    # Work stored for a route this config no longer has: reported, kept pending.
    background(report_orphans(relay, store, "startup_orphaned_events"), "orphan-report")
    try:
        for r, name, listen, settings in (
            (runner, "webhook", config.listen, config.tls),
            (admin_runner, "admin", config.admin.listen, config.admin.tls),
        ):
            await web.TCPSite(
                r,
                listen.host,
                listen.port,
                reuse_address=True,
                backlog=1024,
                ssl_context=relay.listener_tls(name, settings),
            ).start()
    except OSError as exc:
        log.error("listen_failed", error=str(exc))
        await admin_runner.cleanup()
        await runner.cleanup()
        return 1

    stop = stop_on_signals()
    if config_path is not None:
        path = config_path
        on_reload_signal(lambda: reload_app(app, path, notifier))
    watchdog = start_watchdog(notifier)
    log_started(config)
    notifier.ready(f"serving {len(config.routes)} routes")

    failure = app[FAILED]
    failed = await until_stopped(stop, failure)

    # Shutdown, in order:
    # 1. tell systemd and load balancers we are going (readyz answers 503);
    begin_shutdown(relay, notifier, failed, "relay_stopping")
    # 2. serve on for drain_delay, so the balancer sends new webhooks elsewhere first;
    await linger(relay, stop, failed)
    # 3. stop accepting and drain requests in flight within the grace period, cancel
    #    the rest; then the cleanup_ctx stops the dispatcher (attempts in flight get
    #    the grace too, the rest go back to pending), closes the session and the store;
    await runner.cleanup()
    # 4. the admin listener last, so probes see "draining" until the end.
    await admin_runner.cleanup()
    if watchdog is not None:
        watchdog.cancel()
    notifier.close()
    log_stopped("relay_stopped")
    return 1 if failed else 0


def reload_app(app: web.Application, path: Path, notifier: Notifier) -> bool:
    """SIGHUP: the new routes, then the report of what they leave without a delivery loop."""
    if not apply_reload(app, path, notifier):
        return False
    report = report_orphans(app[RELAY], app[OWN_STORE], "reload_orphaned_events")
    background(report, "orphan-report")
    return True
