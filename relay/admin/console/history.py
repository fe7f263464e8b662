"""The overview's last hour, per minute, from counter totals sampled now and then
(no I/O): a counter read at the end of each minute, the minute's count is the
difference to the minute before. A restart starts the hour afresh."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

MINUTES: Final = 60

Series = tuple[str, str]  # (route, outcome)


class History:
    def __init__(self, minutes: int = MINUTES, start: float | None = None) -> None:
        self.minutes = minutes
        # minute number -> the totals last seen in that minute
        self._seen: dict[int, dict[Series, float]] = {}
        if start is not None:
            # Counters start at zero with the process: the first minute counts from there.
            self._seen[int(start // 60) - 1] = {}

    def observe(self, now: float, totals: Mapping[Series, float]) -> None:
        minute = int(now // 60)
        self._seen[minute] = dict(totals)
        for old in [m for m in self._seen if m <= minute - self.minutes - 1]:
            del self._seen[old]

    def per_minute(self, series: Series, now: float) -> list[int | None]:
        """The last ``minutes`` whole and current minutes, oldest first; None where
        the relay did not sample (it was not running, or the minute before was not
        sampled either)."""
        current = int(now // 60)
        out: list[int | None] = []
        for minute in range(current - self.minutes + 1, current + 1):
            end, start = self._seen.get(minute), self._before(minute)
            if end is None or start is None:
                out.append(None)
                continue
            # A counter that went down was reset (a worker restarted): count from zero.
            delta = end.get(series, 0.0) - start.get(series, 0.0)
            out.append(int(delta if delta >= 0 else end.get(series, 0.0)))
        return out

    def _before(self, minute: int) -> dict[Series, float] | None:
        """The totals at the end of the latest sampled minute before ``minute``."""
        earlier = [m for m in self._seen if m < minute]
        return self._seen[max(earlier)] if earlier else None


@dataclass(frozen=True, slots=True)
class Sparkline:
    """An SVG polyline's points and the series' peak, for a template to draw."""

    points: str
    peak: int
    total: int
    width: int
    height: int


def sparkline(values: Sequence[int | None], width: int = 120, height: int = 24) -> Sparkline:
    known = [v for v in values if v is not None]
    peak = max(known, default=0)
    step = width / max(1, len(values) - 1)
    points = []
    for i, v in enumerate(values):
        y = height - 1 - ((v or 0) / peak * (height - 2) if peak else 0)
        points.append(f"{i * step:.1f},{y:.1f}")
    return Sparkline(" ".join(points), peak, sum(known), width, height)
