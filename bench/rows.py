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
        notes=_join(notes, group_note(proc)),
    )


def group_note(proc: Proc) -> str:
    """Say what the RSS column holds when the relay is several processes."""
    n = proc.group_size
    return f"RSS: PSS of {n} processes" if n > 1 and proc.group_pss_kib else ""


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)
