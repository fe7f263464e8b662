"""Version comparison for stale suppression (relay.versions): pure, no I/O."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.versions import as_instant, as_number, compare, highest, is_stale


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # Numbers, when both are numbers: by value, not by text.
        ("10", "9", 1),
        ("9", "10", -1),
        ("3", "3", 0),
        ("3", "3.0", 0),
        ("1e3", "999", 1),
        ("-1", "0", -1),
        ("0.5", ".25", 1),
        ("+7", "7", 0),
        # Exact: nanosecond timestamps one apart differ (floats would call them equal).
        ("1700000000123456789", "1700000000123456788", 1),
        ("0.1000000000000000000001", "0.1", 1),
        # RFC 3339, when both are timestamps: by the instant they name.
        ("2024-05-01T12:00:00Z", "2024-05-01T11:59:59Z", 1),
        ("2024-05-01T14:00:00+02:00", "2024-05-01T12:00:00Z", 0),
        ("2024-05-01T13:00:00+02:00", "2024-05-01T12:00:00Z", -1),
        ("2024-05-01T12:00:00.5Z", "2024-05-01T12:00:00.25Z", 1),
        ("2024-05-01T12:00:00.10Z", "2024-05-01T12:00:00.1Z", 0),
        ("2024-05-01t12:00:00z", "2024-05-01 12:00:00Z", 0),
        ("2024-05-01T12:00:00.000000001Z", "2024-05-01T12:00:00Z", 1),
        ("2016-12-31T23:59:60Z", "2016-12-31T23:59:59Z", 1),  # a leap second
        ("2024-05-01T00:30:00-01:00", "2024-05-01T01:00:00Z", 1),
        # Anything else, or a mix of kinds: as strings, by code point.
        ("b", "a", 1),
        ("v10", "v9", -1),
        ("10", "v9", -1),
        ("2024-05-01T12:00:00Z", "1714564800", 1),  # a timestamp against a number
        ("2024-05-01", "2024-04-30", 1),  # dates without a time are strings (same order here)
        ("nan", "1", 1),
        ("inf", "1", 1),  # "i" > "1": not read as infinity
        ("", "a", -1),
    ],
)
def test_compare(a: str, b: str, expected: int) -> None:
    assert compare(a, b) == expected
    assert compare(b, a) == -expected


@pytest.mark.parametrize(
    "text",
    ["", "1.2.3", "0x10", "1_000", "NaN", "Infinity", "inf", "1e", "e5", " 1", "١٢"],
)
def test_not_numbers(text: str) -> None:
    assert as_number(text) is None


def test_numbers_are_exact() -> None:
    assert as_number("1e3") == Decimal(1000)
    assert as_number("-0.5") == Decimal("-0.5")


@pytest.mark.parametrize(
    "text",
    [
        "2024-02-30T00:00:00Z",  # no such day
        "2024-13-01T00:00:00Z",
        "2024-05-01T24:00:00Z",
        "2024-05-01T12:60:00Z",
        "2024-05-01T12:00:61Z",
        "2024-05-01T12:00:00",  # RFC 3339 needs an offset
        "2024-05-01T12:00:00+2:00",
        "2024-05-01T12:00:00+24:00",
        "2024-05-01T12:00Z",
        "2024-05-01T12:00:00.Z",
        "٢٠٢٤-05-01T12:00:00Z",
    ],
)
def test_not_timestamps(text: str) -> None:
    assert as_instant(text) is None


def test_timestamps_as_instants() -> None:
    assert as_instant("1970-01-01T00:00:00Z") == (0, Decimal(0))
    assert as_instant("1970-01-01T01:00:00.75+01:00") == (0, Decimal("0.75"))
    assert as_instant("2024-02-29T00:00:00Z") is not None  # a leap day


def test_is_stale() -> None:
    assert is_stale("1", "3")
    assert not is_stale("4", "3")
    assert not is_stale("3", "3")
    assert is_stale("3", "3", equal_is_stale=True)
    assert is_stale("3.0", "3", equal_is_stale=True)
    assert is_stale("2024-05-01T12:00:00Z", "2024-05-01T14:00:00+01:00")


def test_highest() -> None:
    assert highest(None, "1") == "1"
    assert highest("3", "1") == "3"
    assert highest("3", "10") == "10"
    assert highest("3", "3.0") == "3"  # equal: the remembered one stays


_versions = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.text(max_size=8),
)


@given(_versions, _versions)
def test_compare_is_antisymmetric(a: str, b: str) -> None:
    assert compare(a, b) == -compare(b, a)


@given(st.lists(st.integers(-(10**30), 10**30), min_size=1, max_size=20))
def test_highest_of_numbers_is_the_numeric_maximum(values: list[int]) -> None:
    best: str | None = None
    for v in values:
        best = highest(best, str(v))
    assert best == str(max(values))
