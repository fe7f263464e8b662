"""The refusal tally: one line per reason now and then, with the count since the last."""

from __future__ import annotations

from relay.intake.limits import Tally


def test_one_line_per_reason_per_period_with_the_count_since_the_last() -> None:
    tally = Tally(every=10.0)
    assert tally.add("max_connections", 100.0) == 1  # the first is said at once
    assert [tally.add("max_connections", 100.0 + i) for i in range(1, 10)] == [None] * 9
    assert tally.add("header_timeout", 105.0) == 1  # each reason its own
    assert tally.add("max_connections", 110.0) == 10  # the nine held back, and this one
    assert tally.add("max_connections", 119.9) is None
    assert tally.add("max_connections", 200.0) == 2
