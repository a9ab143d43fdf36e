"""An assignment whose consumer alone cannot read the committed offsets, against a real broker.

librdkafka can lose a consumer's group coordinator for good (issue #5511) while a new client reaches
it at once; hour run 14 saw it in a restarted correlator's first assignment. The loop cannot swap
its consumer inside the rebalance callback, so the assignment raises out of it, and the loop
replaces the consumer when poll() hands the exception back. What this relies on from
confluent-kafka (an exception of ``on_assign`` leaves poll(), after the library assigned the
partitions itself) and what the group does with the old member are the broker's and the client's,
so they are tested here for real; only the lost coordinator is simulated (the first consumer's
offset reads time out). The oracle: the new consumer owns every partition and every record is
copied exactly once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from stormwatch.config import load_settings
from stormwatch.kafka import txloop
from stormwatch.kafka.txloop import TransactionalLoop
from tests.kit.loops import (
    CopyStage,
    committed_output,
    copy_topics,
    group_loop,
    produce_numbered,
    running,
)
from tests.kit.waits import wait_for

pytestmark = pytest.mark.kafka

RECORDS = 300


class RestoreTrackingStage(CopyStage):
    """A copy that remembers the consumers it restored partitions for."""

    def __init__(self, out: str) -> None:
        super().__init__(out)
        self.restored_for: list[Consumer] = []

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.restored_for.append(consumer)
        super().on_assign(consumer, partitions)


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[tuple[str, str]]:
    with copy_topics(kafka_bootstrap, f"t.cutoff.{uuid.uuid4().hex[:10]}", 3) as names:
        yield names


def test_an_assignment_its_consumer_cannot_read_offsets_for_gets_a_new_consumer(
    kafka_bootstrap: str, topics: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(txloop, "CONSUMER_PROBE_EVERY_S", 0.5)
    first: list[Consumer] = []
    stable_offsets = TransactionalLoop._stable_offsets

    def first_consumer_cut_off(consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        if not first:
            first.append(consumer)
        if consumer is first[0]:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets"))
        return stable_offsets(consumer, partitions)

    monkeypatch.setattr(TransactionalLoop, "_stable_offsets", staticmethod(first_consumer_cut_off))
    source, out = topics
    produce_numbered(kafka_bootstrap, source, 0, RECORDS)
    settings = load_settings(kafka={"bootstrap_servers": kafka_bootstrap})
    stage = RestoreTrackingStage(out)
    loop = group_loop(settings, stage, f"cutoff-{source}", source, "a", max_batch=100)
    with running(loop, 120):
        wait_for("the new consumer's partitions", lambda: len(stage.assigned) == 3, 60)
        produce_numbered(kafka_bootstrap, source, RECORDS, RECORDS)
        seen = committed_output(kafka_bootstrap, out, 2 * RECORDS, 60)
        assert loop.consumer is not first[0], "the consumer was replaced"
        assert not loop._retired(first[0]), "the old consumer closed"
    assert all(c is not first[0] for c in stage.restored_for), "nothing restored for the cut-off consumer"
    assert set(seen) == {f"r{i}".encode() for i in range(2 * RECORDS)}, "records lost"
    assert [v for v, n in seen.items() if n > 1] == [], "records written twice"
