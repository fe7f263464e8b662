"""A route's filters: ordered rules, each a condition on the request's headers, query
and JSON body and an action (``drop``, or ``{upstream: NAME}`` to send the event to
one of the route's alternates). Patterns are RE2 (``google-re2``): linear time on
whatever a stranger sends, unlike ``re``."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Final, Literal

import re2  # type: ignore[import-untyped]

from relay.config.validate import Section, show
from relay.keys import PathPart, parse_json_path

Where = Literal["header", "query", "json"]
Op = Literal["eq", "in", "exists", "matches"]
WHERES: Final[tuple[Where, ...]] = ("header", "query", "json")
OPS: Final[tuple[Op, ...]] = ("eq", "in", "exists", "matches")


@dataclass(frozen=True, slots=True)
class Test:
    """One comparison: the ``where`` value named ``name`` (a JSON path for json)."""

    where: Where
    name: str
    op: Op
    value: Any  # eq: a scalar; in: a tuple of them; exists: a bool; matches: a pattern
    path: tuple[PathPart, ...] = ()


@dataclass(frozen=True, slots=True)
class AllOf:
    parts: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    part: Condition


Condition = Test | AllOf | AnyOf | Not


@dataclass(frozen=True, slots=True)
class FilterRule:
    name: str  # the metric's ``rule`` label
    when: Condition
    upstream: str | None = None  # None: drop; else the alternate's URL

    @property
    def action(self) -> str:
        return "drop" if self.upstream is None else "upstream"


@functools.lru_cache(maxsize=256)
def pattern(text: str) -> Any:
    """The compiled RE2 pattern (re2.error if it is not valid RE2)."""
    options = re2.Options()
    options.log_errors = False  # the config error says it; absl would print it too
    return re2.compile(text, options)


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def _op(ops: Section, op: Op) -> Any:
    """The operand of ``op``, checked (an error recorded and None when it is wrong)."""
    value = ops.raw(op)
    if op == "eq" and not _scalar(value):
        ops.error(op, f"expected a string, number, boolean or null, got {show(value)}")
    elif op == "in":
        if isinstance(value, list) and all(_scalar(v) for v in value):
            return tuple(value)
        ops.error(op, f"expected a list of strings or numbers, got {show(value)}")
    elif op == "exists" and not isinstance(value, bool):
        ops.error(op, f"expected true or false, got {show(value)}")
    elif op == "matches":
        if not isinstance(value, str):
            ops.error(op, f"expected a pattern (a string), got {show(value)}")
            return None
        try:
            pattern(value)
        except re2.error as exc:
            why = exc.args[0] if exc.args else exc
            shown = why.decode(errors="replace") if isinstance(why, bytes) else str(why)
            ops.error(op, f"not a valid RE2 pattern: {shown}")
    return value


def _tests(sec: Section, where: Where) -> list[Condition]:
    out: list[Condition] = []
    for name in list(sec.data):
        ops = sec.section(str(name))
        path: tuple[PathPart, ...] = ()
        if where == "json":
            try:
                path = parse_json_path(str(name))
            except ValueError as exc:
                sec.error(str(name), str(exc))
        out += [Test(where, str(name), op, _op(ops, op), path) for op in OPS if ops.has(op)]
        if not ops.data:
            ops.error(None, f"needs one of {', '.join(OPS)}")
        ops.finish()
    return out


def parse_condition(sec: Section) -> Condition:
    parts: list[Condition] = []
    for where in WHERES:
        if sec.has(where):
            parts += _tests(sec.section(where), where)
    for key, combine in (("all", AllOf), ("any", AnyOf)):
        if not sec.has(key):
            continue
        raw = sec.raw(key)
        if not isinstance(raw, list) or not raw:
            sec.error(key, f"expected a non-empty list of conditions, got {show(raw)}")
            continue
        nested = [
            parse_condition(Section(item, sec.where(f"{key}[{i}]"), sec.errors))
            for i, item in enumerate(raw)
        ]
        parts.append(combine(tuple(nested)))
    if sec.has("not"):
        parts.append(Not(parse_condition(sec.section("not"))))
    if not sec.data:
        sec.error(None, "needs a condition: header, query, json, all, any or not")
    sec.finish()
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def parse_filters(sec: Section, key: str, alternates: dict[str, str]) -> tuple[FilterRule, ...]:
    """``alternates``: the route's named alternates, name to URL."""
    raw = sec.raw(key)
    if not isinstance(raw, list):
        sec.error(key, f"expected a list of rules, got {show(raw)}")
        return ()
    rules: list[FilterRule] = []
    for i, item in enumerate(raw):
        rule = Section(item, sec.where(f"{key}[{i}]"), sec.errors)
        name = rule.text("name", "")
        if not name:
            rule.error("name", "required (the rule label of relay_filtered_total)")
        when = parse_condition(rule.section("when")) if rule.has("when") else None
        if when is None:
            rule.error("when", "required")
        upstream = _action(rule, alternates)
        rule.finish()
        if name and when is not None and upstream is not None:
            rules.append(FilterRule(name, when, upstream or None))
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        sec.error(key, "two rules share a name")
    return tuple(rules)


def _action(rule: Section, alternates: dict[str, str]) -> str | None:
    """``""``: drop; a URL: that alternate; None: an error was recorded."""
    action = rule.raw("action")
    if action == "drop":
        return ""
    if isinstance(action, dict) and set(action) == {"upstream"}:
        target = action["upstream"]
        if target in alternates:
            return alternates[target]
        known = ", ".join(sorted(alternates)) or "none declared"
        rule.error("action.upstream", f"no alternate named {show(target)} (alternates: {known})")
        return None
    rule.error("action", f"expected drop or {{upstream: NAME}}, got {show(action)}")
    return None
