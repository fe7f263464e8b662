"""What every process role shares from start to exit: the event loop, signals,
the watchdog, heap settling, named background tasks, waiting for the end, and
the first step of every shutdown. It holds no role and builds no app."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from relay import logging as relay_logging
from relay.config import Config
from relay.logging import get_logger
from relay.runtime import Relay
from relay.sdnotify import Notifier, watchdog_interval

log = get_logger()


def run_loop(main: Coroutine[Any, Any, int], *, writer_thread: bool = False) -> int:
    """Run ``main`` on uvloop where it is installed, else on asyncio's loop.

    ``writer_thread``: the process commits to SQLite on a thread of its own, and
    then runs on asyncio's loop. uvloop lets go of the GIL around every libuv
    callback and takes it back at once; the writer, woken each time, finds it taken
    again and waits on, so its commits took twice as long and acks waited for them
    (ingest ran 20 % slower on uvloop, CPU per event 25 % higher: docs/benchmarks.md).
    """
    loop_factory: Any = None
    try:
        import uvloop

        if not writer_thread:
            loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)


def stop_on_signals() -> asyncio.Event:
    """An event SIGTERM and SIGINT set: the start of the shutdown sequence."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def on_reload_signal(reload: Callable[[], object]) -> None:
    """SIGHUP runs ``reload`` between two event-loop steps."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)


def start_watchdog(notifier: Notifier) -> asyncio.Task[None] | None:
    """Ping systemd's watchdog while the loop runs; None when there is none."""
    interval = watchdog_interval()
    if interval is None or not notifier.enabled:
        return None

    async def ping() -> None:
        while True:
            notifier.watchdog()
            await asyncio.sleep(interval)

    return asyncio.create_task(ping(), name="watchdog")


def settle_heap() -> None:
    """Start-up is done: move what it allocated out of the collector's way.

    The modules, the app and the config live until exit; without this every
    full collection walks them again, a pause in the middle of a request.
    """
    gc.collect()
    gc.freeze()


_TASKS: set[asyncio.Task[None]] = set()


def background(coro: Coroutine[Any, Any, None], name: str) -> None:
    """A fire-and-forget task, referenced until done so it is not collected."""
    task = asyncio.create_task(coro, name=name)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


async def until_stopped(stop: asyncio.Event, *failures: Awaitable[Any]) -> bool:
    """Wait for SIGTERM/SIGINT or the first of ``failures``; True if a failure came first.

    Futures and tasks passed in are left as they are; what this wraps, it cancels."""
    waits = [asyncio.ensure_future(stop.wait())]
    ours = [waits[0]]
    for f in failures:
        fut = asyncio.ensure_future(f)
        waits.append(fut)
        if fut is not f:
            ours.append(fut)
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for fut in ours:
        fut.cancel()
    return not stop.is_set()


def begin_shutdown(relay: Relay, notifier: Notifier, failed: bool, event: str) -> None:
    """Step 1 of every shutdown: tell systemd and load balancers we are going
    (readyz answers 503, answers close their connections), and say why."""
    notifier.stopping("draining: finishing requests and attempts in flight")
    relay.leaving = True
    log.info(
        event, reason="task_failed" if failed else "signal", drain_delay=relay.config.drain_delay
    )


async def linger(relay: Relay, stop: asyncio.Event, failed: bool) -> None:
    """Step 2 of a process that serves webhooks: keep serving for ``drain_delay`` while
    load balancers see readyz fail; a second signal (or a failure) cuts it short."""
    delay = relay.config.drain_delay
    if failed or delay <= 0:
        return
    stop.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)


def log_started(config: Config, **extra: Any) -> None:
    log.info(
        "relay_started",
        listen=str(config.listen),
        admin=str(config.admin.listen),
        routes=[r.name for r in config.routes],
        storage=config.storage.url.split("://", 1)[0],
        **extra,
    )
    for warning in config.warnings():
        log.warning("config_warning", message=warning)


def log_stopped(event: str, **extra: Any) -> None:
    """The last line of a process, written out before it exits."""
    log.info(event, **extra)
    relay_logging.flush()
