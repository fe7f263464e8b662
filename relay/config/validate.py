"""A typed reader over parsed YAML that collects every error with its path.

``config.py`` walks the document through ``Section`` objects; a wrong value
records ``routes[1].retry.max_attempts: expected an integer, got "ten"`` and
yields a default, so one run reports every mistake, not just the first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final, TypeVar, overload

T = TypeVar("T")
D = TypeVar("D")  # a default of another type (None, usually)
L = TypeVar("L", bound=str)  # one of a setting's choices

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNITS: Final = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_SIZE = re.compile(r"(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB|k|K|M|G)?")
_SIZE_UNITS: Final = {
    None: 1,
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "k": 1024,
    "K": 1024,
    "M": 1024**2,
    "G": 1024**3,
}


class _Missing:
    pass


MISSING: Final = _Missing()


def show(value: Any) -> str:
    """A value as an error message quotes it."""
    if isinstance(value, str):
        return json.dumps(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return repr(value)


def parse_duration(text: str) -> float:
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise ValueError(f'expected a duration like "500ms", "30s", "5m", "3d", got {show(text)}')
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_size(text: str) -> int:
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise ValueError(f'expected a size like "64KiB" or "1MiB", got {show(text)}')
    return int(m.group(1)) * _SIZE_UNITS[m.group(2)]


def format_duration(seconds: float) -> str:
    for unit in ("w", "d", "h", "m", "s"):
        size = _DURATION_UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


class Section:
    """One mapping of the document, at ``path``; records errors in a shared list."""

    def __init__(self, data: Any, path: str, errors: list[str]) -> None:
        self.path = path
        self.errors = errors
        self._used: set[str] = set()
        if data is None or data is MISSING:
            data = {}
        elif not isinstance(data, dict):
            self.error(None, f"expected a mapping, got {show(data)}")
            data = {}
        self.data: dict[Any, Any] = data

    def where(self, key: str | None) -> str:
        if key is None:
            return self.path or "(top level)"
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str | None, message: str) -> None:
        self.errors.append(f"{self.where(key)}: {message}")

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> Any:
        self._used.add(key)
        return self.data.get(key, MISSING)

    def _typed(
        self,
        key: str,
        default: T | _Missing,
        check: Callable[[Any], T],
        expected: str,
    ) -> T:
        value = self.raw(key)
        if value is MISSING or (value is None and default is not MISSING):
            if default is MISSING:
                self.error(key, "required")
                raise _Skip
            return default  # type: ignore[return-value]
        try:
            return check(value)
        except ValueError as exc:
            self.error(key, str(exc) or f"expected {expected}, got {show(value)}")
        except TypeError:
            self.error(key, f"expected {expected}, got {show(value)}")
        if default is MISSING:
            raise _Skip
        return default  # type: ignore[return-value]

    @overload
    def text(self, key: str, default: _Missing = MISSING, choices: tuple[str, ...] = ()) -> str: ...

    @overload
    def text(self, key: str, default: D, choices: tuple[str, ...] = ()) -> str | D: ...

    def text(self, key: str, default: Any = MISSING, choices: tuple[str, ...] = ()) -> Any:
        def check(v: Any) -> str:
            if not isinstance(v, str):
                raise TypeError
            if choices and v not in choices:
                raise ValueError(f"expected one of {', '.join(choices)}, got {show(v)}")
            return v

        what = f"one of {', '.join(choices)}" if choices else "a string"
        return self._typed(key, default, check, what)

    def choice(self, key: str, default: L, choices: tuple[L, ...]) -> L:
        """One of ``choices`` (typed as their Literal), or ``default`` when absent."""
        value = self.text(key, default, choices=choices)
        return next(c for c in choices if c == value)

    @overload
    def integer(
        self, key: str, default: _Missing = MISSING, lo: int | None = None, hi: int | None = None
    ) -> int: ...

    @overload
    def integer(
        self, key: str, default: D, lo: int | None = None, hi: int | None = None
    ) -> int | D: ...

    def integer(
        self, key: str, default: Any = MISSING, lo: int | None = None, hi: int | None = None
    ) -> Any:
        def check(v: Any) -> int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError
            if lo is not None and v < lo:
                raise ValueError(f"must be at least {lo}, got {v}")
            if hi is not None and v > hi:
                raise ValueError(f"must be at most {hi}, got {v}")
            return v

        return self._typed(key, default, check, "an integer")

    @overload
    def flag(self, key: str, default: _Missing = MISSING) -> bool: ...

    @overload
    def flag(self, key: str, default: D) -> bool | D: ...

    def flag(self, key: str, default: Any = MISSING) -> Any:
        def check(v: Any) -> bool:
            if not isinstance(v, bool):
                raise TypeError
            return v

        return self._typed(key, default, check, "true or false")

    @overload
    def duration(self, key: str, default: _Missing = MISSING, positive: bool = True) -> float: ...

    @overload
    def duration(self, key: str, default: D, positive: bool = True) -> float | D: ...

    def duration(self, key: str, default: Any = MISSING, positive: bool = True) -> Any:
        def check(v: Any) -> float:
            if not isinstance(v, str):
                raise ValueError(f'expected a duration like "30s", got {show(v)}')
            seconds = parse_duration(v)
            if positive and seconds <= 0:
                raise ValueError(f"must be more than zero, got {show(v)}")
            return seconds

        return self._typed(key, default, check, "a duration")

    @overload
    def size(self, key: str, default: _Missing = MISSING) -> int: ...

    @overload
    def size(self, key: str, default: D) -> int | D: ...

    def size(self, key: str, default: Any = MISSING) -> Any:
        def check(v: Any) -> int:
            if isinstance(v, bool):
                raise TypeError
            if isinstance(v, int):
                if v < 0:
                    raise ValueError(f"must not be negative, got {v}")
                return v
            if not isinstance(v, str):
                raise TypeError
            return parse_size(v)

        return self._typed(key, default, check, 'a size like "1MiB"')

    @overload
    def strings(self, key: str, default: _Missing = MISSING) -> tuple[str, ...]: ...

    @overload
    def strings(self, key: str, default: D) -> tuple[str, ...] | D: ...

    def strings(self, key: str, default: Any = MISSING) -> Any:
        """A string or a list of strings, as a tuple."""

        def check(v: Any) -> tuple[str, ...]:
            if isinstance(v, str):
                return (v,)
            if isinstance(v, list) and all(isinstance(x, str) for x in v):
                return tuple(v)
            raise ValueError(f"expected a string or a list of strings, got {show(v)}")

        return self._typed(key, default, check, "a list of strings")

    def section(self, key: str) -> Section:
        return Section(self.raw(key), self.where(key), self.errors)

    def finish(self) -> None:
        """Record an error for every key nobody asked for (a typo, usually)."""
        for key in self.data:
            if key not in self._used:
                self.error(str(key), "unknown key")


class _Skip(Exception):
    """A required value was missing or wrong; its error is already recorded."""


Skip = _Skip
