"""read_changelog against a real broker: the state of the last commits, nothing aborted or open."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # re-exported, not in __all__

from stormwatch.config import Settings
from stormwatch.errors import UserError
from stormwatch.kafka.client import read_changelog, read_changelogs

pytestmark = [pytest.mark.kafka]


@pytest.fixture
def changelog(fresh_settings: Settings) -> str:
    """A compacted two-partition topic named like the test's correlator changelog (deleted after the test)."""
    topic = fresh_settings.topics.correlator_state
    admin = AdminClient({"bootstrap.servers": fresh_settings.kafka.bootstrap_servers})
    spec = NewTopic(topic, num_partitions=2, replication_factor=1, config={"cleanup.policy": "compact"})
    admin.create_topics([spec])[topic].result(30)
    # Created is not yet served: wait until both partitions have a leader that answers offset queries.
    consumer = Consumer(
        {"bootstrap.servers": fresh_settings.kafka.bootstrap_servers, "group.id": "test-changelog-ready"}
    )
    deadline = time.monotonic() + 20
    try:
        for partition in (0, 1):
            while True:
                try:
                    consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
                    break
                except KafkaException:
                    assert time.monotonic() < deadline, f"{topic} partition {partition} has no leader"
                    time.sleep(0.2)
    finally:
        consumer.close()
    return topic


@pytest.fixture
def producer(fresh_settings: Settings) -> Iterator[Producer]:
    p = Producer(
        {
            "bootstrap.servers": fresh_settings.kafka.bootstrap_servers,
            "transactional.id": f"test-changelog-{uuid.uuid4().hex}",
            "linger.ms": 0,
        }
    )
    p.init_transactions(30)
    yield p
    p.flush(10)


Record = tuple[int, str, bytes | None]  # compacted topics refuse keyless records


def transaction(producer: Producer, topic: str, records: list[Record], *, commit: bool = True) -> None:
    producer.begin_transaction()
    for partition, key, value in records:
        producer.produce(topic, value=value, key=key, partition=partition)
    if commit:
        producer.commit_transaction(30)
    else:
        producer.flush(30)  # the records are in the log; only the abort marker keeps them out
        producer.abort_transaction(30)


def test_latest_committed_value_per_key_with_tombstones_and_aborts(
    fresh_settings: Settings, changelog: str, producer: Producer
) -> None:
    transaction(
        producer,
        changelog,
        [(0, "a", b"a1"), (0, "b", b"b1"), (1, "c", b"c1"), (1, "d", b"d1")],
    )
    transaction(producer, changelog, [(0, "a", b"a2"), (0, "b", None), (1, "d", None)])
    transaction(producer, changelog, [(1, "e", b"e1"), (1, "c", b"c2")])
    # Aborted last on both partitions: each ends with an abort marker that is never delivered.
    transaction(
        producer,
        changelog,
        [(0, "a", b"aborted"), (0, "x", b"aborted"), (1, "c", None), (1, "e", b"aborted")],
        commit=False,
    )

    assert read_changelog(fresh_settings, changelog, 0) == {"a": b"a2"}
    assert read_changelog(fresh_settings, changelog, 1) == {"c": b"c2", "e": b"e1"}
    assert read_changelog(fresh_settings, changelog) == {"a": b"a2", "c": b"c2", "e": b"e1"}
    # several partitions in one pass (a correlator's restore), each with its own state
    assert read_changelogs(fresh_settings, changelog, [1, 0]) == {
        0: {"a": b"a2"},
        1: {"c": b"c2", "e": b"e1"},
    }


def test_an_open_transaction_is_neither_shown_nor_waited_for(
    fresh_settings: Settings, changelog: str, producer: Producer
) -> None:
    transaction(producer, changelog, [(0, "a", b"committed")])
    transaction(producer, changelog, [(0, "a", b"open"), (0, "b", b"open")], commit=False)
    producer.begin_transaction()
    producer.produce(changelog, value=b"open", key="a", partition=0)
    producer.flush(30)
    try:
        started = time.monotonic()
        assert read_changelog(fresh_settings, changelog, 0, timeout_s=10) == {"a": b"committed"}
        assert time.monotonic() - started < 8  # stopped at the last stable offset, no timeout
    finally:
        producer.abort_transaction(30)


def test_an_empty_partition_is_an_empty_state(fresh_settings: Settings, changelog: str) -> None:
    assert read_changelog(fresh_settings, changelog, 1) == {}
    assert read_changelog(fresh_settings, changelog) == {}
    assert read_changelogs(fresh_settings, changelog, [0, 1]) == {0: {}, 1: {}}


def test_a_partition_the_topic_lacks_is_a_user_error(fresh_settings: Settings, changelog: str) -> None:
    with pytest.raises(UserError, match=f"topic {changelog} has no partition 2"):
        read_changelog(fresh_settings, changelog, 2)


def test_a_missing_topic_is_a_user_error(fresh_settings: Settings) -> None:
    with pytest.raises(UserError, match="does not exist"):
        read_changelog(fresh_settings, fresh_settings.topics.agent_state, 0)
