"""Rolling restarts behind a real nginx configured by deploy/nginx.conf (the README's
recipe): two replicas on PostgreSQL restarted in turn under a steady sender answer
every send 2xx, lose nothing and deliver nothing twice; a lone SQLite replica's
restart gap answers 503 with Retry-After, never 502."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.tools import required_tool

from .support import (
    HOST,
    Backend,
    deliveries_by_state,
    free_port,
    post,
    queue_route,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "deploy" / "nginx.conf"
DRAIN = "2s"


def _nginx() -> str:
    return required_tool("nginx", "apt-get install nginx-light", "RELAY_REQUIRE_NGINX")


def recipe(listen: int, replicas: list[int]) -> str:
    """deploy/nginx.conf with this test's ports: the listen line and one server line
    per replica, everything else as written."""
    lines = RECIPE.read_text(encoding="utf-8").splitlines()
    servers = [i for i, line in enumerate(lines) if line.strip().startswith("server relay-")]
    template = lines[servers[0]]
    ours = [template.replace("relay-1.internal:8080", f"{HOST}:{port}") for port in replicas]
    lines[servers[0] : servers[-1] + 1] = ours
    text = "\n".join(lines)
    assert "    listen 80;" in text
    return text.replace("    listen 80;", f"    listen {HOST}:{listen};", 1)


def _spawn(binary: str, directory: Path, port: int, replicas: list[int]) -> subprocess.Popen[bytes]:
    directory.mkdir(exist_ok=True)
    (directory / "relay.conf").write_text(recipe(port, replicas), encoding="utf-8")
    temp = " ".join(
        f"{kind}_temp_path {directory / kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    (directory / "nginx.conf").write_text(
        f"""
daemon off;
worker_processes 1;
pid {directory / "nginx.pid"};
error_log {directory / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
    access_log {directory / "access.log"};
    {temp} uwsgi_temp_path {directory / "uwsgi"}; scgi_temp_path {directory / "scgi"};
    include {directory / "relay.conf"};
}}
""",
        encoding="utf-8",
    )
    with open(directory / "nginx.stderr", "wb") as err:
        return subprocess.Popen(
            [binary, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-e", "stderr"],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


@contextlib.asynccontextmanager
async def nginx(tmp_path: Path, replicas: list[int]) -> AsyncIterator[str]:
    """nginx in its own directory on a free port, in front of ``replicas``; its URL."""
    binary = _nginx()
    port = free_port()
    proc = _spawn(binary, tmp_path, port, replicas)
    try:
        url = f"http://{HOST}:{port}"

        async def listening() -> bool:
            try:
                _, writer = await asyncio.open_connection(HOST, port)
            except OSError:
                assert proc.poll() is None, (tmp_path / "nginx.stderr").read_text()
                return False
            writer.close()
            return True

        await wait_for(listening, 10, "nginx to listen")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


class Sender:
    """Senders as providers are: each event sent again every 100 ms until acked."""

    def __init__(self, url: str, connections: int = 8) -> None:
        self.url = url
        self.connections = connections
        self.answers: Counter[str] = Counter()
        self.acked: list[str] = []
        self.run = f"{time.time_ns()}"  # never the same ids twice
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _one(self, session: aiohttp.ClientSession, worker: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            key = f"{self.run}-{worker}-{n}"
            while True:
                try:
                    status, _, _ = await post(session, self.url, key, timeout=10)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.answers[type(exc).__name__] += 1
                else:
                    self.answers[str(status)] += 1
                    if 200 <= status < 300:
                        break
                await asyncio.sleep(0.1)
            self.acked.append(key)
            await asyncio.sleep(0.02)

    async def __aenter__(self) -> Sender:
        self._session = aiohttp.ClientSession()
        self._tasks = [
            asyncio.create_task(self._one(self._session, i)) for i in range(self.connections)
        ]
        return self

    async def __aexit__(self, *_: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._session.close()

    def sent(self) -> int:
        return len(self.acked)


async def _restart(replica: Any) -> None:
    replica.signal(signal.SIGTERM)
    assert await replica.wait_exit(15) == 0
    await replica.start()


@pytest.mark.postgres
async def test_a_rolling_restart_behind_nginx_answers_every_send(
    relays: Any, start_backend: Any, pg_schema: tuple[Any, str, str], tmp_path: Path
) -> None:
    conn, schema, url = pg_schema
    backend = await start_backend(Backend())
    top: dict[str, Any] = {
        "storage": {"url": url},
        "trusted_proxies": [f"{HOST}/32"],
        "drain_delay": DRAIN,
    }
    a = relays([queue_route(backend)], **top)
    b = relays([queue_route(backend)], **top)
    await a.start()
    await b.start()
    async with nginx(tmp_path / "nginx", [a.port, b.port]) as front, Sender(f"{front}/q") as sender:
        await wait_for(lambda: sender.sent() >= 20, 10, "the sender under way")
        await _restart(a)
        # As if A's new release had migrated the schema (additively): B, still the
        # older release, must start on it and serve.
        latest = await conn.fetchval(f"SELECT max(version) FROM {schema}.schema_migrations")
        await conn.execute(f"ALTER TABLE {schema}.events ADD COLUMN next_note TEXT")
        await conn.execute(
            f"INSERT INTO {schema}.schema_migrations VALUES ($1, 'next_note', 0, false)",
            latest + 1,
        )
        # The recipe's procedure: the next replica only once this one is ready
        # and nginx's fail_timeout (2s) has passed.
        await asyncio.sleep(2.5)
        await _restart(b)
        assert b.logged("schema_newer_compatible")
        before = sender.sent()
        await wait_for(lambda: sender.sent() >= before + 20, 10, "sends after the restarts")
    assert set(sender.answers) == {"202"}, sender.answers
    keys = sender.acked

    async def recorded() -> bool:
        found = await conn.fetchval(
            f"SELECT count(*) FROM {schema}.deliveries WHERE state = 'delivered'"
        )
        return bool(found == len(keys))

    await wait_for(recorded, 20, "every acked event delivered, as the relays recorded it")
    assert backend.repeated() == {}
    assert all(backend.received[k] == 1 for k in keys)


async def test_a_lone_replicas_restart_gap_is_503_with_retry_after(
    relays: Any, start_backend: Any, tmp_path: Path
) -> None:
    backend = await start_backend(Backend())
    a = relays([queue_route(backend)], drain_delay="1s")
    await a.start()
    async with nginx(tmp_path / "nginx", [a.port]) as front, aiohttp.ClientSession() as session:
        assert (await post(session, f"{front}/q", f"up-{time.time_ns()}"))[0] == 202
        a.signal(signal.SIGTERM)
        assert await a.wait_exit(15) == 0
        status, headers, body = await post(session, f"{front}/q", f"gap-{time.time_ns()}")
        assert (status, headers.get("Retry-After")) == (503, "5"), body
        assert b'"unavailable"' in body
        await a.start()
        assert (await post(session, f"{front}/q", f"back-{time.time_ns()}"))[0] == 202
    await wait_for(
        lambda: deliveries_by_state(a.db) == {"delivered": 2}, 10, "both acked events delivered"
    )
    assert await a.stop() == 0


def test_the_haproxy_recipe_is_valid_and_checks_readyz(tmp_path: Path) -> None:
    found = required_tool("haproxy", "apt-get install haproxy", "RELAY_REQUIRE_HAPROXY")
    text = (ROOT / "deploy" / "haproxy.cfg").read_text(encoding="utf-8")
    assert "option httpchk GET /readyz" in text
    ours = tmp_path / "haproxy.cfg"
    ours.write_text(
        text.replace("relay-1.internal:8080", f"{HOST}:{free_port()}")
        .replace("relay-2.internal:8080", f"{HOST}:{free_port()}")
        .replace("    bind :80", f"    bind {HOST}:{free_port()}"),
        encoding="utf-8",
    )
    done = subprocess.run(
        [found, "-c", "-f", str(ours)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Configuration file is valid" in done.stdout + done.stderr
    assert "WARNING" not in done.stdout + done.stderr, done.stdout + done.stderr


def test_the_readme_shows_the_nginx_recipe_as_it_is() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```nginx\n(.*?)```", readme, re.DOTALL)
    assert RECIPE.read_text(encoding="utf-8") in blocks
