"""Command-line options of ``python -m bench``."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# In the order they run: baselines first, the scenarios that need a peak rate after it.
SCENARIOS: dict[str, str] = {
    "B0": "direct to the backend (one aiohttp process)",
    "B1": "naive aiohttp forwarding proxy, no store",
    "Q1": "queue mode, unique 1 KiB events, durable ack",
    "F1": "Q1 with five filter rules on the route (none met)",
    "QT": "Q1 over HTTPS (the webhook listener's own TLS)",
    "QE": "Q1 with storage.encryption (AES-256-GCM of bodies and headers)",
    "L1": "Q1 at half its peak rate (ack latency)",
    "Q2": "queue mode, duplicates only (pre-seeded keys)",
    "Q3": "queue mode, ingest and delivery at once",
    "S1": "sync mode, unique events",
    "SH": "sync mode with dedupe: shadow, unique events",
    "H1": "hybrid mode, unique events, answered in line by a fast backend",
    "D1": "drain pending events after a restart",
    "G1": "Q1 with a large store already on disk",
    "M1": "Q1 load with a large backlog pending",
    "QP": "Q1 on a store of 200,000 delivered events",
    "QC": "QP with max_rows: 150,000 enforced (drop_keys) while it runs",
    "E1": "sustained end to end: paced, backlog not growing, ack p99 <= 50 ms",
    "PQ1": "Q1 on PostgreSQL",
    "PD1": "D1 on PostgreSQL (events held by a pause, then resumed)",
    "PE1": "E1 on PostgreSQL",
    "R2": "two replicas on one PostgreSQL database, round-robin sender",
}
# Scenarios that need --postgres; without it they are left out.
POSTGRES_ONLY: tuple[str, ...] = ("PQ1", "PD1", "PE1", "R2")
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
# A scenario that cannot run without another one's result.
NEEDS: dict[str, tuple[str, ...]] = {"L1": ("Q1",)}

_DURATION = re.compile(r"^(\d+)(s|m)?$")


@dataclass(frozen=True, slots=True)
class Options:
    only: tuple[str, ...]
    duration: int  # seconds of each measured wrk run (wrk's granularity is a second)
    warmup: int  # seconds of the unmeasured run before it (0: none)
    connections: int
    rows: int  # G1: rows already in the store
    pending: int  # M1: events pending in the store
    drain: int  # D1: events to deliver
    q3_rate: int  # the paced Q3 run's offered rate (the Q3 target)
    quick: bool
    keep: bool  # keep the work directory (configs, logs, databases)
    profile: bool  # record the relay with py-spy instead of reporting clean numbers
    json_path: Path | None
    workers: int  # the relay's ``workers`` setting in the scenarios running now (0: one process)
    postgres: str | None = None  # the PostgreSQL rows' server (None: they are left out)
    # Every setting to measure: the relay scenarios run once per value, the baselines once.
    workers_list: tuple[int, ...] = (0,)


def parse_duration(text: str) -> int:
    """``10s``, ``2m`` or ``10`` (seconds) into whole seconds."""
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"expected a duration such as 10s or 1m, got {text!r}")
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def _count(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {text!r}")
    return value


def _workers(text: str) -> tuple[int, ...]:
    try:
        values = tuple(dict.fromkeys(int(v) for v in text.split(",") if v.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers such as 0,2, got {text!r}") from None
    if not values or any(not 0 <= v <= 64 for v in values):
        raise argparse.ArgumentTypeError(f"expected numbers from 0 to 64, got {text!r}")
    return values


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip().upper() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(unknown) or text!r}; choose from {', '.join(SCENARIOS)}"
        )
    return names


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Load scenarios for webhook-relay; prints markdown tables.",
        epilog="Scenarios: " + "; ".join(f"{k} {v}" for k, v in SCENARIOS.items()),
    )
    p.add_argument("--only", type=_scenarios, help="comma-separated scenarios, e.g. Q1,S1")
    p.add_argument("--duration", type=parse_duration, help="each measured run (default 10s)")
    p.add_argument("--connections", type=_count, default=64, help="wrk connections (default 64)")
    p.add_argument("--rows", type=_count, help="G1: rows pre-filled in the store (default 5000000)")
    p.add_argument("--pending", type=_count, help="M1: events pending (default 1000000)")
    p.add_argument("--drain", type=_count, help="D1: events to deliver (default 100000)")
    p.add_argument("--q3-rate", type=_count, default=4000, help="paced Q3 rate (default 4000/s)")
    p.add_argument(
        "--quick", action="store_true", help="short runs, small D1/G1/M1: checks the harness"
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument(
        "--profile",
        action="store_true",
        help="record the relay with py-spy during each relay scenario and print its top functions",
    )
    p.add_argument(
        "--workers",
        type=_workers,
        default=(0,),
        help="the relay's workers setting; a list such as 0,2 measures each in one run"
        " (default 0: one process)",
    )
    p.add_argument(
        "--postgres",
        nargs="?",
        const=DEFAULT_POSTGRES,
        metavar="URL",
        help=f"run the PostgreSQL rows ({', '.join(POSTGRES_ONLY)}) on this server"
        f" (default when given alone: {DEFAULT_POSTGRES})",
    )
    p.add_argument("--json", type=Path, dest="json_path", help="also write the results here")
    return p


def parse(argv: Sequence[str] | None = None) -> Options:
    a = parser().parse_args(argv)
    quick: bool = a.quick
    only: tuple[str, ...] = a.only or tuple(SCENARIOS)
    wanted = set(only)
    for name in only:
        wanted.update(NEEDS.get(name, ()))
    duration = a.duration or (2 if quick else 10)
    if a.postgres is None:
        wanted -= set(POSTGRES_ONLY) - set(a.only or ())
    return Options(
        only=tuple(n for n in SCENARIOS if n in wanted),
        postgres=a.postgres,
        duration=duration,
        warmup=0 if quick else 2,
        connections=a.connections,
        rows=a.rows or (20_000 if quick else 5_000_000),
        pending=a.pending or (10_000 if quick else 1_000_000),
        drain=a.drain or (2_000 if quick else 100_000),
        q3_rate=a.q3_rate,
        quick=quick,
        keep=a.keep,
        profile=a.profile,
        json_path=a.json_path,
        workers=a.workers[0],
        workers_list=a.workers,
    )
