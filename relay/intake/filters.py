"""Which of a route's filter rules an event meets first: pure, over the request's
parts as ``keys.Payload`` holds them (the body parsed at most once)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from relay.config.filters import AllOf, AnyOf, Condition, FilterRule, Not, Test, pattern
from relay.keys import INVALID_JSON, Number, Payload, walk

_ABSENT = object()


def first_match(rules: Sequence[FilterRule], payload: Payload) -> FilterRule | None:
    for rule in rules:
        if holds(rule.when, payload):
            return rule
    return None


def holds(cond: Condition, payload: Payload) -> bool:
    if isinstance(cond, Test):
        return _test(cond, payload)
    if isinstance(cond, AllOf):
        return all(holds(c, payload) for c in cond.parts)
    if isinstance(cond, AnyOf):
        return any(holds(c, payload) for c in cond.parts)
    if isinstance(cond, Not):
        return not holds(cond.part, payload)
    raise TypeError(cond)


def _values(payload: Payload, test: Test) -> list[Any]:
    """Every value the test looks at: each copy of a header or query parameter, or the
    JSON value at the path; empty when absent."""
    if test.where == "json":
        doc = payload.json()
        found = _ABSENT if doc is INVALID_JSON else walk(doc, test.path, _ABSENT)
        return [] if found is _ABSENT else [found]
    source: Any = payload.headers if test.where == "header" else payload.query
    getall = getattr(source, "getall", None)
    if getall is not None:
        return list(getall(test.name, []))
    return [] if test.name not in source else [source[test.name]]


def _test(test: Test, payload: Payload) -> bool:
    values = _values(payload, test)
    if test.op == "exists":
        return bool(values) is test.value
    text = test.where != "json"  # headers and query values are text
    if test.op == "eq":
        return any(_equal(v, test.value, text) for v in values)
    if test.op == "in":
        return any(_equal(v, want, text) for v in values for want in test.value)
    # matches: strings only (a JSON number's or object's text is not matched)
    return any(
        isinstance(v, str) and not isinstance(v, Number) and pattern(test.value).search(v)
        for v in values
    )


def _equal(got: Any, want: Any, text: bool) -> bool:
    if text:
        return isinstance(got, str) and got == _as_text(want)
    if isinstance(want, bool) or want is None or isinstance(got, bool) or got is None:
        return got is want  # true is not 1, null is not "null"
    if isinstance(got, Number):
        number = _number(got)
        return isinstance(want, int | float) and number is not None and number == _number(want)
    return isinstance(got, str) and isinstance(want, str) and got == want


def _as_text(want: Any) -> str | None:
    if want is None:
        return None
    if isinstance(want, bool):
        return "true" if want else "false"
    return str(want)


def _number(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None
