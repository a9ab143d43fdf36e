"""A producer whose clock runs ahead (issue #17): ingest reads its records, yet its ticks never
move a correlator partition's clock further ahead of the wall clock than ``ingest.max_future_ms``;
the records are counted and their alerts still go to the correlator (no broker)."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
from confluent_kafka import TopicPartition
from prometheus_client import REGISTRY

from stormwatch.config import Settings
from stormwatch.kafka.txloop import Output
from stormwatch.metrics import pipeline_metrics
from stormwatch.streams.core import wire
from stormwatch.streams.core.rules import parse_rules
from stormwatch.streams.ingest import IngestStage
from tests.kit.messages import FakeMessage, ticked_watermarks

NOW = 1_800_000_000_000
TEN_MINUTES = 600_000


class _Consumer:
    """What the stage asks of its consumer: the raw topic's partition count (``on_assign``), and
    whether a partition is read to its end (never, here: the end-of-partition event says so)."""

    def list_topics(self, topic: str, timeout: float) -> SimpleNamespace:
        return SimpleNamespace(topics={topic: SimpleNamespace(partitions={0: None})})

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, 0) for tp in partitions]

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool) -> tuple[int, int]:
        return 0, 100


def _ahead() -> float:
    return REGISTRY.get_sample_value("stormwatch_raw_records_ahead_total") or 0.0


def _stage(max_future_ms: int) -> IngestStage:
    settings = Settings.model_validate({"ingest": {"max_future_ms": max_future_ms}})
    stage = IngestStage(
        settings,
        parse_rules("{}"),
        correlator_partitions=1,
        metrics=pipeline_metrics(),
        wall_clock_ms=lambda: NOW,
    )
    raw = settings.topics.raw
    stage.on_assign(_Consumer(), [TopicPartition(raw, 0)])  # type: ignore[arg-type]
    return stage


def _read(stage: IngestStage, stamped_ms: int, *, caught_up: bool) -> list[Output]:
    raw = stage.topics.raw
    push = orjson.dumps([{"labels": {"alertname": "DiskFull", "instance": "db-1"}}])
    message = FakeMessage(raw, push, partition=0, offset=7, timestamp_ms=stamped_ms)
    eof = {(raw, 0)} if caught_up else set()
    return stage.handle([message], eof).outputs  # type: ignore[arg-type]


def test_records_stamped_ten_minutes_ahead_do_not_move_the_clock_ahead() -> None:
    for caught_up in (False, True):
        before = _ahead()
        outputs = _read(_stage(max_future_ms=0), NOW + TEN_MINUTES, caught_up=caught_up)
        assert ticked_watermarks(outputs) == [NOW]
        alerts = [o for o in outputs if o.value is not None and wire.decode(o.value)["t"] == wire.ALERTS]
        assert len(alerts) == 1, "the record's alert still goes to the correlator, where it waits"
        assert _ahead() == before + 1


def test_max_future_ms_lets_records_stamped_ahead_lead_the_clock_that_far() -> None:
    before = _ahead()
    assert ticked_watermarks(_read(_stage(max_future_ms=90_000), NOW + 30_000, caught_up=False)) == [
        NOW + 30_000
    ]
    assert _ahead() == before
    assert ticked_watermarks(_read(_stage(max_future_ms=90_000), NOW + TEN_MINUTES, caught_up=False)) == [
        NOW + 90_000
    ]
    assert _ahead() == before + 1


def test_records_stamped_in_the_past_are_not_counted_ahead() -> None:
    before = _ahead()
    assert ticked_watermarks(_read(_stage(max_future_ms=0), NOW - 5_000, caught_up=False)) == [NOW - 5_000]
    assert _ahead() == before
