"""Property-based hostile input against a running relay: no 500, no traceback,
no crash, and no ack for an event that is not in the store."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.app import GUARD, MAX_HEADERS
from relay.config import from_mapping
from relay.errors import ConfigError
from relay.metrics import Metrics
from relay.runtime import RELAY
from relay.serve import single_process_app
from relay.store.sqlite import SQLiteStore

T = TypeVar("T")
PATHS = ["/q", "/s", "/json", "/strict"]


class RelayThread:
    """A relay and a backend on their own event loop, for synchronous hypothesis tests."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = self.run(self._start())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    async def _start(self) -> int:
        async def ok(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(text="ok")

        backend_app = web.Application()
        backend_app.router.add_route("*", "/{tail:.*}", ok)
        self.backend = TestServer(backend_app)
        await self.backend.start_server()
        up = str(self.backend.make_url("/up"))
        config = from_mapping(
            {
                "limits": {"max_body": "64KiB", "header_timeout": "2s", "body_timeout": "2s"},
                "routes": [
                    {"name": "q", "path": "/q", "upstream": up},
                    {"name": "s", "path": "/s", "upstream": up, "mode": "sync"},
                    {
                        "name": "json",
                        "path": "/json",
                        "upstream": up,
                        "idempotency": {"key": ["json:$.id", "json:$.a[0].b"]},
                    },
                    {
                        "name": "strict",
                        "path": "/strict",
                        "upstream": up,
                        "idempotency": {
                            "key": ["header:X-Id"],
                            "require_key": True,
                            "on_payload_mismatch": "reject",
                        },
                        "methods": ["POST", "PUT"],
                    },
                ],
            },
            env={},
        )
        self.store = SQLiteStore(self.tmp / "fuzz.db")
        self.app = single_process_app(config, store=self.store, metrics=Metrics())
        self.server = TestServer(self.app, max_headers=MAX_HEADERS)
        await self.server.start_server()
        assert self.server.runner is not None and self.server.runner.server is not None
        self.app[GUARD].install(self.server.runner.server)
        return int(self.server.port)  # type: ignore[arg-type]

    async def _stop(self) -> None:
        await self.server.close()
        await self.backend.close()

    def close(self) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        # An unclosed loop leaks its self-pipe: a ResourceWarning that the garbage
        # collector raises later, in whatever test runs then.
        self.loop.close()

    def send(self, raw: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(raw)
            chunks = []
            while data := sock.recv(65536):
                chunks.append(data)
        return b"".join(chunks)


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayThread]:
    r = RelayThread(tmp_path_factory.mktemp("fuzz"))
    yield r
    r.close()


def request(method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    head = [f"{method} {path} HTTP/1.1".encode(), b"Host: relay", b"Connection: close"]
    head += [name + b": " + value for name, value in headers]
    head.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def check(relay: RelayThread, answer: bytes) -> int:
    # aiohttp's own parser answers malformed requests with an HTTP/1.0 400.
    assert answer.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), answer[:200]
    status = int(answer[9:12])
    assert status < 500 or status == 503, answer[:500]
    assert b"Traceback" not in answer
    _, _, body = answer.partition(b"\r\n\r\n")
    if 200 <= status < 300 and b"event_id" in body:
        # No ack without a commit: the acked event is in the store.
        event_id = json.loads(body)["event_id"]
        assert relay.run(relay.store.get_event(event_id)) is not None
    return status


token = st.text(
    alphabet="!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-",
    min_size=1,
    max_size=20,
)
header_value = st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
headers = st.lists(st.tuples(token.map(str.encode), header_value), max_size=30)
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(
    method=st.sampled_from(["POST", "PUT", "GET", "DELETE", "PATCH", "OPTIONS"]),
    path=st.one_of(
        st.sampled_from(PATHS),
        st.text(max_size=30).map(lambda t: "/" + t.encode("utf-8", "replace").hex()),
    ),
    hdrs=headers,
    body=st.binary(max_size=2048),
)
def test_random_requests_never_break_the_relay(
    relay: RelayThread, method: str, path: str, hdrs: list[tuple[bytes, bytes]], body: bytes
) -> None:
    check(relay, relay.send(request(method, path, hdrs, body)))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@FUZZ
@given(
    doc=json_values,
    path=st.sampled_from(["/json", "/s", "/q"]),
    key=st.one_of(st.none(), st.text(max_size=300)),
)
def test_random_json_is_keyed_or_falls_back(
    relay: RelayThread, doc: Any, path: str, key: str | None
) -> None:
    body = json.dumps({"id": key, "a": [{"b": doc}]} if key is not None else doc).encode()
    status = check(
        relay, relay.send(request("POST", path, [(b"Content-Type", b"application/json")], body))
    )
    assert status in (200, 202)


def test_deep_json_duplicate_keys_and_invalid_utf8(relay: RelayThread) -> None:
    cases = [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"id": "a", "id": "b"}',
        b'{"id": "\\ud800"}',
        b"\xff\xfe\xfd not utf-8",
        b'{"id": ' + b"9" * 5000 + b"}",
    ]
    for body in cases:
        check(relay, relay.send(request("POST", "/json", [], body[:60_000])))
    # Duplicate JSON keys: the last one wins, as in Python's json; stable across copies.
    first = relay.send(request("POST", "/json", [], b'{"id": "x", "id": "dup"}'))
    second = relay.send(request("POST", "/json", [], b'{"id": "dup"}'))
    assert b"Idempotent-Replayed: true" in second, (first, second)


def test_huge_header_counts_are_refused_cleanly(relay: RelayThread) -> None:
    many = [(b"X-H%d" % i, b"v") for i in range(1000)]
    answer = relay.send(request("POST", "/q", many, b"{}"))
    # Past MAX_HEADERS aiohttp's parser refuses the request before any handler runs.
    assert check(relay, answer) == 400, answer[:200]


def test_relay_still_serves_after_the_fuzzing(relay: RelayThread) -> None:
    status = check(relay, relay.send(request("POST", "/strict", [(b"X-Id", b"final")], b"{}")))
    assert status == 202
    assert relay.app[RELAY].draining is False


yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=20), st.floats(allow_nan=False)
)
yaml_docs = st.recursive(
    yaml_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "routes",
                    "name",
                    "path",
                    "upstream",
                    "mode",
                    "retry",
                    "limits",
                    "max_body",
                    "verify",
                    "listen",
                    "storage",
                    "url",
                    "x",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(doc=yaml_docs)
def test_random_config_documents_give_config_errors_only(doc: Any) -> None:
    try:
        from_mapping(doc, env={})
    except ConfigError as exc:
        assert exc.errors and all(isinstance(e, str) and ": " in e for e in exc.errors)
