"""Version comparison for stale suppression (pure, no I/O).

A route's ``stale: {version: SOURCE}`` names where an event's version is; the
relay remembers the highest version delivered per ordering key and drops (or
only counts) events whose version is not newer. Two versions compare:

1. as **numbers** when both are decimal numbers (``42``, ``-3``, ``1.5``,
   ``1e3``, ``1700000000123456789``), exactly (no float rounding, so
   nanosecond timestamps that differ by one still differ);
2. else as **instants** when both are RFC 3339 timestamps with an offset
   (``2024-05-01T12:00:00Z``, ``2024-05-01T14:00:00.25+02:00``; ``T`` or a
   space, any number of fraction digits, ``:60`` leap seconds allowed), so
   different offsets and fraction widths compare by the moment they name;
3. otherwise as **strings**, by Unicode code point (``"v10" < "v9"``: pad
   string versions, or use numbers or timestamps).

A number against a timestamp is two strings (rule 3): keep one kind per field.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Final

_NUMBER: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_RFC3339: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def as_number(text: str) -> Decimal | None:
    """The exact value of a decimal number, or None."""
    if not _NUMBER.fullmatch(text):
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the regex admits only valid literals
        return None
    return value if value.is_finite() else None


def as_instant(text: str) -> tuple[int, Decimal] | None:
    """An RFC 3339 timestamp as (UNIX seconds, fraction of a second), or None."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    try:
        dt.date(year, month, day)  # validates the month and the day of the month
    except ValueError:
        return None
    if hour > 23 or minute > 59 or second > 60:
        return None
    offset = 0
    if m.group(9) is not None:
        off_h, off_m = int(m.group(10)), int(m.group(11))
        if off_h > 23 or off_m > 59:
            return None
        offset = (off_h * 3600 + off_m * 60) * (1 if m.group(9) == "+" else -1)
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - offset
    fraction = Decimal("0" + m.group(7)) if m.group(7) else Decimal(0)
    return seconds, fraction


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as version ``a`` is older than, the same as, or newer than ``b``."""
    na, nb = as_number(a), as_number(b)
    if na is not None and nb is not None:
        return (na > nb) - (na < nb)
    ia, ib = as_instant(a), as_instant(b)
    if ia is not None and ib is not None:
        return (ia > ib) - (ia < ib)
    return (a > b) - (a < b)


def is_stale(version: str, delivered: str, equal_is_stale: bool = False) -> bool:
    """True if ``version`` must not overwrite the ``delivered`` one."""
    c = compare(version, delivered)
    return c < 0 or (c == 0 and equal_is_stale)


def highest(a: str | None, b: str) -> str:
    """The newer of two versions (``a`` when they compare equal); ``b`` if there is no ``a``."""
    if a is None:
        return b
    return b if compare(b, a) > 0 else a
