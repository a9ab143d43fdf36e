"""A correlator restore that reads the changelog before the last committed transaction's records
are readable (a transaction's markers are written after its commit returns; during a broker
outage they wait for the brokers) must not resume from the committed offsets with an older state:
it reads the changelog again until the state has caught up with them (no broker: the changelog
reads and the consumer are stand-ins)."""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition
from prometheus_client import REGISTRY

import stormwatch.kafka.client as client
import stormwatch.streams.correlator as correlator
from stormwatch.config import Settings
from stormwatch.metrics import pipeline_metrics
from stormwatch.schemas.incident import AlertChangeKind
from stormwatch.streams.core import groups, wire
from stormwatch.streams.core.engine import PartitionEngine
from stormwatch.streams.core.rules import parse_rules
from stormwatch.streams.correlator import CorrelatorStage

RULES = parse_rules("{}")


def _changelog(records: int) -> dict[str, bytes]:
    """Partition 0's changelog after ``records`` input records (ticks) were committed."""
    engine = PartitionEngine(RULES, 0)
    for offset in range(records):
        engine.process(wire.encode_ticks({"raw/0": 1_000 * (offset + 1)}, 1), offset)
    out = engine.take_output()
    return {key: value for key, value in out.state.items() if value is not None}


class _Consumer:
    def __init__(self, committed: int) -> None:
        self.offset = committed

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.offset) for tp in partitions]


def _assign(
    monkeypatch: pytest.MonkeyPatch, reads: list[dict[str, bytes]], committed: int
) -> CorrelatorStage:
    left = list(reads)

    def read_changelogs(settings: Settings, topic: str, partitions: list[int]) -> dict[int, dict[str, bytes]]:
        return {p: left.pop(0) if len(left) > 1 else left[0] for p in partitions}

    monkeypatch.setattr(correlator, "read_changelogs", read_changelogs)
    monkeypatch.setattr(client, "RESTORE_RETRY_S", 0.0)
    stage = CorrelatorStage(Settings.model_validate({}), RULES)
    topic = stage.topics.correlator_input
    stage.on_assign(_Consumer(committed), [TopicPartition(topic, 0)])  # type: ignore[arg-type]
    return stage


def test_a_changelog_read_behind_the_committed_offset_is_read_again(monkeypatch: pytest.MonkeyPatch) -> None:
    stale, current = _changelog(5), _changelog(12)
    stage = _assign(monkeypatch, [stale, stale, current], committed=12)
    assert stage.engines[0].processed == 11


def test_a_consistent_changelog_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = [_changelog(12), _changelog(30)]
    stage = _assign(monkeypatch, reads, committed=12)
    assert stage.engines[0].processed == 11


def test_offsets_moved_by_hand_past_the_state_are_followed_after_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client, "RESTORE_CATCH_UP_S", 0.0)
    stage = _assign(monkeypatch, [_changelog(5)], committed=40)
    assert stage.engines[0].processed == 4


def test_revoked_partitions_leave_no_shared_values_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """The times and pending changes shared across alerts were made amid the state that used them:
    kept after that state went, a few thousand of them hold its memory (one or two per arena)."""
    stage = _assign(monkeypatch, [_changelog(3)], committed=3)
    groups.shared_ms(1_700_000_000_000)
    groups.AlertState("fp", {}, {}, "warning", True, 0, 0, None).mark(AlertChangeKind.JOINED, 5)
    assert groups._SHARED_MS and groups._ONE_CHANGE
    stage.on_revoke([TopicPartition(stage.topics.correlator_input, 0)])
    assert not stage.engines and not groups._SHARED_MS and not groups._ONE_CHANGE
    assert groups.shared_ms(1_700_000_000_000) == 1_700_000_000_000  # made again when asked


def test_a_rebuilt_partition_drops_its_old_engine_before_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rewind rebuilds assigned partitions: the old engine goes first, so the new state is not
    built beside it (the two would share memory arenas, kept after the old one went)."""
    stage = _assign(monkeypatch, [_changelog(3)], committed=3)
    old = stage.engines[0]
    seen: list[bool] = []

    def read_changelogs(settings: Settings, topic: str, partitions: list[int]) -> dict[int, dict[str, bytes]]:
        seen.append(0 in stage.engines)
        return {p: _changelog(3) for p in partitions}

    monkeypatch.setattr(correlator, "read_changelogs", read_changelogs)
    stage.on_assign(_Consumer(3), [TopicPartition(stage.topics.correlator_input, 0)])  # type: ignore[arg-type]
    assert seen == [False]
    assert stage.engines[0] is not old and stage.engines[0].processed == 2


def test_a_revoked_partition_is_no_longer_counted_in_the_state_gauges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its new owner reports it: left at their last values here, sums over the workers (the alerts
    held, the open incidents) counted a partition that moved twice."""
    stage = _assign(monkeypatch, [_changelog(3)], committed=3)
    stage.metrics = metrics = pipeline_metrics()
    metrics.active_alerts.labels(partition="0").set(7)
    metrics.open_incidents.labels(partition="0").set(2)
    stage.on_revoke([TopicPartition(stage.topics.correlator_input, 0)])
    for gauge in ("stormwatch_active_alerts", "stormwatch_open_incidents"):
        assert REGISTRY.get_sample_value(gauge, {"partition": "0"}) == 0
