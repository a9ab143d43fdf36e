"""When ingest's ticks say a raw partition is read to its end (no broker).

A caught-up partition's watermark is the wall clock, so claiming it too early moves every
correlator partition's event time past records not yet routed: they arrive late. The transaction
loop handles a poll larger than ``max_batch_bytes`` as several transactions while the consumer's
position already counts the whole poll, so the position alone says "read" one transaction early.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import orjson
from confluent_kafka import TopicPartition

from stormwatch.config import Settings
from stormwatch.streams.core.rules import parse_rules
from stormwatch.streams.ingest import IngestStage
from tests.kit.messages import FakeMessage, ticked_watermarks

NOW = 1_800_000_000_000
RECORDS = 10
T0 = NOW - 600_000  # a backlog: the records are ten minutes old


class _Consumer:
    """A consumer that polled the partition's every record (position at the end, ``RECORDS``)."""

    def __init__(self, position: int = RECORDS) -> None:
        self.at = position

    def list_topics(self, topic: str, timeout: float) -> SimpleNamespace:
        return SimpleNamespace(topics={topic: SimpleNamespace(partitions={0: None})})

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.at) for tp in partitions]

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool) -> tuple[int, int]:
        return 0, RECORDS


def _stage(consumer: _Consumer) -> IngestStage:
    settings = Settings.model_validate({"ingest": {"tick_interval_ms": 10}})
    stage = IngestStage(settings, parse_rules("{}"), correlator_partitions=1, wall_clock_ms=lambda: NOW)
    stage.on_assign(consumer, [TopicPartition(settings.topics.raw, 0)])  # type: ignore[arg-type]
    return stage


def _records(stage: IngestStage, offsets: range) -> list[FakeMessage]:
    push = orjson.dumps([{"labels": {"alertname": "DiskFull", "instance": "db-1"}}])
    return [
        FakeMessage(stage.topics.raw, push, partition=0, offset=o, timestamp_ms=T0 + 1000 * o)
        for o in offsets
    ]


def _handle(stage: IngestStage, messages: list[FakeMessage]) -> list[int]:
    """The watermarks the transaction of ``messages`` ticks."""
    time.sleep(0.011)  # past tick_interval_ms: every transaction ticks
    return ticked_watermarks(stage.handle(messages, set()).outputs)  # type: ignore[arg-type]


def test_a_poll_handled_as_two_transactions_is_caught_up_only_after_the_second() -> None:
    stage = _stage(_Consumer())
    first, second = _records(stage, range(0, 6)), _records(stage, range(6, RECORDS))
    assert _handle(stage, first) == [T0 + 5000], "the last record handled, not the wall clock"
    assert _handle(stage, second) == [NOW]


def test_every_record_handled_at_the_end_of_the_partition_is_caught_up() -> None:
    stage = _stage(_Consumer())
    assert _handle(stage, _records(stage, range(RECORDS))) == [NOW]


def test_after_a_rewind_what_was_handled_before_it_does_not_count() -> None:
    stage = _stage(_Consumer())
    assert _handle(stage, _records(stage, range(RECORDS))) == [NOW]
    # the transaction aborts: the loop revokes, assigns and seeks back to the committed offset 4,
    # then polls 4..9 again and handles them as two transactions
    partition = TopicPartition(stage.topics.raw, 0)
    stage.on_revoke([partition])
    stage.on_assign(_Consumer(), [partition])  # type: ignore[arg-type]
    assert _handle(stage, _records(stage, range(4, 6))) == [T0 + 5000]
    assert _handle(stage, _records(stage, range(6, RECORDS))) == [NOW]


def test_a_partition_assigned_at_its_end_is_caught_up_at_its_end_of_partition_event() -> None:
    stage = _stage(_Consumer())
    raw = stage.topics.raw
    time.sleep(0.011)
    marks = ticked_watermarks(stage.handle([], {(raw, 0)}).outputs)
    assert marks and set(marks) == {NOW}


class _Fetched(_Consumer):
    """At the end of the partition when the EOF event came; ``more`` records fetched since."""

    def __init__(self, more: int) -> None:
        super().__init__()
        self.more = more

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool) -> tuple[int, int]:
        return 0, RECORDS + self.more


def test_an_end_of_partition_event_counts_until_newer_records_are_fetched() -> None:
    """storm-http: ingest handled a batch while the next records waited in the consumer's queue;
    the EOF event of the batch before still said "read" and its tick moved the clock past them."""
    consumer = _Fetched(more=0)
    stage = _stage(consumer)
    raw = stage.topics.raw
    assert _handle(stage, _records(stage, range(RECORDS))) == [NOW]
    time.sleep(0.011)
    assert ticked_watermarks(stage.handle([], {(raw, 0)}).outputs) == [NOW]  # type: ignore[arg-type]
    consumer.more = 3  # fetched, not polled yet
    assert _handle(stage, []) == [T0 + 9000], "the last record handled, not the wall clock"
