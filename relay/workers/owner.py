"""The owner of a multi-process relay (``workers: N``).

One Python event loop tops out at a few thousand webhooks a second. With
``workers: N`` the relay runs as one owner process and N workers:

- the owner holds the store (the only SQLite writer: several writer processes
  on one file contend for its lock and are slower than one), serves it to the
  workers over a private Unix socket (``relay.store.remote``), recovers
  leases at start-up, runs housekeeping, the admin listener and the systemd protocol;
- each worker (``relay.workers.worker``) accepts on the public socket the
  owner bound, ingests, and delivers.

The two share ``relay.workers.protocol`` and never import each other.

A worker that dies stops the whole group with a non-zero exit, as a dead
dispatcher does in one process: the service manager restarts it, and start-up
recovery returns the dead worker's leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from relay import logging as relay_logging
from relay.admin import build_admin_app
from relay.config import Config
from relay.delivery.notify import Notifications
from relay.errors import RelayError
from relay.housekeeping import housekeeping, open_store, report_orphans, take_over
from relay.lifecycle import (
    background,
    begin_shutdown,
    log_started,
    on_reload_signal,
    settle_heap,
    start_watchdog,
    stop_on_signals,
    until_stopped,
)
from relay.logging import get_logger
from relay.reload import reload
from relay.runtime import Relay
from relay.sdnotify import Notifier
from relay.store.remote import StoreServer
from relay.workers import protocol
from relay.workers.metrics import OwnerMetrics, worker_env

# Workers import aiohttp and connect back; far longer than this means they are stuck.
READY_TIMEOUT: Final = 60.0
# After the grace: what a worker gets to close its connections before SIGKILL.
EXIT_MARGIN: Final = 5.0
# How long start-up waits for the listen port of a crashed group to be released.
BIND_PATIENCE: Final = 5.0

log = get_logger()


class Group:
    """The worker processes: started, watched, signalled, reaped."""

    def __init__(self, count: int, config_path: Path, env: dict[str, str], listen_fd: int) -> None:
        self.count = count
        self.config_path = config_path
        self.env = env
        self.listen_fd = listen_fd
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.waits: dict[int, asyncio.Task[int]] = {}
        self.ready_indexes: set[int] = set()
        self.all_ready = asyncio.Event()
        # Set when a worker exits: at shutdown that is expected, otherwise a failure.
        self.exited = asyncio.Event()

    async def start(self) -> None:
        for index in range(self.count):
            env = {**self.env, protocol.ENV_INDEX: str(index)}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", protocol.WORKER_MODULE, "--config", str(self.config_path),
                env=env, pass_fds=(self.listen_fd,),
            )  # fmt: skip
            self.procs[index] = proc
            self.waits[index] = asyncio.create_task(self._wait(proc), name=f"worker-{index}")

    async def _wait(self, proc: asyncio.subprocess.Process) -> int:
        code = await proc.wait()
        self.exited.set()
        return code

    async def ready(self, index: int) -> None:
        """A worker's RPC call once it accepts on the listener."""
        self.ready_indexes.add(index)
        if len(self.ready_indexes) == self.count:
            self.all_ready.set()

    def dead(self) -> dict[int, int]:
        """Exit codes of the workers that have exited, by index."""
        return {i: t.result() for i, t in self.waits.items() if t.done()}

    def signal(self, sig: int) -> None:
        for index, proc in self.procs.items():
            if not self.waits[index].done():
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def stop(self, grace: float) -> dict[int, int]:
        """SIGTERM each worker (they drain within ``grace``), SIGKILL stragglers; exit codes."""
        self.signal(signal.SIGTERM)
        pending = [t for t in self.waits.values() if not t.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace + EXIT_MARGIN)
            if late:
                log.error("workers_killed", count=len(late), hint="past the shutdown grace")
                self.signal(signal.SIGKILL)
                await asyncio.wait(late)
        return self.dead()


async def _listen(config: Config) -> socket.socket:
    host, port = config.listen.host, config.listen.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BIND_PATIENCE
    while True:
        try:
            sock = socket.create_server((host, port), family=family, backlog=1024)
            break
        except OSError as exc:
            # After a crash the dead owner's workers may hold the port a moment
            # longer: they exit as soon as they notice the owner is gone.
            if exc.errno != errno.EADDRINUSE or loop.time() >= deadline:
                raise
            await asyncio.sleep(0.05)
    sock.set_inheritable(True)
    return sock


async def supervise(config: Config, config_path: Path | None) -> int:
    """Run the owner and its workers until SIGTERM/SIGINT; 0 on a clean stop."""
    if config_path is None:
        log.error("startup_failed", error="workers: N needs the config file (workers read it)")
        return 1
    notifier = Notifier()
    # Private to this user (mkdtemp makes it 0700): the RPC frames are pickles.
    workdir = Path(tempfile.mkdtemp(prefix="webhook-relay-"))
    try:
        return await _supervise(config, config_path, notifier, workdir)
    finally:
        notifier.close()
        shutil.rmtree(workdir, ignore_errors=True)
        relay_logging.flush()


async def _supervise(
    config: Config,
    config_path: Path,
    notifier: Notifier,
    workdir: Path,
) -> int:
    metrics_dir = workdir / "metrics"
    metrics_dir.mkdir()
    try:
        store = open_store(config)
        await store.open()
    except (RelayError, ValueError) as exc:
        log.error("startup_failed", error=str(exc))
        return 1
    metrics = OwnerMetrics(metrics_dir)
    wake_workers = protocol.WakeWorkers()
    relay = Relay(config=config, store=store, metrics=metrics, outbound=wake_workers)
    relay.set_routes(config.routes)
    # The workers serve the webhook listener's TLS; the owner reads its files too,
    # for the expiry gauge (which it exposes) and to refuse a reload they fail.
    relay.listener_tls("webhook", config.tls)
    server: StoreServer | None = None
    admin_runner: web.AppRunner | None = None
    listener: socket.socket | None = None
    group: Group | None = None
    tasks: list[asyncio.Task[Any]] = []
    failed = False
    try:
        # No worker runs yet: every lease in the store was left by a crashed group.
        await take_over(relay, store)
        listener = await _listen(config)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
        env.update(worker_env(metrics_dir))
        env[protocol.ENV_SOCKET] = str(workdir / "store.sock")
        env[protocol.ENV_LISTEN_FD] = str(listener.fileno())
        group = Group(config.workers, config_path, env, listener.fileno())
        server = StoreServer(
            store,
            workdir / "store.sock",
            extras=protocol.owner_calls(store, relay.backlog, group.ready),
        )
        await server.start()
        # Admin replays wake the workers' dispatchers, not a local one.
        wake_workers.attach(server)
        admin_app = build_admin_app(relay, store)
        admin_runner = web.AppRunner(admin_app, handle_signals=False, access_log=None)
        await admin_runner.setup()
        await group.start()
        # The workers hold the listener now. Our copy would keep the port open after
        # the last worker stops accepting: senders would queue there, unanswered.
        listener.close()
        listener = None
        ready = asyncio.ensure_future(group.all_ready.wait())
        exited = asyncio.ensure_future(group.exited.wait())
        await asyncio.wait([ready, exited], timeout=READY_TIMEOUT, return_when="FIRST_COMPLETED")
        ready.cancel()
        exited.cancel()
        if not group.all_ready.is_set():
            log.error("startup_failed", error="workers did not start", exited=group.dead())
            failed = True
            return 1
        # Probes answer once every worker accepts: readyz before that would route
        # traffic to a group that may still fail to start.
        admin = config.admin.listen
        await web.TCPSite(
            admin_runner,
            admin.host,
            admin.port,
            reuse_address=True,
            ssl_context=relay.listener_tls("admin", config.admin.tls),
        ).start()
    except (RelayError, OSError) as exc:
        log.error("startup_failed", error=str(exc))
        failed = True
        return 1
    finally:
        if failed:
            await _close(group, server, admin_runner, listener, relay, metrics, tasks)

    settle_heap()
    house = asyncio.create_task(housekeeping(relay, store), name="housekeeping")
    tasks.append(house)
    tasks.append(asyncio.create_task(Notifications(relay, store).run(), name="notify"))
    watchdog = start_watchdog(notifier)
    if watchdog is not None:
        tasks.append(watchdog)
    background(report_orphans(relay, store, "startup_orphaned_events"), "orphan-report")

    stop = stop_on_signals()

    def on_hup() -> None:
        # Each worker re-reads the same file; the owner's copy serves the admin API.
        if reload(relay, config_path, notifier, lambda: None):
            group.signal(signal.SIGHUP)
            background(report_orphans(relay, store, "reload_orphaned_events"), "orphan-report")

    on_reload_signal(on_hup)
    log_started(config, workers=config.workers)
    notifier.ready(f"serving {len(config.routes)} routes with {config.workers} workers")

    if failed := await until_stopped(stop, group.exited.wait(), house):
        why = "housekeeping_died" if house.done() else "worker_exited"
        log.error(why, exited=group.dead(), error=_task_error(house))

    # Shutdown, in order:
    # 1. tell systemd and load balancers we are going (readyz answers 503);
    begin_shutdown(relay, notifier, failed, "relay_stopping")
    # 2. the workers stop accepting and drain within the grace; the store stays up
    #    for them until the last one has exited;
    # 3. then the store, and the admin listener last.
    codes = await _close(group, server, admin_runner, listener, relay, metrics, tasks)
    if any(codes.values()):
        failed = True
    log.info("relay_stopped", worker_exit_codes=codes)
    return 1 if failed else 0


def _task_error(task: asyncio.Task[Any]) -> str | None:
    if not task.done() or task.cancelled():
        return None
    exc = task.exception()
    return None if exc is None else repr(exc)


async def _close(
    group: Group | None,
    server: StoreServer | None,
    admin_runner: web.AppRunner | None,
    listener: socket.socket | None,
    relay: Relay,
    metrics: OwnerMetrics,
    tasks: list[asyncio.Task[Any]],
) -> dict[int, int]:
    codes: dict[int, int] = {}
    if group is not None:
        # Each worker serves on for drain_delay before its own grace begins.
        codes = await group.stop(relay.config.drain_delay + relay.config.shutdown_grace)
        for proc in group.procs.values():
            metrics.worker_exited(proc.pid)
    if listener is not None:
        listener.close()
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if server is not None:
        await server.close()
    await relay.store.close()
    if admin_runner is not None:
        await admin_runner.cleanup()
    return codes
