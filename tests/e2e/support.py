"""End-to-end helpers: the relay as a real process, backends as real aiohttp servers.

Every daemon gets its own free ports (found by binding port 0), its own
SQLite file and config in the test's tmp_path, and its stderr in a file there
(printed when the test fails). Teardown kills whatever is still running.
Waits are polls on a condition with a bounded deadline, never bare sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

HOST = "127.0.0.1"
READY_TIMEOUT = 15.0
EXIT_TIMEOUT = 15.0


class ExitTooSlow(AssertionError):
    """The daemon took longer to stop than its contract allows (xfail-able on its own)."""


class NotSettled(AssertionError):
    """Work the daemon owes was still undone at the deadline (xfail-able on its own)."""


class AttemptCutOff(AssertionError):
    """An upstream attempt the daemon started was cut off by its own clean shutdown."""


def free_port() -> int:
    """A port nothing listens on right now (bind 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


async def wait_for(
    cond: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    what: str,
    interval: float = 0.02,
) -> float:
    """Poll ``cond`` until true; fail after ``timeout`` seconds. Returns the time waited."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + timeout
    for _ in range(int(timeout / interval) + 2):
        got = cond()
        if not isinstance(got, bool):
            got = await got
        if got:
            return loop.time() - start
        if loop.time() >= deadline:
            break
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# --- backends ------------------------------------------------------------------


class Backend:
    """Records every request's Idempotency-Key; behaviour set by the test.

    ``delay``: seconds before answering. ``hold``: while set to an Event that
    is not set, requests wait on it (bounded by ``hold_timeout``).
    ``status_for``: optional function key -> status.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.hold: asyncio.Event | None = None
        self.hold_first = 0  # the first N requests wait on ``hold``
        self.hold_timeout = 30.0
        self.received: Counter[str] = Counter()  # keys whose request arrived
        self.received_by: Counter[tuple[str, str]] = Counter()  # (path, key)
        self.answered: Counter[str] = Counter()  # keys we answered with a 2xx
        self.requests = 0
        self.bodies: dict[str, bytes] = {}
        self.server: Any = None
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key", "")
        body = await request.read()
        self.requests += 1
        nth = self.requests
        self.received[key] += 1
        self.received_by[request.path, key] += 1
        self.bodies[key] = body
        if self.hold is not None and nth <= self.hold_first:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.hold_timeout):
                    await self.hold.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        self.answered[key] += 1
        return web.json_response({"ok": True, "key": key, "nth": nth})

    def url(self, path: str = "/hook") -> str:
        assert self.port is not None
        return f"http://{HOST}:{self.port}{path}"

    @property
    def distinct(self) -> int:
        return len(self.received)

    def repeated(self) -> dict[str, int]:
        return {k: n for k, n in self.received.items() if n > 1}


# --- the daemon ------------------------------------------------------------------


class Relay:
    """One relay daemon (``python -m relay serve -c FILE``), restartable on the same DB."""

    def __init__(self, tmp_path: Path, routes: list[dict[str, Any]], **top: Any) -> None:
        self.dir = tmp_path
        self.port = free_port()
        self.admin_port = free_port()
        self.db = tmp_path / "relay.db"
        self.config_path = tmp_path / "relay.yaml"
        self.stderr_path = tmp_path / "relay.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        # What the process is started with: more environment, another interpreter line.
        self.extra_env: dict[str, str] = {}
        self.launcher: list[str] = [sys.executable]
        # How the test reaches the listeners: set when the config gives them TLS.
        self.scheme = "https" if "tls" in top else "http"
        self.admin_scheme = "https" if "tls" in top.get("admin", {}) else "http"
        self.client_ssl: ssl.SSLContext | None = None
        self._err: Any = None
        doc: dict[str, Any] = {
            "listen": f"{HOST}:{self.port}",
            "admin": {"listen": f"{HOST}:{self.admin_port}"},
            "storage": {"url": f"sqlite:///{self.db}"},
            "log": {"level": "info", "format": "json"},
            "shutdown_grace": "5s",
            # Stops in tests go straight to the drain; the delay has tests of its own.
            "drain_delay": "0s",
            "routes": routes,
        }
        doc.update(top)
        self.config_path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")

    # -- process control --

    async def start(self) -> None:
        """Start the process and wait until its /readyz answers 200.

        A first start whose port was taken between ``free_port`` and the bind (by
        another process's outgoing connection, say) moves to fresh ports and tries
        again; later starts keep their ports, which the test may hold on to."""
        first = self.starts == 0
        for tries in range(3):
            self._spawn()
            try:
                await self.wait_ready()
                return
            except AssertionError as exc:
                if not first or tries == 2 or "address already in use" not in str(exc):
                    raise
            self._move_ports()

    def _move_ports(self) -> None:
        self.port, self.admin_port = free_port(), free_port()
        doc = self.config()
        doc["listen"] = f"{HOST}:{self.port}"
        doc["admin"] = {**doc.get("admin", {}), "listen": f"{HOST}:{self.admin_port}"}
        self.rewrite(doc)

    async def start_expecting_exit(self, timeout: float = EXIT_TIMEOUT) -> int:
        """Start a process that is expected to refuse to run; its exit code."""
        self._spawn()
        return await self.wait_exit(timeout)

    def _spawn(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        self._close_err()
        self._err = open(self.stderr_path, "ab")  # noqa: SIM115 (closed in _close_err)
        self._err.write(f"--- start #{self.starts} ---\n".encode())
        self._err.flush()
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.extra_env)
        self.proc = subprocess.Popen(
            [*self.launcher, "-m", "relay", "serve", "-c", str(self.config_path)],
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=self._err,
            stderr=self._err,
            env=env,
        )

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        connector = aiohttp.TCPConnector(ssl=self.client_ssl or True)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def ready() -> bool:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"relay exited with {self.proc.returncode} before it was ready:\n"
                        + self.stderr()
                    )
                try:
                    async with session.get(
                        self.admin_url("/readyz"), timeout=aiohttp.ClientTimeout(total=1)
                    ) as resp:
                        return resp.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    return False

            await wait_for(ready, timeout, "the relay's /readyz to answer 200", interval=0.05)

    def signal(self, sig: int) -> None:
        assert self.proc is not None and self.proc.poll() is None, "not running"
        self.proc.send_signal(sig)

    async def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int:
        assert self.proc is not None
        proc = self.proc
        await wait_for(lambda: proc.poll() is not None, timeout, "the relay to exit", 0.02)
        self._close_err()
        return int(proc.returncode)

    async def stop(self, timeout: float = EXIT_TIMEOUT) -> int:
        """SIGTERM, then wait for the exit code."""
        self.signal(signal.SIGTERM)
        return await self.wait_exit(timeout)

    async def kill(self) -> None:
        """SIGKILL: no clean-up of any kind."""
        self.signal(signal.SIGKILL)
        rc = await self.wait_exit()
        assert rc == -signal.SIGKILL

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def reap(self) -> None:
        """Teardown: kill a process still running, by its own pid."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self._close_err()

    def _close_err(self) -> None:
        if self._err is not None:
            self._err.close()
            self._err = None

    def config(self) -> dict[str, Any]:
        doc = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        assert isinstance(doc, dict)
        return doc

    def rewrite(self, doc: dict[str, Any] | str) -> None:
        text = doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.config_path)

    # -- addresses and logs --

    def url(self, path: str) -> str:
        return f"{self.scheme}://{HOST}:{self.port}{path}"

    def admin_url(self, path: str) -> str:
        return f"{self.admin_scheme}://{HOST}:{self.admin_port}{path}"

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def events(self) -> list[dict[str, Any]]:
        """The structured log lines (JSON) written so far, across restarts."""
        out = []
        for line in self.stderr().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == event]


async def post(
    session: aiohttp.ClientSession,
    url: str,
    key: str | None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    data = body if body is not None else json.dumps({"key": key}).encode()
    async with session.post(
        url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def connect_refused(port: int) -> bool:
    """True if a TCP connect to 127.0.0.1:port is refused right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect((HOST, port))
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        return False


def queue_route(backend: Backend, name: str = "q", **extra: Any) -> dict[str, Any]:
    route: dict[str, Any] = {
        "name": name,
        "path": f"/{name}",
        "upstream": backend.url(f"/{name}"),
        "mode": "queue",
    }
    route.update(extra)
    return route


def sync_route(backend: Backend, name: str = "s", **extra: Any) -> dict[str, Any]:
    return queue_route(backend, name, mode="sync", **extra)


async def post_many(
    session: aiohttp.ClientSession, url: str, keys: list[str], concurrency: int = 32
) -> dict[str, int]:
    """POST one event per key, ``concurrency`` at a time; the status each got (0: no answer)."""
    todo = list(reversed(keys))
    got: dict[str, int] = {}

    async def worker() -> None:
        while todo:
            key = todo.pop()
            try:
                got[key] = (await post(session, url, key))[0]
            except (aiohttp.ClientError, TimeoutError):
                got[key] = 0

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return got


def deliveries_by_state(db: Path) -> dict[str, int]:
    """Read-only look at the relay's SQLite file: how many deliveries are in each state.

    The admin API has no inspection endpoint yet, and the ``relay_events`` gauge
    is refreshed only every few seconds; the store itself is the ground truth of
    "nothing acked is lost".
    """
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        rows = con.execute("SELECT state, count(*) FROM deliveries GROUP BY state").fetchall()
    finally:
        con.close()
    return {str(state): int(n) for state, n in rows}


async def run_cli(*args: str, timeout: float = 60.0) -> tuple[int, str]:
    """``webhook-relay ARGS`` as a process: its exit code and its output (stderr
    merged)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode()
