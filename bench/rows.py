"""Turn a wrk result and a process's peak RSS into a table row."""

from __future__ import annotations

from bench.options import SCENARIOS
from bench.procs import Proc
from bench.results import Row
from bench.wrk import WrkResult


def from_wrk(name: str, result: WrkResult, proc: Proc, notes: str = "") -> Row:
    return Row(
        name=name,
        what=SCENARIOS.get(name.split("@", 1)[0], name),
        rate=result.rate,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        rss_mib=proc.peak_rss_mib(),
        errors=result.errors,
        notes=notes,
    )
