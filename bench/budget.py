"""Where an event's CPU goes, stage by stage: ``python -m bench.budget``.

Three floors first, measured on this machine in this run: an aiohttp server
answering a 1 KiB POST (the bench's backend under wrk), an aiohttp client making
one (a client process posting to that backend), and one durably group-committed
SQLite ingest (a SQLiteStore taking events 64 at a time). Each is the process's
CPU time (user + system, every thread) divided by the requests or events.

Then the relay: ingest (Q1: unique events, an upstream that holds every attempt,
so the dispatcher stays idle) and delivery (D1: a backlog of pending events
drained to a backend that answers at once), each with its CPU per event, and
py-spy sampling every thread meanwhile. A sample is put in the first stage whose
rule matches a frame, from the innermost frame out (a log line written inside the
listener is "log", not "route"); a stage's share of the samples is its share of
the CPU. Needs py-spy (``pip install py-spy``); without it only the totals.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Final

from bench import lua, prefill, procs, profile, relayproc, servers, wrk
from bench.payload import HANG_PATH, SINK_PATH

# Stage rules, tried for each frame from the innermost out: (stage, substrings).
INGEST: Final = (
    ("log", ("structlog", "relay/logging.py")),
    ("metrics", ("prometheus_client",)),
    ("commit", ("store/sqlite/thread.py", "store/sqlite/pull.py", "store/batch.py", "(sqlite3")),
    (
        "claim",
        ("store/sqlite/sql.py", "store/rows.py", "store/sealing.py", "store/sqlite/store.py"),
    ),
    ("key", ("relay/keys.py", "hashlib", "intake/steps.py")),
    ("route", ("intake/listener.py", "intake/edge.py", "intake/checks.py", "intake/queue.py")),
    ("answer", ("web_response.py", "http_writer.py", "intake/replies.py")),
    ("parse", ("http_parser.py", "web_protocol.py", "web_request.py", "multidict", "streams.py")),
    ("loop", ("asyncio", "uvloop", "selectors.py", "selector_events.py")),
)
DELIVERY: Final = (
    ("log", ("structlog", "relay/logging.py")),
    ("metrics", ("prometheus_client", "delivery/report.py")),
    ("lease", ("lease_rows", "lease_due", "_lease", "store/sqlite/inline.py", "store/rows.py")),
    (
        "record",
        ("finish", "store/sqlite/thread.py", "store/sqlite/pull.py", "store/batch.py", "(sqlite3"),
    ),
    ("build", ("upstream_headers", "relay/runtime.py", "relay/forward.py")),
    (
        "send+read",
        (
            "aiohttp/client",
            "connector.py",
            "client_reqrep.py",
            "client_proto.py",
            "streams.py",
            "http_parser.py",
            "http_writer.py",
        ),
    ),
    ("dispatch", ("delivery/dispatcher.py", "delivery/attempts.py", "delivery/guard.py")),
    ("loop", ("asyncio", "uvloop", "selectors.py", "selector_events.py")),
)

CLIENT: Final = """
import asyncio, os, sys, aiohttp
url, n = sys.argv[1], int(sys.argv[2])
body = b"x" * 1024
async def main():
    async with aiohttp.ClientSession() as s:
        async def one(i):
            async with s.post(url, data=body, headers={"Idempotency-Key": f"c{os.getpid()}-{i}"}) as r:
                await r.read()
        for start in range(0, n, 64):
            await asyncio.gather(*(one(i) for i in range(start, min(n, start + 64))))
asyncio.run(main())
t = os.times()
print(t.user + t.system)
"""
COMMIT: Final = """
import asyncio, os, sys, tempfile
from bench.storage import new_event
from relay.store.sqlite import SQLiteStore
n = int(sys.argv[1])
async def main():
    with tempfile.TemporaryDirectory() as d:
        store = SQLiteStore(os.path.join(d, "relay.db"))
        await store.open()
        run = f"{os.getpid()}"
        for start in range(0, n, 64):
            await asyncio.gather(*(store.ingest(new_event(f"f{run}-{i}", 0.0)) for i in range(start, min(n, start + 64))))
        await store.close()
asyncio.run(main())
t = os.times()
print(t.user + t.system)
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stages(raw: Path, rules: tuple[tuple[str, tuple[str, ...]], ...]) -> Counter[str]:
    """Samples per stage, from py-spy's collapsed stacks (``--format raw``)."""
    out: Counter[str] = Counter()
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        out[_stage(stack.split(";"), rules)] += int(n)
    return out


def _stage(frames: list[str], rules: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    for frame in reversed(frames):
        for stage, needles in rules:
            if any(needle in frame for needle in needles):
                return stage
    return "other"


def _floor_subprocess(code: str, *args: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, check=True, cwd=procs.ROOT
    )
    return float(out.stdout.decode().strip().splitlines()[-1])


def floors(folder: Path, wrk_path: str, script: Path, seconds: int) -> dict[str, float]:
    """µs of CPU per request (server, client) and per event (SQLite group commit)."""
    out: dict[str, float] = {}
    with ExitStack() as stack:
        backend = servers.backend_in(stack, folder)
        before = cpu_seconds(backend.proc.pid)
        load = wrk.Load(backend.url(SINK_PATH), prefix=f"floor-{time.time_ns()}")
        result = wrk.run(wrk_path, script, load, duration=seconds, connections=64)
        out["aiohttp server, one POST"] = (
            (cpu_seconds(backend.proc.pid) - before) / (result.rate * result.duration_s) * 1e6
        )
        n = 20_000
        spent = _floor_subprocess(CLIENT, backend.url(SINK_PATH), str(n))
        out["aiohttp client, one POST"] = spent / n * 1e6
    n = 20_000
    out["SQLite group commit, one event"] = _floor_subprocess(COMMIT, str(n)) / n * 1e6
    return out


def ingest(folder: Path, wrk_path: str, script: Path, seconds: int) -> tuple[float, Counter[str]]:
    with ExitStack() as stack:
        backend = servers.backend_in(stack, folder)
        spec = relayproc.RouteSpec("queue", backend.url(HANG_PATH), timeout_total="1h")
        relay = relayproc.start(folder, spec)
        stack.callback(relay.proc.stop)
        load = wrk.Load(relay.url, prefix=f"budget-{time.time_ns()}")
        wrk.run(wrk_path, script, load, duration=2, connections=64)  # warm-up
        raw = folder / "ingest.raw"
        spy = profile.start(relay.proc.pid, seconds, raw)
        before = cpu_seconds(relay.proc.pid)
        taken = relay.metric("relay_webhooks_received_total", outcome="accepted")
        wrk.run(wrk_path, script, load, duration=seconds, connections=64)
        events = relay.metric("relay_webhooks_received_total", outcome="accepted") - taken
        per = (cpu_seconds(relay.proc.pid) - before) / events * 1e6
        return per, _collected(spy, raw, INGEST)


def delivery(folder: Path, n: int, seconds: int) -> tuple[float, Counter[str]]:
    with ExitStack() as stack:
        backend = servers.backend_in(stack, folder)
        db = folder / "relay.db"
        prefill.build(db, n, "pending", backend.url(SINK_PATH), prefix=f"budget-{time.time_ns()}")
        relay = relayproc.start(folder, relayproc.RouteSpec("queue", backend.url(SINK_PATH)), db)
        stack.callback(relay.proc.stop)
        raw = folder / "delivery.raw"
        spy = profile.start(relay.proc.pid, seconds, raw)
        before, started = cpu_seconds(relay.proc.pid), backend.stats().count
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and backend.stats().count - started < n:
            time.sleep(0.2)
        done = backend.stats().count - started
        per = (cpu_seconds(relay.proc.pid) - before) / max(done, 1) * 1e6
        return per, _collected(spy, raw, DELIVERY)


def _collected(
    spy: subprocess.Popen[bytes] | None, raw: Path, rules: tuple[tuple[str, tuple[str, ...]], ...]
) -> Counter[str]:
    if spy is None:
        return Counter()
    try:
        spy.wait(120)
    except subprocess.TimeoutExpired:
        spy.kill()
    return stages(raw, rules) if raw.exists() else Counter()


def table(title: str, per_event: float, samples: Counter[str]) -> list[str]:
    lines = [f"\n{title}: {per_event:,.0f} µs of CPU per event", ""]
    if not samples:
        return [*lines, "(no profile: pip install py-spy)"]
    total = sum(samples.values())
    lines += ["| stage | share | µs per event |", "| --- | --- | --- |"]
    for stage, n in samples.most_common():
        lines.append(f"| {stage} | {100 * n / total:.1f} % | {per_event * n / total:,.0f} |")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.budget", description=__doc__)
    p.add_argument("--seconds", type=int, default=10, help="each measured run")
    p.add_argument("--drain", type=int, default=40_000, help="events the delivery run drains")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--keep", type=Path, help="copy py-spy's raw stacks into this folder")
    args = p.parse_args()
    wrk_path = wrk.ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="relay-budget-") as tmp:
        work = Path(tmp)
        script = lua.write_script(work)
        base = floors(work / "floors", wrk_path, script, args.seconds)
        in_us, in_stages = ingest(work / "ingest", wrk_path, script, args.seconds)
        out_us, out_stages = delivery(work / "delivery", args.drain, 3 * args.seconds)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for raw in work.glob("*/*.raw"):
                shutil.copy(raw, args.keep / raw.name)
    lines = ["Floors (this machine, this run): µs of CPU", "", "| floor | µs |", "| --- | --- |"]
    lines += [f"| {name} | {us:,.0f} |" for name, us in base.items()]
    lines += table("Ingest (Q1)", in_us, in_stages)
    lines += table("Delivery (D1)", out_us, out_stages)
    print("\n".join(lines))
    if args.json:
        doc = {
            "floors": base,
            "ingest": {"us": in_us, "stages": dict(in_stages)},
            "delivery": {"us": out_us, "stages": dict(out_stages)},
        }
        args.json.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
