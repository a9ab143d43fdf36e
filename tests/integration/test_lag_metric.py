"""``stormwatch_consumer_lag{topic,partition}`` against a real broker.

The transactional loop reports, every ``lag_interval_s``, the high watermark minus its position
for each partition it owns: non-zero while a backlog waits, zero once it is consumed, and no
series at all for partitions it no longer owns (revoked, or the loop stopped).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from prometheus_client import REGISTRY, CollectorRegistry, Gauge

from stormwatch.commands.pipeline import build_ingest_loop
from stormwatch.config import Settings, load_settings
from stormwatch.kafka.txloop import BatchResult, TransactionalLoop
from stormwatch.loaders import load_rules
from stormwatch.metrics import pipeline_metrics
from stormwatch.streams.ingest import IngestStage
from tests.kit.loops import TracksAssignment, group_loop, running
from tests.kit.waits import wait_for

pytestmark = pytest.mark.kafka

LAG_INTERVAL_S = 0.2
POLL_S = 0.05  # the waits look at the gauge more often than the loop refreshes it
RUN_S = 120  # no loop of these tests runs longer


class SlowStage(TracksAssignment):
    """Consumes and outputs nothing; sleeps 0.5 s per batch while ``slow`` is set, so a backlog stays."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = threading.Event()
        self.slow.set()
        self.consumed = 0

    def handle(self, messages: list[Message], eof: set[tuple[str, int]]) -> BatchResult:
        if self.slow.is_set() and messages:
            time.sleep(0.5)
        self.consumed += len(messages)
        return BatchResult()

    def idle_work_due(self) -> bool:
        return False


@pytest.fixture
def topic(kafka_bootstrap: str) -> Iterator[str]:
    name = f"t.lag.{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(name, 2, 1)]).values():
        future.result(30)
    wait_for(
        "the topic to appear", lambda: name in admin.list_topics(timeout=5).topics, 20, interval_s=POLL_S
    )
    yield name
    admin.delete_topics([name])


def _produce(bootstrap: str, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(count):
        producer.produce(topic, b"x" * 100, key=str(i).encode())
    assert producer.flush(30) == 0


def _loop(
    settings: Settings, stage: SlowStage, topic: str, instance: str, **kwargs: Any
) -> TransactionalLoop:
    return group_loop(
        settings,
        stage,
        f"lag-test-{topic}",
        topic,
        instance,
        max_batch=100,
        lag_interval_s=LAG_INTERVAL_S,
        **kwargs,
    )


def _lag(topic: str, partition: int, registry: CollectorRegistry = REGISTRY, name: str = "") -> float | None:
    return registry.get_sample_value(
        name or "stormwatch_consumer_lag", {"topic": topic, "partition": str(partition)}
    )


def test_lag_is_reported_for_a_backlog_and_drops_to_zero(kafka_bootstrap: str, topic: str) -> None:
    settings = load_settings(kafka={"bootstrap_servers": kafka_bootstrap})
    _produce(kafka_bootstrap, topic, 3000)
    stage = SlowStage()
    loop = _loop(settings, stage, topic, "a")  # the default gauge: pipeline_metrics().consumer_lag
    assert loop._lag_gauge is pipeline_metrics().consumer_lag
    with running(loop, RUN_S):
        # While the stage is slow (at most 200 records/s), both partitions have a large backlog.
        backlog = wait_for(
            "a non-zero lag on both partitions",
            lambda: all((_lag(topic, p) or 0) > 500 for p in (0, 1)) and [_lag(topic, p) for p in (0, 1)],
            30,
            interval_s=POLL_S,
        )
        assert sum(backlog) <= 3000
        stage.slow.clear()
        wait_for("the backlog to be consumed", lambda: stage.consumed >= 3000, 30, interval_s=POLL_S)
        wait_for(
            "the lag to drop to zero",
            lambda: _lag(topic, 0) == 0 and _lag(topic, 1) == 0,
            10,
            interval_s=POLL_S,
        )
        # New records raise it again only until they are read: still zero once consumed.
        _produce(kafka_bootstrap, topic, 200)
        wait_for("the new records to be consumed", lambda: stage.consumed >= 3200, 30, interval_s=POLL_S)
        wait_for(
            "the lag to return to zero",
            lambda: _lag(topic, 0) == 0 and _lag(topic, 1) == 0,
            10,
            interval_s=POLL_S,
        )
    # A stopped loop owns nothing: its series are gone rather than frozen at their last value.
    assert _lag(topic, 0) is None and _lag(topic, 1) is None


def test_revoked_partitions_lose_their_series(kafka_bootstrap: str, topic: str) -> None:
    settings = load_settings(kafka={"bootstrap_servers": kafka_bootstrap})
    _produce(kafka_bootstrap, topic, 400)
    gauges = []
    for name in ("lag_a", "lag_b"):
        registry = CollectorRegistry()
        gauges.append((registry, Gauge(name, "test lag", ["topic", "partition"], registry=registry)))
    (reg_a, gauge_a), (reg_b, gauge_b) = gauges
    stage_a, stage_b = SlowStage(), SlowStage()
    stage_a.slow.clear()
    stage_b.slow.clear()
    with running(_loop(settings, stage_a, topic, "a", consumer_lag=gauge_a), RUN_S):
        wait_for(
            "a's lag",
            lambda: _lag(topic, 0, reg_a, "lag_a") == 0 and _lag(topic, 1, reg_a, "lag_a") == 0,
            30,
            interval_s=POLL_S,
        )
        with running(_loop(settings, stage_b, topic, "b", consumer_lag=gauge_b), RUN_S):
            # cooperative-sticky moves one partition from a to b
            wait_for(
                "the rebalance",
                lambda: len(stage_a.assigned) == 1 and len(stage_b.assigned) == 1,
                30,
                interval_s=POLL_S,
            )
            (_, kept), (_, moved) = next(iter(stage_a.assigned)), next(iter(stage_b.assigned))
            wait_for(
                "b's lag on its partition",
                lambda: _lag(topic, moved, reg_b, "lag_b") == 0,
                30,
                interval_s=POLL_S,
            )
            assert _lag(topic, moved, reg_a, "lag_a") is None, "a still reports a partition it lost"
            assert _lag(topic, kept, reg_a, "lag_a") == 0
            assert _lag(topic, kept, reg_b, "lag_b") is None


def test_ingest_loop_reports_lag_of_its_inputs(kafka_bootstrap: str, settings: Settings) -> None:
    """The real ingest worker's loop exports the lag of every input partition it owns."""
    metrics = pipeline_metrics()
    stage = IngestStage(settings, load_rules(None), settings.topics.partitions, metrics)
    loop = build_ingest_loop(settings, stage, "lag-test")
    loop.lag_interval_s = LAG_INTERVAL_S
    raw = settings.topics.raw
    _produce(kafka_bootstrap, raw, 300)
    inputs = (raw, settings.topics.commands, settings.topics.mitigation_results)
    partitions = range(settings.topics.partitions)
    with running(loop, RUN_S):
        wait_for(
            "zero lag on every input partition",
            lambda: all(_lag(t, p) == 0 for t in inputs for p in partitions),
            45,
            interval_s=POLL_S,
        )
    assert all(_lag(t, p) is None for t in inputs for p in partitions)
