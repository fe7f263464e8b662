"""The backend and the naive proxy as child processes."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.payload import STATS_PATH


@dataclass(frozen=True, slots=True)
class BackendStats:
    count: int  # requests received
    unique: int  # distinct Idempotency-Keys among them
    first: float | None  # monotonic time of the first one
    last: float | None


@dataclass(slots=True)
class Server:
    proc: procs.Proc
    port: int

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stats(self) -> BackendStats:
        with urllib.request.urlopen(self.url(STATS_PATH), timeout=10) as resp:
            d = json.loads(resp.read())
        return BackendStats(int(d["count"]), int(d["unique"]), d["first"], d["last"])


def start_backend(folder: Path) -> Server:
    port = procs.free_port()
    proc = procs.spawn(
        "backend",
        procs.python_module("bench.backend", "--port", str(port)),
        folder / "backend.log",
    )
    server = Server(proc, port)
    try:
        procs.wait_http(proc, server.url(STATS_PATH))
    except BaseException:
        proc.stop()
        raise
    return server


def start_proxy(folder: Path, upstream: str) -> Server:
    port = procs.free_port()
    proc = procs.spawn(
        "naive-proxy",
        procs.python_module("bench.naive_proxy", "--port", str(port), "--upstream", upstream),
        folder / "proxy.log",
    )
    server = Server(proc, port)
    try:
        # The proxy forwards this to the backend's stats: ready end to end.
        procs.wait_http(proc, server.url(STATS_PATH))
    except BaseException:
        proc.stop()
        raise
    return server
