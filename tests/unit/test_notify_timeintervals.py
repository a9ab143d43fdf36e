"""Alertmanager time intervals: weekdays, times (across midnight too), days, months, years, zones."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from stormwatch.agents.core.timeintervals import (
    TimeIntervalModel,
    TimeIntervalSet,
    compile_time_interval,
    parse_day_of_month_range,
    parse_month_range,
    parse_weekday_range,
)
from stormwatch.schemas.common import ms_from_dt


def interval(**fields: object) -> TimeIntervalSet:
    return TimeIntervalSet("t", (compile_time_interval(TimeIntervalModel.model_validate(fields)),))


def at(text: str) -> int:
    """``2025-01-06 09:30`` in UTC as epoch ms (2025-01-06 is a Monday)."""
    return ms_from_dt(datetime.fromisoformat(text).replace(tzinfo=UTC))


@pytest.mark.parametrize(
    ("when", "inside"),
    [
        ("2025-01-05 12:00", False),  # Sunday
        ("2025-01-06 00:00", True),  # Monday, first minute
        ("2025-01-08 12:00", True),  # Wednesday
        ("2025-01-10 23:59", True),  # Friday, last minute
        ("2025-01-11 00:00", False),  # Saturday
    ],
)
def test_a_weekday_range_is_inclusive_and_case_insensitive(when: str, inside: bool) -> None:
    assert interval(weekdays=["Monday:FRIDAY"]).contains_ms(at(when)) is inside


@pytest.mark.parametrize(
    ("when", "inside"),
    [
        ("2025-01-06 08:59", False),
        ("2025-01-06 09:00", True),  # start inclusive
        ("2025-01-06 16:59", True),
        ("2025-01-06 17:00", False),  # end exclusive
        ("2025-01-06 23:59", True),  # the second range ends at 24:00
    ],
)
def test_times_are_any_of_their_ranges_with_an_exclusive_end(when: str, inside: bool) -> None:
    times = [{"start_time": "09:00", "end_time": "17:00"}, {"start_time": "23:00", "end_time": "24:00"}]
    assert interval(times=times).contains_ms(at(when)) is inside


@pytest.mark.parametrize(
    ("when", "inside"),
    [
        ("2025-01-10 21:59", False),  # Friday before the start
        ("2025-01-10 22:00", True),  # Friday night
        ("2025-01-11 05:59", True),  # Saturday early: still Friday's night
        ("2025-01-11 06:00", False),
        ("2025-01-11 23:00", False),  # Saturday night is not a Friday night
        ("2025-01-10 02:00", False),  # Friday early belongs to Thursday's night
    ],
)
def test_a_range_across_midnight_belongs_to_the_day_it_starts(when: str, inside: bool) -> None:
    night = interval(times=[{"start_time": "22:00", "end_time": "06:00"}], weekdays=["friday"])
    assert night.contains_ms(at(when)) is inside


def test_wall_clock_fields_are_read_in_the_location_with_daylight_saving() -> None:
    office = interval(
        times=[{"start_time": "09:00", "end_time": "17:00"}],
        weekdays=["monday:friday"],
        location="Europe/Berlin",
    )
    assert office.contains_ms(at("2025-01-06 08:30"))  # 09:30 CET
    assert not office.contains_ms(at("2025-01-06 16:30"))  # 17:30 CET
    assert office.contains_ms(at("2025-07-07 07:30"))  # 09:30 CEST
    assert not office.contains_ms(at("2025-07-07 15:30"))  # 17:30 CEST
    assert not office.contains_ms(at("2025-01-05 23:30"))  # Monday 00:30 in Berlin, but before 09:00
    # Sunday 23:30 UTC is Monday in Berlin: the weekday is the local one.
    monday = interval(weekdays=["monday"], location="Europe/Berlin")
    assert monday.contains_ms(at("2025-01-05 23:30"))
    assert not interval(weekdays=["monday"]).contains_ms(at("2025-01-05 23:30"))


@pytest.mark.parametrize(
    ("days", "when", "inside"),
    [
        (["-1"], "2024-02-29 12:00", True),  # leap year's last day
        (["-1"], "2025-02-28 12:00", True),
        (["-1"], "2025-02-27 12:00", False),
        (["-7:-1"], "2025-01-25 00:00", True),
        (["-7:-1"], "2025-01-24 23:59", False),
        (["25:31"], "2025-02-28 12:00", True),  # clamped to the month
        (["30:31"], "2025-02-28 12:00", False),  # starts after February ends
        ([1, "15"], "2025-03-15 01:00", True),  # YAML numbers are entries too
        ([1, "15"], "2025-03-14 01:00", False),
    ],
)
def test_days_of_month_count_from_the_end_when_negative(days: list[object], when: str, inside: bool) -> None:
    assert interval(days_of_month=days).contains_ms(at(when)) is inside


def test_months_years_and_every_field_together() -> None:
    winter = interval(months=["december", "1:february"], years=["2025:2026"])
    assert winter.contains_ms(at("2025-01-15 00:00"))
    assert winter.contains_ms(at("2026-12-31 23:59"))
    assert not winter.contains_ms(at("2024-12-31 23:59"))  # year outside
    assert not winter.contains_ms(at("2025-03-01 00:00"))  # month outside
    assert interval().contains_ms(at("2025-03-01 00:00"))  # no field: always


def test_a_named_set_holds_when_any_interval_does() -> None:
    weekend = compile_time_interval(TimeIntervalModel.model_validate({"weekdays": ["saturday", "sunday"]}))
    nights = compile_time_interval(
        TimeIntervalModel.model_validate({"times": [{"start_time": "20:00", "end_time": "08:00"}]})
    )
    off = TimeIntervalSet("off", (weekend, nights))
    assert off.contains_ms(at("2025-01-11 12:00"))  # Saturday noon
    assert off.contains_ms(at("2025-01-08 21:00"))  # Wednesday evening
    assert not off.contains_ms(at("2025-01-08 12:00"))


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (parse_weekday_range, "friday:monday", "the week starts on sunday"),
        (parse_weekday_range, "funday", "is not a weekday"),
        (parse_weekday_range, "a:b:c", "exactly one ':'"),
        (parse_day_of_month_range, "0", "is not a day of the month"),
        (parse_day_of_month_range, "-1:5", "must end so too"),
        (parse_day_of_month_range, "20:10", "always before the start day"),
        (parse_month_range, "13", "is not a month"),
        (parse_month_range, "december:january", "across the new year as two entries"),
    ],
)
def test_bad_entries_say_what_is_allowed(parse: object, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(text)  # type: ignore[operator]


def test_every_bad_entry_of_an_interval_is_reported_at_its_index() -> None:
    with pytest.raises(ValidationError) as info:
        TimeIntervalModel.model_validate(
            {
                "times": [
                    {"start_time": "09:00", "end_time": "09:00"},
                    {"start_time": "24:00", "end_time": "01:00"},
                ],
                "weekdays": ["monday", "moonday", "sunday:saturday", "saturday:sunday"],
                "years": ["2026:2025"],
                "months": [],
                "location": "Local",
            }
        )
    found = {
        (".".join(map(str, e["loc"])), e["msg"].removeprefix("Value error, ")) for e in info.value.errors()
    }
    locs = {loc for loc, _ in found}
    assert locs == {
        "times.0.end_time",
        "times.1.start_time",
        "weekdays.1",
        "weekdays.3",
        "years.0",
        "months",
        "location",
    }
    assert any("the machine" in msg for loc, msg in found if loc == "location")


def test_an_unquoted_time_read_as_a_number_gets_a_hint() -> None:
    with pytest.raises(ValidationError, match="write it in quotes"):
        TimeIntervalModel.model_validate({"times": [{"start_time": 1020, "end_time": "18:00"}]})
