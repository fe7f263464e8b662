"""One worker process of a multi-process relay (``workers: N``).

Started by the owner (``relay.workers.owner``) as ``python -m relay.workers.worker``. It
serves the public listener on a socket the owner bound and passed down, and
delivers queued events; every store call goes to the owner over RPC
(``relay.store.remote``). It has no admin listener and never talks to systemd:
the owner does both for the whole group.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Final

import structlog
from aiohttp import web

from relay import config as config_mod
from relay import logging as relay_logging
from relay.config import Config
from relay.errors import ConfigError
from relay.logging import get_logger
from relay.metrics import Metrics
from relay.runtime import RELAY
from relay.sdnotify import Notifier
from relay.service import (
    FAILED,
    build_app,
    reload_app,
    run_loop,
    start_public,
    stop_on_signals,
)
from relay.store.remote import RemoteStore

# Set by the owner for each worker it starts.
ENV_SOCKET: Final = "RELAY_WORKER_STORE_SOCKET"
ENV_LISTEN_FD: Final = "RELAY_WORKER_LISTEN_FD"
ENV_INDEX: Final = "RELAY_WORKER_INDEX"

log = get_logger()


async def serve_worker(
    config: Config, config_path: Path, store_socket: str, listen_fd: int, index: int
) -> int:
    """Serve until SIGTERM/SIGINT; 0 on a clean stop, 1 on a failure (the owner stops all)."""
    structlog.contextvars.bind_contextvars(worker=index)
    loop = asyncio.get_running_loop()
    app: web.Application | None = None

    def on_push(name: str, arg: Any) -> None:
        # The owner's admin API requeued work for a route: deliver it now, not at the next poll.
        if name == "wake" and app is not None:
            app[RELAY].wake(str(arg))

    store = RemoteStore(store_socket, on_push=on_push)
    app = build_app(config, store=store, metrics=Metrics(), worker=True)
    runner = await start_public(app)  # connects to the owner, starts the dispatcher
    if runner is None:
        return 1
    relay = app[RELAY]
    listener = socket.socket(fileno=listen_fd)
    await web.SockSite(runner, listener, backlog=1024).start()

    stop = stop_on_signals()
    quiet = Notifier("")  # systemd hears from the owner only
    loop.add_signal_handler(signal.SIGHUP, lambda: reload_app(app, config_path, quiet))
    log.info("worker_started", pid=os.getpid())
    relay_logging.flush()  # in the log before the owner reports the group ready
    await store.call("ready", index, os.getpid())

    stopper: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    await asyncio.wait([stopper, app[FAILED]], return_when=asyncio.FIRST_COMPLETED)
    failed = app[FAILED].done()
    stopper.cancel()
    # Shutdown, in order: stop accepting and drain requests and attempts in
    # flight within the grace (the owner keeps the store up until we exit),
    # then the cleanup_ctx closes the session and the connection to the owner.
    relay.draining = True
    log.info("worker_stopping", reason="task_failed" if failed else "signal")
    await runner.cleanup()
    log.info("worker_stopped")
    relay_logging.flush()
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relay.workers.worker", description=__doc__)
    parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        store_socket = os.environ[ENV_SOCKET]
        listen_fd = int(os.environ[ENV_LISTEN_FD])
        index = int(os.environ.get(ENV_INDEX, "0"))
    except (KeyError, ValueError):
        print(
            "relay.workers.worker is started by `webhook-relay serve` (workers: N)", file=sys.stderr
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
