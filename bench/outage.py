"""``python -m bench.outage``: what the relay does to a backend that goes down.

Outage: the backend answers 503 while N events are queued and for D seconds in
all, then recovers. Measured at the backend: attempts while it was down, the
time from recovery to the last event's delivery, the busiest second after
recovery. Drain: N events held by a pause, then resumed, with no limit and with
a rate limit; measured: the busiest second and how long the drain took.

Every row runs a fresh relay (``python -m relay serve``) and backend as
processes, with default route settings except the one a row names; the
baselines (the breaker off, no rate limit) run in the same invocation. Keys
carry a per-run prefix, so a run never repeats another's ids.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench import procs
from bench.payload import body_for


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    what: str
    settings: str  # extra YAML for the route
    figures: dict[str, float]


def config_text(backend_port: int, port: int, admin_port: int, db: Path, extra: str) -> str:
    lines = [
        f'listen: "127.0.0.1:{port}"',
        f'admin: {{listen: "127.0.0.1:{admin_port}"}}',
        f'storage: {{url: "sqlite:///{db}"}}',
        "log: {format: json, level: warning}",
        "shutdown_grace: 1s",
        "routes:",
        "  - name: bench",
        "    path: /hook",
        f"    upstream: http://127.0.0.1:{backend_port}/sink",
    ]
    lines += [f"    {line}" for line in extra.splitlines() if line.strip()]
    return "\n".join(lines) + "\n"


class Harness:
    def __init__(self, workdir: Path, extra: str) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True)
        self.backend_port = procs.free_port()
        self.port, self.admin_port = procs.free_port(), procs.free_port()
        config = workdir / "relay.yaml"
        db = workdir / "relay.db"
        config.write_text(config_text(self.backend_port, self.port, self.admin_port, db, extra))
        self.backend = procs.spawn(
            "backend",
            procs.python_module("bench.flaky", "--port", str(self.backend_port)),
            workdir / "backend.log",
        )
        self.relay = procs.spawn(
            "relay", procs.python_module("relay", "serve", "-c", str(config)), workdir / "relay.log"
        )
        procs.wait_http(self.backend, self._backend("/__bench/log"))
        procs.wait_http(self.relay, f"http://127.0.0.1:{self.admin_port}/readyz", timeout=60)

    def _backend(self, path: str) -> str:
        return f"http://127.0.0.1:{self.backend_port}{path}"

    def backend_call(self, path: str, method: str = "POST") -> dict[str, object]:
        req = urllib.request.Request(
            self._backend(path), method=method, data=b"" if method == "POST" else None
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            doc: dict[str, object] = json.loads(resp.read())
        return doc

    def admin(self, path: str, body: dict[str, object] | None = None) -> None:
        data = json.dumps(body or {}).encode()
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        req = urllib.request.Request(url, data=data, method="POST")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=30):
            pass

    def requests(self) -> list[tuple[float, int, str]]:
        doc = self.backend_call("/__bench/log", "GET")
        return [(float(t), int(s), str(k)) for t, s, k in doc["requests"]]  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.relay.stop()
        self.backend.stop()


async def send(url: str, keys: list[str], concurrency: int = 32) -> None:
    queue = collections.deque(keys)
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            while queue:
                key = queue.popleft()
                headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
                async with session.post(url, data=body_for(key), headers=headers) as resp:
                    if resp.status != 202:
                        raise RuntimeError(f"{key}: HTTP {resp.status}")

        await asyncio.gather(*(one() for _ in range(concurrency)))


def delivered(requests: list[tuple[float, int, str]]) -> dict[str, float]:
    """Each key's first 200, by time."""
    first: dict[str, float] = {}
    for t, status, key in requests:
        if status == 200 and key not in first:
            first[key] = t
    return first


def busiest_second(times: list[float], since: float) -> int:
    counts = collections.Counter(math.floor(t - since) for t in times if t >= since)
    return max(counts.values(), default=0)


def wait_delivered(h: Harness, keys: list[str], timeout: float) -> list[tuple[float, int, str]]:
    deadline = time.monotonic() + timeout
    want = set(keys)
    while True:
        requests = h.requests()
        if want <= set(delivered(requests)) or time.monotonic() > deadline:
            return requests
        time.sleep(0.5)


def outage(
    workdir: Path, extra: str, n: int, down: float, run: str, timeout: float
) -> dict[str, float]:
    h = Harness(workdir, extra)
    try:
        went_down = float(h.backend_call("/__bench/down")["at"])  # type: ignore[arg-type]
        keys = [f"{run}-{workdir.name}-{i:05d}" for i in range(n)]
        asyncio.run(send(f"http://127.0.0.1:{h.port}/hook", keys))
        time.sleep(max(0.0, went_down + down - time.monotonic()))
        recovered = float(h.backend_call("/__bench/up")["at"])  # type: ignore[arg-type]
        requests = wait_delivered(h, keys, timeout)
    finally:
        h.stop()
    first = delivered(requests)
    ok = [first[k] for k in keys if k in first]
    return {
        "attempts while down": sum(1 for t, s, _ in requests if s == 503),
        "recovery to last delivery s": round(max(ok) - recovered, 1)
        if len(ok) == n
        else float("nan"),
        "busiest second after": busiest_second(
            [t for t, s, _ in requests if t >= recovered], recovered
        ),
        "delivered": len(ok),
        "delivered twice": sum(
            1 for c in collections.Counter(k for _, s, k in requests if s == 200).values() if c > 1
        ),
    }


def drain(workdir: Path, extra: str, n: int, run: str, timeout: float) -> dict[str, float]:
    h = Harness(workdir, extra)
    try:
        h.admin("/api/v1/routes/bench/pause", {"reason": "bench: fill the queue"})
        keys = [f"{run}-{workdir.name}-{i:05d}" for i in range(n)]
        asyncio.run(send(f"http://127.0.0.1:{h.port}/hook", keys))
        start = time.monotonic()
        h.admin("/api/v1/routes/bench/resume")
        requests = wait_delivered(h, keys, timeout)
    finally:
        h.stop()
    times = sorted(t for t, s, _ in requests if s == 200)
    return {
        "busiest second": busiest_second(times, start),
        "drain s": round(times[-1] - start, 1) if len(times) >= n else float("nan"),
        "delivered": len(delivered(requests)),
    }


def table(title: str, rows: list[Row], baseline: str) -> str:
    base = next(r for r in rows if r.name == baseline).figures
    cols = list(base)
    out = [
        f"### {title}",
        "",
        "| row | what | " + " | ".join(cols) + " |",
        "| --- | --- |" + " --- |" * len(cols),
    ]
    for r in rows:
        cells = []
        for c in cols:
            v = r.figures[c]
            ratio = "" if r.name == baseline or not base[c] else f" ({v / base[c]:.2f}x)"
            cells.append(f"{v:g}{ratio}")
        out.append(f"| **{r.name}** | {r.what} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.outage", description=__doc__)
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--down", type=float, default=45.0, help="seconds the backend is down")
    p.add_argument("--rate", default="100/s", help="the rate limit of the drain row")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for delivery")
    p.add_argument("--only", default="outage,drain")
    args = p.parse_args(argv)
    run = uuid.uuid4().hex[:8]
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-outage-") as tmp:
        root = Path(tmp)
        print(f"run {run}: {args.events} events; backend down {args.down:g}s", flush=True)
        if "outage" in only:
            rows = []
            for name, what, extra in (
                ("O0", "breaker off (the relay before the breaker)", "breaker: off"),
                ("O1", "default settings (breaker on)", ""),
            ):
                figures = outage(root / name, extra, args.events, args.down, run, args.timeout)
                print(f"  {name}: {figures}", flush=True)
                rows.append(Row(name, what, extra, figures))
            print(table("Outage: backend 503 while queued, then up", rows, "O0"))
        if "drain" in only:
            rows = []
            for name, what, extra in (
                ("R0", "drain, no rate limit", ""),
                ("R1", f"drain, rate_limit: {args.rate}", f'rate_limit: "{args.rate}"'),
            ):
                figures = drain(root / name, extra, args.events, run, args.timeout)
                print(f"  {name}: {figures}", flush=True)
                rows.append(Row(name, what, extra, figures))
            print(table("Drain after a pause", rows, "R0"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
