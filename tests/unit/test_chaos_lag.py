"""The chaos run's lag probe: a restarted broker that has not loaded a group's offsets yet is no
reading, not a lag of every record since the start (hour run 4 reported 477,504)."""

from __future__ import annotations

from stormwatch.bench.chaos import group_lag


def test_lag_is_end_minus_committed_and_a_partition_never_committed_counts_from_its_start() -> None:
    seen: set[int] = set()
    assert group_lag({0: 90, 1: -1001}, {0: 100, 1: 7}, seen) == 17
    assert seen == {0}


def test_a_committed_offset_that_disappears_is_no_reading_until_it_is_back() -> None:
    seen: set[int] = set()
    assert group_lag({0: 90, 1: 5}, {0: 100, 1: 7}, seen) == 12
    assert group_lag({0: -1001, 1: 5}, {0: 120, 1: 7}, seen) == -1
    assert group_lag({0: 118, 1: 7}, {0: 120, 1: 7}, seen) == 2
