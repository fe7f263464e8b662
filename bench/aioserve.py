"""Run one aiohttp app until SIGTERM, on uvloop when it is installed (as the relay does)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web


def run(app: web.Application, host: str, port: int) -> int:
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(app, host, port))
    return 0


async def _serve(app: web.Application, host: str, port: int) -> None:
    # Requests still held (the backend's /hang) must not delay a stop.
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=1024, reuse_address=True).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def listen_args(argv: list[str] | None, doc: str) -> Any:
    import argparse

    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", help="base URL to forward to (proxy only)")
    return p.parse_args(argv)


def serve_main(build: Callable[[], web.Application], doc: str, argv: list[str] | None) -> int:
    """A backend module's ``main``: ``--host`` and ``--port``, then serve ``build()``."""
    args = listen_args(argv, doc)
    return run(build(), args.host, args.port)
