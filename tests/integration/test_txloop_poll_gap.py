"""A stage that stops polling for longer than ``kafka.max_poll_interval_ms``, against a real broker.

librdkafka then makes the member leave its group (``_MAX_POLL_EXCEEDED``), its partitions go to
the other worker, and the transaction the slow worker still has in hand carries offsets of a
generation it no longer belongs to. The oracle: every input record reaches the output topic
exactly once (read_committed), and both workers keep running and end up sharing the partitions.
The interval is set to its minimum (10 s, the session timeout) so the gap stays short.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Message

from stormwatch.config import load_settings
from stormwatch.kafka.txloop import BatchResult, TransactionalLoop
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

MAX_POLL_INTERVAL_MS = 10_000
GAP_S = 14.0  # longer than the interval, and than the session timeout: the member is gone
RUN_S = 150


class StallingCopyStage(CopyStage):
    """A copy whose first batch after ``stall`` is set waits ``GAP_S`` between reading it and
    handing its outputs back (a stage stuck in its own work)."""

    def __init__(self, out: str) -> None:
        super().__init__(out)
        self.stall = threading.Event()
        self.stalled = threading.Event()

    def handle(self, messages: list[Message], eof: set[tuple[str, int]]) -> BatchResult:
        if messages and self.stall.is_set():
            self.stall.clear()
            time.sleep(GAP_S)
            self.stalled.set()
        return super().handle(messages, eof)


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[tuple[str, str]]:
    with copy_topics(kafka_bootstrap, f"t.pollgap.{uuid.uuid4().hex[:10]}", 2) as names:
        yield names


def test_a_worker_that_stops_polling_rejoins_and_nothing_lands_twice(
    kafka_bootstrap: str, topics: tuple[str, str]
) -> None:
    source, out = topics
    settings = load_settings(
        kafka={"bootstrap_servers": kafka_bootstrap, "max_poll_interval_ms": MAX_POLL_INTERVAL_MS}
    )
    stages = {name: StallingCopyStage(out) for name in ("a", "b")}

    def loop(name: str) -> TransactionalLoop:
        return group_loop(settings, stages[name], f"pollgap-{source}", source, name, max_batch=50)

    a, b = stages["a"], stages["b"]
    with running(loop("a"), RUN_S), running(loop("b"), RUN_S):
        wait_for("one partition each", lambda: len(a.assigned) == 1 and len(b.assigned) == 1, 60)
        produce_numbered(kafka_bootstrap, source, 0, 200)
        wait_for(
            "the first records copied",
            lambda: len(committed_output(kafka_bootstrap, out, 200, 5)) >= 200,
            60,
        )
        a.stall.set()
        produce_numbered(kafka_bootstrap, source, 200, 200)
        # While a sits in its batch, the coordinator gives its partition to b.
        wait_for("b to own both partitions", lambda: len(b.assigned) == 2, 60)
        wait_for("a to come back from its gap", a.stalled.is_set, 60)
        produce_numbered(kafka_bootstrap, source, 400, 200)
        wait_for("a to rejoin and get a partition back", lambda: len(a.assigned) == 1, 60)
        produce_numbered(kafka_bootstrap, source, 600, 200)
        seen = committed_output(kafka_bootstrap, out, 800, 60)
    assert set(seen) == {f"r{i}".encode() for i in range(800)}, "records lost"
    assert [v for v, n in seen.items() if n > 1] == [], "records written twice"
