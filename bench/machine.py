"""How busy the machine is before a scenario: other work on 2 cores skews every figure."""

from __future__ import annotations

import time

QUIET = 0.25  # at most this share of all CPUs busy counts as quiet


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies over all CPUs, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return idle, sum(fields[:8])


def cpu_busy(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over the next ``seconds`` (0..1)."""
    idle0, total0 = _cpu_times()
    time.sleep(seconds)
    idle1, total1 = _cpu_times()
    total = total1 - total0
    return 0.0 if total <= 0 else 1.0 - (idle1 - idle0) / total


def settle(max_wait: float) -> float:
    """Wait up to ``max_wait`` seconds for the machine to go quiet; the last busy share.

    With no wait (``--quick``) it only takes a short look.
    """
    deadline = time.monotonic() + max_wait
    busy = cpu_busy(1.0 if max_wait > 0 else 0.3)
    while busy > QUIET and time.monotonic() < deadline:
        busy = cpu_busy()
    return busy
