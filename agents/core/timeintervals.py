"""Alertmanager's ``time_intervals``, evaluated at an event time given in milliseconds.

The notifier mutes routes (or keeps them active) by named intervals, in Alertmanager's syntax so
that existing files translate unchanged. An interval holds when *every* field it gives holds
(``times``, ``weekdays``, ``days_of_month``, ``months``, ``years``), each field holds when *any*
of its entries does, and a named set holds when any of its intervals does. Wall-clock fields are
read in the interval's ``location`` (an IANA zone, UTC by default), so daylight saving time moves
them with the local clock.

Nothing here reads a clock: the caller passes the time (the incident event's time, or the
stage's timer time), so a replay decides the same. ``zoneinfo`` reads zone rules once per zone,
which is configuration, not time.

One extension over Alertmanager: a time range whose start is after its end (``22:00`` to
``06:00``) crosses midnight, and its after-midnight part belongs to the day it started on
(weekdays, days of month, months and years are checked for that day), the way workflow time
windows work. Alertmanager refuses such a range; every range it accepts means the same here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator

from stormwatch.schemas.yamlerrors import ErrorCollector, describe

__all__ = [
    "MONTHS",
    "WEEKDAYS",
    "DayRange",
    "NamedTimeIntervalModel",
    "TimeInterval",
    "TimeIntervalModel",
    "TimeIntervalSet",
    "TimeRange",
    "TimeRangeModel",
    "compile_time_interval",
    "parse_clock",
    "parse_day_of_month_range",
    "parse_month_range",
    "parse_weekday_range",
    "parse_year_range",
    "zone",
]

WEEKDAYS: dict[str, int] = {
    "sunday": 0,
    "monday": 1,
    "tuesday": 2,
    "wednesday": 3,
    "thursday": 4,
    "friday": 5,
    "saturday": 6,
}
"""Alertmanager's numbering: Sunday is 0, so ``monday:friday`` is 1..5."""

MONTHS: dict[str, int] = {
    "january": 1,
    "february": 2,
    "march": 3,
    "april": 4,
    "may": 5,
    "june": 6,
    "july": 7,
    "august": 8,
    "september": 9,
    "october": 10,
    "november": 11,
    "december": 12,
}

_CLOCK = re.compile(r"(?:([01][0-9]|2[0-3]):([0-5][0-9]))|(24):(00)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------------------------------
# Parsing one entry (each raises ValueError with what is allowed)


@dataclass(frozen=True, slots=True)
class DayRange:
    """An inclusive range ``begin..end`` (weekdays, days of month, months or years)."""

    begin: int
    end: int


def parse_clock(text: str) -> int:
    """``HH:MM`` (00:00 to 24:00) as minutes of the day."""
    m = _CLOCK.fullmatch(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"expected a time of day as HH:MM from 00:00 to 24:00; got {describe(text)}")
    hours, minutes = (m.group(1), m.group(2)) if m.group(1) is not None else (m.group(3), m.group(4))
    return int(hours) * 60 + int(minutes)


def _split(text: str | int, what: str) -> tuple[str, str]:
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"expected a {what} or a range like a:b; got {describe(text)}")
    s = str(text).strip().lower()
    # A leading '-' belongs to a negative day of month, not to the range.
    head, colon, tail = s.partition(":")
    if colon and ":" in tail:
        raise ValueError(f"{text!r}: a range has exactly one ':' (start:end)")
    return (head, tail) if colon else (s, s)


def _int(text: str, original: str | int, what: str) -> int:
    if not re.fullmatch(r"-?[0-9]+", text):
        raise ValueError(f"{original!r}: {text!r} is not a {what}")
    return int(text)


def parse_weekday_range(text: str | int) -> DayRange:
    """``monday``, ``monday:friday`` (case-insensitive); start before end as in Alertmanager."""
    names = ", ".join(WEEKDAYS)
    first, last = _split(text, "weekday")
    ends = []
    for part in (first, last):
        if part not in WEEKDAYS:
            raise ValueError(f"{text!r}: {part!r} is not a weekday; use {names}")
        ends.append(WEEKDAYS[part])
    if ends[0] > ends[1]:
        raise ValueError(
            f"{text!r}: the week starts on sunday, so {first} comes after {last}; write the days on "
            f"both sides of the weekend as two entries (e.g. 'friday:saturday' and 'sunday:monday')"
        )
    return DayRange(ends[0], ends[1])


def parse_day_of_month_range(text: str | int) -> DayRange:
    """``1``, ``1:15``, ``-1`` (last day), ``-7:-1``; like Alertmanager, a negative start needs a
    negative end, and a range that is empty in every month (checked on a 28-day month) is refused."""
    first, last = _split(text, "day of the month")
    begin = _int(first, text, "day of the month")
    end = _int(last, text, "day of the month")
    for value in (begin, end):
        if value == 0 or not -31 <= value <= 31:
            raise ValueError(
                f"{text!r}: {value} is not a day of the month; use 1 to 31, or -1 (the last day) to -31"
            )
    if begin < 0 < end:
        raise ValueError(f"{text!r}: a range that starts counting from the month's end must end so too")
    if (28 + begin if begin < 0 else begin) > (28 + end if end < 0 else end):
        raise ValueError(f"{text!r}: the end day is always before the start day")
    return DayRange(begin, end)


def parse_month_range(text: str | int) -> DayRange:
    """``january``, ``1``, ``january:march``, ``1:3``."""
    first, last = _split(text, "month")
    ends = []
    for part in (first, last):
        if part in MONTHS:
            ends.append(MONTHS[part])
            continue
        if not re.fullmatch(r"[0-9]+", part) or not 1 <= int(part) <= 12:
            raise ValueError(f"{text!r}: {part!r} is not a month; use january to december or 1 to 12")
        ends.append(int(part))
    if ends[0] > ends[1]:
        raise ValueError(
            f"{text!r}: the end month is before the start month; write a range across the new year as "
            f"two entries (e.g. 'november:december' and 'january:february')"
        )
    return DayRange(ends[0], ends[1])


def parse_year_range(text: str | int) -> DayRange:
    """``2025`` or ``2025:2027``."""
    first, last = _split(text, "year")
    begin, end = _int(first, text, "year"), _int(last, text, "year")
    if begin <= 0 or end <= 0:
        raise ValueError(f"{text!r}: years are positive")
    if begin > end:
        raise ValueError(f"{text!r}: the end year is before the start year")
    return DayRange(begin, end)


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ``Local`` is refused (it would depend on the machine)."""
    if name == "Local":
        raise ValueError(
            "location 'Local' would depend on the machine the notifier runs on; use an IANA name like "
            "Europe/Berlin or UTC"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}; use an IANA name like UTC or Europe/Berlin") from None


# --------------------------------------------------------------------------------------------------
# The file format (Alertmanager's keys)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _quoted_clock(value: Any) -> Any:
    """YAML 1.1 reads an unquoted ``17:00`` as the base-60 number 1020; say so instead of
    "expected a string"."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(
            f"got the number {value}: unquoted, YAML reads a time like 17:00 as a base-60 number; "
            "write it in quotes ('17:00')"
        )
    return value


Clock = Annotated[str, BeforeValidator(_quoted_clock)]


class TimeRangeModel(_Model):
    """``{start_time: "09:00", end_time: "17:00"}``; the end is exclusive, ``24:00`` allowed."""

    start_time: Clock
    end_time: Clock

    @field_validator("start_time", "end_time")
    @classmethod
    def _clock(cls, value: str) -> str:
        parse_clock(value)
        return value

    @field_validator("start_time")
    @classmethod
    def _not_end_of_day(cls, value: str) -> str:
        if parse_clock(value) == 24 * 60:
            raise ValueError("24:00 is only an end_time; a range from midnight starts at 00:00")
        return value

    @field_validator("end_time")
    @classmethod
    def _not_empty(cls, value: str, info: ValidationInfo) -> str:
        start = info.data.get("start_time")
        if isinstance(start, str) and parse_clock(start) == parse_clock(value):
            raise ValueError("start_time equals end_time: an empty range (00:00 to 24:00 is the whole day)")
        return value


def _scalar_list(value: Any) -> Any:
    """YAML writes ``[1, 15]`` as numbers; the entries are texts like ``'1:15'`` otherwise."""
    if isinstance(value, list):
        return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return value


_Entries = Annotated[list[str] | None, BeforeValidator(_scalar_list)]


def _each(value: list[str] | None, parse: Any, field: str) -> list[str] | None:
    """Every bad entry at its index, in one pass."""
    if value is None:
        return None
    if not value:
        raise ValueError(f"an empty {field} list matches nothing; leave the key out to allow any")
    errors = ErrorCollector()
    for i, text in enumerate(value):
        try:
            parse(text)
        except ValueError as exc:
            errors.add((i,), str(exc), text)
    errors.raise_if_any(field)
    return value


class TimeIntervalModel(_Model):
    """One interval: every field given must hold (Alertmanager's ``time_interval``)."""

    times: list[TimeRangeModel] | None = Field(default=None, description="Times of day, any of them")
    weekdays: _Entries = Field(default=None, description="e.g. monday:friday, saturday")
    days_of_month: _Entries = Field(default=None, description="e.g. 1:15, -1 (the last day)")
    months: _Entries = Field(default=None, description="e.g. january:march, 12")
    years: _Entries = Field(default=None, description="e.g. 2025:2026")
    location: str = Field(default="UTC", description="IANA time zone of the wall-clock fields")

    @field_validator("times")
    @classmethod
    def _times(cls, value: list[TimeRangeModel] | None) -> list[TimeRangeModel] | None:
        if value is not None and not value:
            raise ValueError("an empty times list matches nothing; leave the key out to allow any time")
        return value

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, value: list[str] | None) -> list[str] | None:
        return _each(value, parse_weekday_range, "weekdays")

    @field_validator("days_of_month")
    @classmethod
    def _days(cls, value: list[str] | None) -> list[str] | None:
        return _each(value, parse_day_of_month_range, "days_of_month")

    @field_validator("months")
    @classmethod
    def _months(cls, value: list[str] | None) -> list[str] | None:
        return _each(value, parse_month_range, "months")

    @field_validator("years")
    @classmethod
    def _years(cls, value: list[str] | None) -> list[str] | None:
        return _each(value, parse_year_range, "years")

    @field_validator("location")
    @classmethod
    def _location(cls, value: str) -> str:
        zone(value)
        return value


class NamedTimeIntervalModel(_Model):
    """A named list of intervals, referenced by routes' mute and active time intervals."""

    name: str = Field(min_length=1, max_length=200)
    time_intervals: list[TimeIntervalModel] = Field(min_length=1)


# --------------------------------------------------------------------------------------------------
# Compiled form


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Minutes of the day ``[start, end)``; ``start > end`` crosses midnight."""

    start: int
    end: int

    @property
    def crosses_midnight(self) -> bool:
        return self.start > self.end


def _days_in_month(day: date) -> int:
    first_next = date(day.year + (day.month == 12), day.month % 12 + 1, 1)
    return (first_next - timedelta(days=1)).day


def _month_day_in(day: date, r: DayRange) -> bool:
    """Alertmanager's rule: negative days count from the month's end; a range that starts after
    the month's last day does not apply; ends are clamped to the month."""
    length = _days_in_month(day)
    begin = length + r.begin + 1 if r.begin < 0 else r.begin
    end = length + r.end + 1 if r.end < 0 else r.end
    if begin > length:
        return False
    begin, end = max(begin, 1), min(end, length)
    return begin <= day.day <= end


@dataclass(frozen=True, slots=True)
class TimeInterval:
    """One compiled interval; ``None`` fields do not constrain."""

    times: tuple[TimeRange, ...] | None
    weekdays: tuple[DayRange, ...] | None
    days_of_month: tuple[DayRange, ...] | None
    months: tuple[DayRange, ...] | None
    years: tuple[DayRange, ...] | None
    location: str = "UTC"

    def _day_holds(self, day: date) -> bool:
        weekday = (day.weekday() + 1) % 7  # Python's Monday=0 to Alertmanager's Sunday=0
        if self.weekdays is not None and not any(r.begin <= weekday <= r.end for r in self.weekdays):
            return False
        if self.days_of_month is not None and not any(_month_day_in(day, r) for r in self.days_of_month):
            return False
        if self.months is not None and not any(r.begin <= day.month <= r.end for r in self.months):
            return False
        return self.years is None or any(r.begin <= day.year <= r.end for r in self.years)

    def contains_ms(self, at_ms: int) -> bool:
        """Whether the instant ``at_ms`` (epoch milliseconds) lies in this interval."""
        local = (_EPOCH + timedelta(milliseconds=at_ms)).astimezone(zone(self.location))
        today = local.date()
        if self.times is None:
            return self._day_holds(today)
        minute = local.hour * 60 + local.minute
        for r in self.times:
            if not r.crosses_midnight:
                if r.start <= minute < r.end and self._day_holds(today):
                    return True
                continue
            if minute >= r.start and self._day_holds(today):
                return True
            if minute < r.end and self._day_holds(today - timedelta(days=1)):
                return True
        return False


@dataclass(frozen=True, slots=True)
class TimeIntervalSet:
    """A named interval list: it holds when any of its intervals does."""

    name: str
    intervals: tuple[TimeInterval, ...]

    def contains_ms(self, at_ms: int) -> bool:
        return any(i.contains_ms(at_ms) for i in self.intervals)


def _ranges(values: list[str] | None, parse: Any) -> tuple[DayRange, ...] | None:
    return None if values is None else tuple(parse(v) for v in values)


def compile_time_interval(model: TimeIntervalModel) -> TimeInterval:
    """The validated model as plain ranges (parsing cannot fail any more)."""
    times = (
        None
        if model.times is None
        else tuple(TimeRange(parse_clock(t.start_time), parse_clock(t.end_time)) for t in model.times)
    )
    return TimeInterval(
        times=times,
        weekdays=_ranges(model.weekdays, parse_weekday_range),
        days_of_month=_ranges(model.days_of_month, parse_day_of_month_range),
        months=_ranges(model.months, parse_month_range),
        years=_ranges(model.years, parse_year_range),
        location=model.location,
    )
