"""One worker process of a multi-process relay (``workers: N``).

Started by the owner (``relay.workers.owner``) as ``python -m relay.workers.worker``.
It serves the public listener on a socket the owner bound and passed down, and
delivers queued events; every store call goes to the owner over RPC
(``relay.store.remote``). It has no admin listener and never talks to systemd:
the owner does both for the whole group.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from aiohttp import web

from relay import config as config_mod
from relay import logging as relay_logging
from relay.app import FAILED, apply_reload, build_app, fail, start_public
from relay.config import Config
from relay.delivery.outbound import LocalDelivery
from relay.errors import ConfigError, StoreError, StoreUnavailable
from relay.lifecycle import (
    begin_shutdown,
    linger,
    log_stopped,
    on_reload_signal,
    run_loop,
    stop_on_signals,
    until_stopped,
)
from relay.logging import get_logger
from relay.metrics import Metrics
from relay.runtime import RELAY, Relay
from relay.sdnotify import Notifier
from relay.store.remote import RemoteStore
from relay.workers import protocol

# How often backpressure counts are re-read from the owner (in memory there).
BACKLOG_REFRESH: Final = 1.0
OWNER: Final = web.AppKey("owner", RemoteStore)

log = get_logger()


def worker_app(config: Config, owner: RemoteStore, metrics: Metrics) -> web.Application:
    """The public app of a worker: its store is the owner's, reached over RPC; the
    owner recovers leases and keeps house, the worker only refreshes its counts."""
    delivery = LocalDelivery()
    relay = Relay(config=config, store=owner, metrics=metrics, outbound=delivery)
    relay.set_routes(config.routes)
    owner.on_push = protocol.on_push(delivery.wake)

    async def owner_ctx(app: web.Application) -> AsyncIterator[None]:
        await owner.open()

        # The owner going away leaves nothing to store into: stop, do not answer 503
        # forever. (Our own close at shutdown resolves ``lost`` too: by then we drain.)
        def owner_gone(_: object) -> None:
            if not relay.draining:
                log.error("owner_lost", hint="the store's owner process is gone; stopping")
                fail(app, StoreUnavailable("the owner process is gone"))

        owner.lost.add_done_callback(owner_gone)
        await relay.backlog.refresh(lambda: protocol.undelivered(owner))
        yield
        await owner.close()

    async def refresh_backlog(_app: web.Application) -> None:
        # The owner keeps the exact counts (it sees every ingest and finish); ours
        # only add this worker's own ingests between two refreshes.
        while True:
            await asyncio.sleep(BACKLOG_REFRESH)
            try:
                await relay.backlog.refresh(lambda: protocol.undelivered(owner))
            except StoreError as exc:
                log.error("backlog_refresh_failed", error=str(exc))

    app = build_app(relay, delivery, store_ctx=owner_ctx, tasks=[refresh_backlog])
    app[OWNER] = owner
    return app


async def serve_worker(
    config: Config, config_path: Path, store_socket: str, listen_fd: int, index: int
) -> int:
    """Serve until SIGTERM/SIGINT; 0 on a clean stop, 1 on a failure (the owner stops all)."""
    relay_logging.bind_process(worker=index)
    app = worker_app(config, RemoteStore(store_socket), Metrics())
    runner = await start_public(app)  # connects to the owner, starts the dispatcher
    if runner is None:
        return 1
    relay = app[RELAY]
    listener = socket.socket(fileno=listen_fd)
    context = relay.listener_tls("webhook", config.tls)
    await web.SockSite(runner, listener, backlog=1024, ssl_context=context).start()

    stop = stop_on_signals()
    quiet = Notifier("")  # systemd hears from the owner only
    on_reload_signal(lambda: apply_reload(app, config_path, quiet))
    log.info("worker_started", pid=os.getpid())
    relay_logging.flush()  # in the log before the owner reports the group ready
    await protocol.report_ready(app[OWNER], index)

    failure = app[FAILED]
    failed = await until_stopped(stop, failure)
    # Shutdown, in order: stop accepting and drain requests and attempts in
    # flight within the grace (the owner keeps the store up until we exit),
    # then the cleanup_ctx closes the session and the connection to the owner.
    begin_shutdown(relay, quiet, failed, "worker_stopping")
    await linger(relay, stop, failed)  # the owner signals every worker at once
    await runner.cleanup()
    log_stopped("worker_stopped")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {protocol.WORKER_MODULE}", description=__doc__
    )
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        store_socket = os.environ[protocol.ENV_SOCKET]
        listen_fd = int(os.environ[protocol.ENV_LISTEN_FD])
        index = int(os.environ.get(protocol.ENV_INDEX, "0"))
    except (KeyError, ValueError):
        print(
            f"{protocol.WORKER_MODULE} is started by `webhook-relay serve` (workers: N)",
            file=sys.stderr,
        )
        return 2
    try:
        cfg = config_mod.load(args.config)
    except ConfigError as exc:
        # The owner validated this file a moment ago: it changed under us.
        print(exc, file=sys.stderr)
        return 2
    relay_logging.configure(cfg.log.level, cfg.log.format)
    return run_loop(serve_worker(cfg, args.config, store_socket, listen_fd, index))


if __name__ == "__main__":
    sys.exit(main())
