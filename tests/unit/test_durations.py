"""Prometheus-style duration parsing and formatting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stormwatch.schemas.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("30s", 30_000),
        ("5m", 300_000),
        ("1h30m", 5_400_000),
        ("250ms", 250),
        ("2d", 172_800_000),
        ("1w", 604_800_000),
        ("1y", 365 * 86_400_000),
        ("1h1m1s1ms", 3_661_001),
        ("0s", 0),
        ("0", 0),
        ("30", 30_000),
        ("1.5", 1_500),
        ("0.25", 250),
        ("  5m  ", 300_000),
        ("1m30s", 90_000),
        ("90s", 90_000),
        (30, 30_000),
        (0, 0),
        (1.5, 1_500),
        (0.001, 1),
    ],
)
def test_parse(text: str | int | float, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("5x", "unknown unit 'x'"),
        ("5M", "units are case-sensitive: use 'm'"),
        ("5H", "units are case-sensitive: use 'h'"),
        ("m", "unit 'm' has no number before it"),
        ("1h5", "number 5 has no unit after it"),
        ("1.5h", "fractions are only allowed in plain seconds"),
        ("1h.5m", "fractions are only allowed in plain seconds"),
        ("1m1h", "unit 'h' comes after a smaller unit"),
        ("1m2m", "unit 'm' appears more than once"),
        ("-5m", "durations cannot be negative"),
        ("-5", "durations cannot be negative"),
        ("1 h", "spaces are not allowed"),
        ("1h+5m", "unexpected character '+'"),
        ("0.0005", "fraction of a millisecond"),
        (-1, "durations cannot be negative"),
        (-0.5, "durations cannot be negative"),
        (float("inf"), "not a finite number"),
        (float("nan"), "not a finite number"),
        (0.0001, "fraction of a millisecond"),
    ],
)
def test_parse_errors(text: str | int | float, message: str) -> None:
    with pytest.raises(ValueError, match="invalid duration") as info:
        parse_duration(text)
    assert message in str(info.value)
    assert "expected a duration like 30s, 5m" in str(info.value)


@pytest.mark.parametrize("value", [True, None, [1], {"a": 1}])
def test_parse_rejects_other_types(value: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0s"),
        (250, "250ms"),
        (30_000, "30s"),
        (5_400_000, "1h30m"),
        (86_400_000, "1d"),
        (604_800_000 + 86_400_000, "1w1d"),
        (3_661_001, "1h1m1s1ms"),
        (-90_000, "-1m30s"),
    ],
)
def test_format(ms: int, text: str) -> None:
    assert format_duration(ms) == text


def test_format_rejects_non_int() -> None:
    with pytest.raises(TypeError):
        format_duration(1.5)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=10 * 365 * 86_400_000))
def test_format_parse_round_trip(ms: int) -> None:
    assert parse_duration(format_duration(ms)) == ms
