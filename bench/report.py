"""The markdown tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bench.results import Row
from bench.targets import Target

DASH = "-"


def table(header: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def num(value: float | None, digits: int = 0) -> str:
    return DASH if value is None else f"{value:,.{digits}f}"


def ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or base == 0:
        return DASH
    return f"{value / base:.2f}x"


def results_table(results: dict[str, Row]) -> str:
    b0, b1 = results.get("B0"), results.get("B1")

    def base(row: Row | None, attr: str) -> float | None:
        return None if row is None else getattr(row, attr)

    body = []
    for row in results.values():
        body.append(
            [
                f"**{row.name}**",
                row.what,
                num(row.rate),
                ratio(row.rate, base(b0, "rate")),
                ratio(row.rate, base(b1, "rate")),
                num(row.p50_ms, 2),
                ratio(row.p50_ms, base(b0, "p50_ms")),
                num(row.p99_ms, 2),
                ratio(row.p99_ms, base(b0, "p99_ms")),
                num(row.rss_mib, 1),
                ratio(row.rss_mib, base(b1, "rss_mib")),
                str(row.errors) if row.errors else "0",
                row.notes,
            ]
        )
    header = [
        "scenario",
        "what",
        "req/s",
        "xB0",
        "xB1",
        "p50 ms",
        "xB0",
        "p99 ms",
        "xB0",
        "peak RSS MiB",
        "xB1",
        "errors",
        "notes",
    ]
    return table(header, body)


def targets_table(targets: list[Target]) -> str:
    def verdict(t: Target) -> str:
        return "not measured" if t.met is None else ("**met**" if t.met else "**not met**")

    return table(
        ["target", "goal", "measured", "result"],
        ([t.name, t.goal, t.value, verdict(t)] for t in targets),
    )
