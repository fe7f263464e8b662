"""The issue's targets, checked against one run's results."""

from __future__ import annotations

from dataclasses import dataclass

from bench.results import Row

MIB_UNDER_LOAD = 150
MIB_WITH_BACKLOG = 200
BACKLOG = 1_000_000
# Relay scenarios whose peak RSS counts as "under load" (M1 has its own, looser bound).
UNDER_LOAD = ("Q1", "L1", "Q2", "Q3", "S1", "SH", "H1", "D1", "G1")


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    goal: str
    value: str
    met: bool | None  # None: not measured in this run


def _rate(rows: dict[str, Row], name: str) -> float | None:
    row = rows.get(name)
    return None if row is None else row.rate


def _at_least(name: str, goal: str, value: float | None, bound: float, unit: str) -> Target:
    if value is None:
        return Target(name, goal, "-", None)
    return Target(name, goal, f"{value:,.0f}{unit}", value >= bound)


def _ratio(
    name: str, goal: str, rows: dict[str, Row], top: str, bottom: str, bound: float
) -> Target:
    a, b = _rate(rows, top), _rate(rows, bottom)
    if a is None or b is None or b == 0:
        return Target(name, goal, "-", None)
    return Target(name, goal, f"{a / b:.2f}x ({a:,.0f} / {b:,.0f})", a / b >= bound)


def _q3(rows: dict[str, Row]) -> Target:
    goal = "≥ 4,000 events/s end to end, pending not growing"
    runs = [r for name, r in rows.items() if name.startswith("Q3")]
    if not runs:
        return Target("Q3 sustained", goal, "-", None)
    parts, met = [], False
    for r in runs:
        rate, grows = r.extra.get("delivery_rate", 0.0), bool(r.extra.get("growing", 1.0))
        parts.append(f"{r.name}: {rate:,.0f}/s delivered, {'growing' if grows else 'steady'}")
        met = met or (rate >= 4000 and not grows)
    return Target("Q3 sustained", goal, "; ".join(parts), met)


def _rss(rows: dict[str, Row]) -> Target:
    goal = f"≤ {MIB_UNDER_LOAD} MiB"
    seen = [
        (r.rss_mib, name)
        for name, r in rows.items()
        if name.split("@")[0] in UNDER_LOAD and r.rss_mib is not None
    ]
    if not seen:
        return Target("relay RSS under load", goal, "-", None)
    peak, where = max(seen)
    return Target("relay RSS under load", goal, f"{peak:.1f} MiB ({where})", peak <= MIB_UNDER_LOAD)


def _rss_backlog(rows: dict[str, Row]) -> Target:
    goal = f"≤ {MIB_WITH_BACKLOG} MiB with {BACKLOG:,} pending"
    row = rows.get("M1")
    if row is None or row.rss_mib is None:
        return Target("relay RSS with a backlog", goal, "-", None)
    pending = int(row.extra.get("pending_start", 0))
    value = f"{row.rss_mib:.1f} MiB with {pending:,} pending"
    if pending < BACKLOG:
        return Target("relay RSS with a backlog", goal, value + " (smaller backlog)", None)
    return Target("relay RSS with a backlog", goal, value, row.rss_mib <= MIB_WITH_BACKLOG)


def _latency(rows: dict[str, Row]) -> Target:
    goal = "p99 ≤ 15 ms at half Q1's peak rate"
    row = rows.get("L1")
    if row is None or row.p99_ms is None:
        return Target("Q1 ack latency", goal, "-", None)
    return Target(
        "Q1 ack latency",
        goal,
        f"p99 {row.p99_ms:.2f} ms at {row.rate or 0:,.0f}/s",
        row.p99_ms <= 15,
    )


def evaluate(rows: dict[str, Row]) -> list[Target]:
    return [
        _at_least("Q1 throughput", "≥ 10,000 events/s", _rate(rows, "Q1"), 10_000, "/s"),
        _ratio("Q1 vs direct", "≥ 0.35 x B0", rows, "Q1", "B0", 0.35),
        _ratio("Q2 vs direct", "≥ 0.7 x B0", rows, "Q2", "B0", 0.7),
        # Absorbing a duplicate must cost less than storing a new event.
        _ratio("duplicates vs Q1", "≥ 1.3 x Q1", rows, "Q2", "Q1", 1.3),
        _ratio("S1 vs naive proxy", "≥ 0.8 x B1", rows, "S1", "B1", 0.8),
        # dedupe: shadow forwards every copy as sync mode forwards the first: no dearer.
        _ratio("SH vs S1", "≥ 0.9 x S1", rows, "SH", "S1", 0.9),
        _q3(rows),
        _at_least("D1 drain", "≥ 5,000 deliveries/s", _rate(rows, "D1"), 5_000, "/s"),
        # A delivery sends one request; the naive proxy also parses one: cheaper.
        _ratio("D1 vs naive proxy", "≥ 1.2 x B1", rows, "D1", "B1", 1.2),
        _ratio("E1 vs naive proxy", "≥ 0.5 x B1", rows, "E1", "B1", 0.5),
        _ratio("G1 vs Q1", "≥ 0.8 x Q1", rows, "G1", "Q1", 0.8),
        _rss(rows),
        _rss_backlog(rows),
        _latency(rows),
    ]
