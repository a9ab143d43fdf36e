"""A real partition of a 3-node Kafka: each broker in its own network namespace behind the switch.

The brokers run with ``STORMWATCH_KAFKA_NETNS_PREFIX`` (deploy/kafka/local-kafka.sh), each in its
own host of deploy/faults/netswitch.py, so brokers reach each other, and this test (in the root
namespace) reaches them, only through the switch. One broker that leads partitions is isolated
from everyone (the other brokers and the clients here): the two others must fence it, take over
its partitions and keep serving acks=all writes (min.insync.replicas 2) with nothing lost or
duplicated; after the heal every replica is back in sync. A smoke test of the switch under Kafka,
not yet the issue's full oracle (the pipeline's audit log), which the partition tests will add.
Needs root and network namespaces (skipped with the reason otherwise).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # re-exported, not in __all__

from tests.kit.kafka import ScriptKafka, wait_for_brokers, wait_fully_replicated
from tests.kit.netfaults import NetSwitch, skip_reason
from tests.kit.paths import ROOT
from tests.kit.ports import worker_dir, worker_port
from tests.kit.waits import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.faults, pytest.mark.slow, pytest.mark.netns]

PORT = worker_port(36092)
"""Brokers on 36092-36094, controllers on 36192-36194 (each in its own namespace)."""
TOPIC = "netns-smoke"
PER_PHASE = 300


@pytest.fixture(scope="module")
def netns_cluster() -> Iterator[tuple[ScriptKafka, NetSwitch]]:
    if (reason := skip_reason()) is not None:
        pytest.skip(reason)
    servers = {f"b{i}": [PORT + i - 1, PORT + 100 + i - 1] for i in (1, 2, 3)}
    net = NetSwitch(list(servers), servers).start()
    kafka = ScriptKafka(3, PORT, worker_dir(ROOT / "var" / "kafka" / "netns-smoke"))
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("STORMWATCH_KAFKA_NETNS_PREFIX", net.ns_prefix + "b")
            kafka.fresh_start()
            yield kafka, net
    finally:
        kafka.destroy()
        net.stop()


def _produce(bootstrap: str, keys: list[str]) -> None:
    """acks=all, idempotent; fails the test unless every record is acknowledged."""
    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err)

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "delivery.timeout.ms": 120000,
        }
    )
    for key in keys:
        producer.produce(TOPIC, key.encode(), key=key.encode(), on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(150) == 0, "records still undelivered after 150 s"
    assert not failures, f"{len(failures)} records failed: {failures[:3]}"


def _consume_all(bootstrap: str, expected: int) -> list[str]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"netns-smoke-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([TOPIC])
    keys: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while len(keys) < expected and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None:
                continue
            keys.append(bytes(msg.key() or b"").decode())
        end = time.monotonic() + 3  # anything beyond ``expected`` would be a duplicate
        while time.monotonic() < end:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                keys.append(bytes(msg.key() or b"").decode())
    finally:
        consumer.close()
    return keys


def _leader_of_partition_0(bootstrap: str) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    return int(admin.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions[0].leader)


def test_an_isolated_leader_is_fenced_and_the_majority_keeps_serving(
    netns_cluster: tuple[ScriptKafka, NetSwitch],
) -> None:
    kafka, net = netns_cluster
    bootstrap = kafka.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    topic = NewTopic(TOPIC, num_partitions=3, replication_factor=3, config={"min.insync.replicas": "2"})
    admin.create_topics([topic])[TOPIC].result(timeout=30)
    wait_fully_replicated(bootstrap)

    before = [f"before-{i}" for i in range(PER_PHASE)]
    _produce(bootstrap, before)
    leader = _leader_of_partition_0(bootstrap)
    victim = f"b{leader}"

    net.isolate(victim)
    assert all(row["state"] == "down" for row in net.status()["links"] if victim in (row["a"], row["b"]))
    during = [f"during-{i}" for i in range(PER_PHASE)]
    _produce(bootstrap, during)  # the two others fence the victim and take over its partitions
    moved = wait_for(
        f"partition 0 led by a broker other than {leader}",
        lambda: (lead := _leader_of_partition_0(bootstrap)) != leader and lead,
        60,
        interval_s=1.0,
    )
    keys = _consume_all(bootstrap, 2 * PER_PHASE)
    assert sorted(keys) == sorted(before + during), "lost or duplicated records while a leader was isolated"
    cut = net.link(victim, "root")
    assert cut["connections_refused"] + cut["connections_reset"] > 0

    net.heal()
    wait_for_brokers(bootstrap, 3, 120)
    wait_fully_replicated(bootstrap, 180)  # the victim caught up: every replica back in sync
    after = [f"after-{i}" for i in range(PER_PHASE)]
    _produce(bootstrap, after)
    keys = _consume_all(bootstrap, 3 * PER_PHASE)
    assert sorted(keys) == sorted(before + during + after)
    assert moved != leader
