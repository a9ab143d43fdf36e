"""Prometheus-style durations ("30s", "1h30m", "250ms") as integer milliseconds.

Every time in the correlator is an integer millisecond count, so the configuration is parsed
to that once, with error messages that say exactly what was wrong and what is accepted.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

__all__ = ["DURATION_HELP", "format_duration", "parse_duration"]

# Largest first: the order in which units must appear in a duration string.
_UNITS: dict[str, int] = {
    "y": 365 * 24 * 3600 * 1000,
    "w": 7 * 24 * 3600 * 1000,
    "d": 24 * 3600 * 1000,
    "h": 3600 * 1000,
    "m": 60 * 1000,
    "s": 1000,
    "ms": 1,
}
_UNIT_ORDER = {unit: i for i, unit in enumerate(_UNITS)}

DURATION_HELP = (
    "expected a duration like 30s, 5m, 1h30m, 250ms or 2d (units y, w, d, h, m, s, ms, largest first; "
    "a plain number means seconds)"
)

_PLAIN_NUMBER = re.compile(r"^[0-9]+(?:\.[0-9]+)?$")
_TOKEN = re.compile(r"([0-9]*)([a-zA-Z]*)")


def _bad(text: object, what: str) -> ValueError:
    return ValueError(f"invalid duration {text!r}: {what}; {DURATION_HELP}")


def _seconds_to_ms(seconds: Decimal, original: object) -> int:
    ms = seconds * 1000
    if ms != ms.to_integral_value():
        raise _bad(original, "durations have millisecond resolution, this has a fraction of a millisecond")
    return int(ms)


def parse_duration(text: str | int | float) -> int:
    """Return ``text`` in milliseconds; numbers (and numeric strings) are seconds."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise _bad(text, f"got {type(text).__name__}")
    if isinstance(text, int):
        if text < 0:
            raise _bad(text, "durations cannot be negative")
        return text * 1000
    if isinstance(text, float):
        if not math.isfinite(text):
            raise _bad(text, "not a finite number")
        if text < 0:
            raise _bad(text, "durations cannot be negative")
        return _seconds_to_ms(Decimal(repr(text)), text)

    s = text.strip()
    if not s:
        raise _bad(text, "it is empty")
    if s.startswith("-"):
        raise _bad(text, "durations cannot be negative")
    if _PLAIN_NUMBER.match(s):
        try:
            return _seconds_to_ms(Decimal(s), text)
        except InvalidOperation as exc:  # pragma: no cover - the regex admits only valid decimals
            raise _bad(text, "not a number") from exc
    if any(c.isspace() for c in s):
        raise _bad(text, "spaces are not allowed inside a duration")

    total = 0
    last_order = -1
    pos = 0
    while pos < len(s):
        token = _TOKEN.match(s, pos)
        assert token is not None  # the pattern matches the empty string at worst
        number, unit = token.group(1), token.group(2)
        if not number and not unit:
            if s[pos] == ".":
                raise _bad(
                    text, "fractions are only allowed in plain seconds like 1.5; write 1h30m instead of 1.5h"
                )
            raise _bad(text, f"unexpected character {s[pos]!r}")
        if not number:
            raise _bad(text, f"unit {unit!r} has no number before it")
        if not unit:
            nxt = s[token.end()] if token.end() < len(s) else ""
            if nxt == ".":
                raise _bad(
                    text, "fractions are only allowed in plain seconds like 1.5; write 1h30m instead of 1.5h"
                )
            raise _bad(text, f"number {number} has no unit after it")
        if unit not in _UNITS:
            hint = f" (units are case-sensitive: use {unit.lower()!r})" if unit.lower() in _UNITS else ""
            raise _bad(text, f"unknown unit {unit!r}{hint}")
        order = _UNIT_ORDER[unit]
        if order == last_order:
            raise _bad(text, f"unit {unit!r} appears more than once")
        if order < last_order:
            raise _bad(text, f"unit {unit!r} comes after a smaller unit; write units largest first")
        last_order = order
        total += int(number) * _UNITS[unit]
        pos = token.end()
    return total


def format_duration(ms: int) -> str:
    """The shortest Prometheus-style form of ``ms`` ("1h30m", "250ms", "0s"); parse_duration's inverse."""
    if isinstance(ms, bool) or not isinstance(ms, int):
        raise TypeError(f"format_duration expects an int number of milliseconds, got {type(ms).__name__}")
    if ms == 0:
        return "0s"
    if ms < 0:
        return "-" + format_duration(-ms)
    parts: list[str] = []
    rest = ms
    for unit, size in _UNITS.items():
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
