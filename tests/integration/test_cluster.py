"""The 3-node loopback cluster: replicated topics with min.insync.replicas=2 and acks=all round trips.

This is the setup the durability claims rest on (an acknowledged record is on at least two
brokers), so it runs against three real KRaft nodes, not one.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from stormwatch.kafka.topics import check_topics, create_topics, topic_specs

pytestmark = pytest.mark.cluster

RECORDS = 300


def test_replicated_topics_and_acks_all_round_trip(cluster_bootstrap: str, settings_factory: Any) -> None:
    settings = settings_factory(cluster_bootstrap, partitions=3, replication_factor=3, min_insync_replicas=2)
    admin = AdminClient({"bootstrap.servers": cluster_bootstrap})
    assert len(admin.list_topics(timeout=10).brokers) == 3

    report = create_topics(settings, timeout_s=30)
    assert report.created == [s.name for s in topic_specs(settings)]
    deadline = time.monotonic() + 20
    while (diffs := check_topics(settings)) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert diffs == []

    topic = settings.topics.incidents
    metadata = admin.list_topics(topic, timeout=10).topics[topic]
    assert len(metadata.partitions) == 3
    for partition in metadata.partitions.values():
        assert sorted(partition.replicas) == [1, 2, 3]
    configs = admin.describe_configs([ConfigResource("topic", topic)])
    entries = next(iter(configs.values())).result(timeout=10)
    assert entries["min.insync.replicas"].value == "2"

    delivered: list[tuple[int, int]] = []
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered.append((msg.partition(), msg.offset()))

    producer = Producer({"bootstrap.servers": cluster_bootstrap, "acks": "all", "enable.idempotence": True})
    sent = {f"key-{i}": f"value-{i}-{uuid.uuid4().hex}".encode() for i in range(RECORDS)}
    for key, value in sent.items():
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    assert errors == [] and len(delivered) == RECORDS

    consumer = Consumer(
        {
            "bootstrap.servers": cluster_bootstrap,
            "group.id": f"test-cluster-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(3)])
    received: dict[str, bytes] = {}
    deadline = time.monotonic() + 30
    try:
        while len(received) < RECORDS and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=1):
                assert msg.error() is None, msg.error()
                received[msg.key().decode()] = msg.value()
    finally:
        consumer.close()
    assert received == sent
