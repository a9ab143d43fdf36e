"""The chaos run's lag probe: a restarted broker that has not loaded a group's offsets yet is no
reading, not a lag of every record since the start (hour run 4 reported 477,504)."""

from __future__ import annotations

from types import SimpleNamespace

from stormwatch.bench.chaos import Run, group_lag


def test_lag_is_end_minus_committed_and_a_partition_never_committed_counts_from_its_start() -> None:
    seen: set[int] = set()
    assert group_lag({0: 90, 1: -1001}, {0: 100, 1: 7}, seen) == 17
    assert seen == {0}


def test_a_committed_offset_that_disappears_is_no_reading_until_it_is_back() -> None:
    seen: set[int] = set()
    assert group_lag({0: 90, 1: 5}, {0: 100, 1: 7}, seen) == 12
    assert group_lag({0: -1001, 1: 5}, {0: 120, 1: 7}, seen) == -1
    assert group_lag({0: 118, 1: 7}, {0: 120, 1: 7}, seen) == 2


class _Env:
    """The probes of a run whose notifier group's client lost its coordinator."""

    def __init__(self) -> None:
        self.topics = SimpleNamespace(raw="raw", correlator_input="in", linker_input="li", incidents="inc")
        self.ingest_group, self.correlator_group = "g-ingest", "g-correlator"
        self.forgotten: list[str] = []

    def committed(self, group: str, topic: str) -> dict[int, int]:
        if group == "stormwatch-notify-inc" and group not in self.forgotten:
            raise RuntimeError("KafkaError{code=_TIMED_OUT}")
        return {0: 10}

    def end_offsets(self, topic: str) -> dict[int, int]:
        return {0: 11}

    def forget_monitor(self, group: str) -> None:
        self.forgotten.append(group)


def test_a_failed_probe_is_no_reading_and_the_next_one_uses_a_new_client() -> None:
    env = _Env()
    run = SimpleNamespace(env=env, committed_seen={})
    assert Run.lags(run)["notifier"] == -1
    assert env.forgotten == ["stormwatch-notify-inc"]
    assert Run.lags(run) == {"ingest": 1, "correlator": 1, "linker": 1, "notifier": 1, "agent": 1}
