"""The backend and the naive proxy as child processes."""

from __future__ import annotations

import json
import urllib.request
from contextlib import ExitStack
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


def _start(name: str, folder: Path, module: str, *args: str) -> Server:
    port = procs.free_port()
    argv = procs.python_module(module, "--port", str(port), *args)
    proc = procs.spawn(name, argv, folder / f"{name.split('-')[-1]}.log")
    server = Server(proc, port)
    try:
        # Ready end to end: the proxy forwards this to the backend's stats.
        procs.wait_http(proc, server.url(STATS_PATH))
    except BaseException:
        proc.stop()
        raise
    return server


def start_backend(folder: Path) -> Server:
    return _start("backend", folder, "bench.backend")


def start_proxy(folder: Path, upstream: str) -> Server:
    return _start("naive-proxy", folder, "bench.naive_proxy", "--upstream", upstream)


def backend_in(stack: ExitStack, folder: Path) -> Server:
    """``start_backend``, stopped when ``stack`` closes."""
    backend = start_backend(folder)
    stack.callback(backend.proc.stop)
    return backend
