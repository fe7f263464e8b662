"""``python -m bench.console``: the console's pages with a million events stored,
and what reading them costs ingest.

A store of ``--rows`` events (default 1,000,000) is built in the relay's own
schema (``bench.prefill``): all delivered with one attempt, except the oldest
2 % dead (an old outage's dead letters, the hardest case for a newest-first
list filtered by state) and the newest 0.1 % pending (due tomorrow, so they
stay pending); every hundredth event has duplicates. The relay then runs on it
as a real process and every page is fetched ``--repeat`` times, one at a time,
after a warm-up: the table gives each page's median, p95 and slowest answer.

Then ingest (wrk, unique ids that carry this run's id) is measured twice for
``--duration`` seconds: alone, and while a reader fetches console pages one
after another as fast as they come. The ratio is what the console costs ingest.
"""

from __future__ import annotations

import argparse
import secrets
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from bench import lua, prefill, relayproc, servers, wrk
from bench.payload import SINK_PATH

DEAD_SHARE = 0.02
PENDING_SHARE = 0.001


def shape(db: Path, rows: int) -> None:
    """Dead letters first, a few pending last, duplicates here and there."""
    dead, pending = int(rows * DEAD_SHARE), int(rows * PENDING_SHARE)
    tomorrow = time.time() + 86400
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute(
            "UPDATE deliveries SET state = 'dead', last_status = 410, reason = 'http 410',"
            " delivered_at = NULL WHERE id <= ?",
            (dead,),
        )
        conn.execute("UPDATE attempts SET status = 410 WHERE delivery_id <= ?", (dead,))
        conn.execute(
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?,"
            " last_status = NULL, delivered_at = NULL WHERE id > ?",
            (tomorrow, rows - pending),
        )
        conn.execute("DELETE FROM attempts WHERE delivery_id > ?", (rows - pending,))
        conn.execute(
            "UPDATE events SET duplicates = 2, first_duplicate_at = received_at + 1,"
            " last_seen_at = received_at + 2 WHERE id % 100 = 0"
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def fetch(url: str) -> float:
    """Seconds to the whole answer; a page that is not 200 is a bench failure."""
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as resp:
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{url}: HTTP {resp.status}")
    return time.perf_counter() - t0


def pages(rows: int, prefix: str) -> list[tuple[str, str]]:
    """Each page to time, by name; ``prefix``: the keys' (the store's ids carry it)."""
    dead = int(rows * DEAD_SHARE)
    middle = rows // 2
    key = f"{prefix}-{middle:09d}"
    return [
        ("overview", "/ui/"),
        ("events, newest", "/ui/events"),
        ("events, a route", "/ui/events?route=bench"),
        ("events, dead (all old)", "/ui/events?state=dead"),
        ("events, pending", "/ui/events?state=pending"),
        ("events, older page", f"/ui/events?before_id={middle}"),
        ("events, by key", f"/ui/events?key={key}"),
        ("events, since 1h", "/ui/events?since=1h"),
        ("events, until 1d ago", "/ui/events?until=1d"),
        ("events, JSON field", f"/ui/events?field=id&value={key}"),
        ("event, delivered", f"/ui/events/{middle}"),
        ("event, dead", f"/ui/events/{dead // 2}"),
        ("dead letters", "/ui/dead"),
        ("dead letters, older page", f"/ui/dead?before_id={dead // 2}"),
        ("replay preview, one", f"/ui/events/{dead // 2}/replay"),
        ("replay preview, all dead", "/ui/dead/replay?route=bench"),
        ("tail feed", "/ui/tail.json"),
    ]


def time_pages(
    admin: str, paths: list[tuple[str, str]], repeat: int
) -> list[tuple[str, str, list[float]]]:
    out = []
    for name, path in paths:
        url = admin + path
        for _ in range(3):
            fetch(url)
        out.append((name, path, [fetch(url) for _ in range(repeat)]))
    return out


class Reader(threading.Thread):
    """Fetches the console's pages in turn until stopped, ``pace`` a second (0: as
    fast as they come)."""

    def __init__(self, admin: str, paths: list[tuple[str, str]], pace: float) -> None:
        super().__init__(daemon=True)
        self.urls = [admin + p for _, p in paths]
        self.pace = pace
        self.stopped = threading.Event()
        self.fetched = 0

    def run(self) -> None:
        start = time.monotonic()
        while not self.stopped.is_set():
            for url in self.urls:
                if self.pace:
                    due = start + self.fetched / self.pace
                    if self.stopped.wait(max(0.0, due - time.monotonic())):
                        return
                fetch(url)
                self.fetched += 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    o = ap.parse_args(argv)
    run_id = secrets.token_hex(4)
    prefix = f"console-{run_id}"
    paths = pages(o.rows, prefix)
    wrk_path = wrk.ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        script = lua.write_script(folder)
        backend = servers.backend_in(stack, folder)
        db = folder / "relay.db"
        t0 = time.monotonic()
        prefill.build(db, o.rows, "delivered", backend.url(SINK_PATH), prefix=prefix)
        shape(db, o.rows)
        print(f"store: {o.rows:,} events in {time.monotonic() - t0:.0f}s", file=sys.stderr)
        relay = relayproc.start(folder, relayproc.RouteSpec("queue", backend.url(SINK_PATH)), db)
        stack.callback(relay.proc.stop)
        admin = f"http://127.0.0.1:{relay.admin_port}"
        timed = time_pages(admin, paths, o.repeat)
        print(f"\nConsole pages, {o.rows:,} events stored ({o.repeat} fetches each, ms)\n")
        print("| page | path | median | p95 | max |\n|---|---|---:|---:|---:|")
        for name, path, secs in timed:
            ms = sorted(s * 1000 for s in secs)
            p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
            print(f"| {name} | `{path}` | {statistics.median(ms):.1f} | {p95:.1f} | {ms[-1]:.1f} |")
        runs = []
        # Alone; with an operator clicking about and a tail polling; with a reader flat out.
        for label, pace in (
            ("alone", None),
            ("console read, 2 pages/s", 2.0),
            ("console read flat out", 0.0),
        ):
            reader = None if pace is None else Reader(admin, paths, pace)
            if reader is not None:
                reader.start()
            result = wrk.run(
                wrk_path,
                script,
                wrk.Load(relay.url, prefix=f"{run_id}-{label.replace(' ', '-')}"),
                duration=o.duration,
                connections=o.connections,
            )
            if reader is not None:
                reader.stopped.set()
                reader.join(30)
            runs.append((label, result, 0 if reader is None else reader.fetched))
        alone = runs[0][1]
        print(
            f"\nIngest with {o.rows:,} events stored ({o.duration}s each, wrk -c{o.connections})\n"
        )
        print("| run | accepted/s | x alone | p99 ms | errors | pages read |")
        print("|---|---:|---:|---:|---:|---:|")
        for label, result, fetched in runs:
            print(
                f"| {label} | {result.rate:,.0f} | {result.rate / alone.rate:.2f} |"
                f" {result.p99_ms:.1f} | {result.errors} | {fetched} ({fetched / o.duration:.1f}/s) |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
