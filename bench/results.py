"""One row of the results table."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Row:
    name: str
    what: str
    rate: float | None = None  # requests (or events) per second answered without error
    p50_ms: float | None = None
    p99_ms: float | None = None
    rss_mib: float | None = None  # peak RSS of the process under test
    errors: int = 0  # wrk's status and socket errors
    notes: str = ""
    # Scenario-specific figures the targets read: delivery rate, pending growth, ...
    extra: dict[str, float] = field(default_factory=dict)
