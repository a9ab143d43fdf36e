"""A transaction that runs out of time (``TRANSACTION_BUDGET_S``), against a real broker.

The loop then commits the parts of its input it handled and seeks each partition back to its first
record not taken, the later transactions' records of the same poll included. The oracle: every
input record reaches the output exactly once (read_committed), in its partition's order, although
most transactions were cut short.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Message

from stormwatch.config import load_settings
from stormwatch.kafka import txloop
from stormwatch.kafka.txloop import BatchResult, Output, TransactionalLoop
from tests.kit.loops import (
    TracksAssignment,
    committed_output,
    copy_topics,
    group_loop,
    produce_numbered,
    running,
)
from tests.kit.waits import wait_for

pytestmark = pytest.mark.kafka

RECORDS = 600


class SlowCopyStage(TracksAssignment):
    """Copies each record to ``out``, keyed by its input partition; each part takes 30 ms, and a
    part is at most ``handle_bytes`` of input (a few records)."""

    handle_bytes = 24

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out

    def handle(self, messages: list[Message], eof: set[tuple[str, int]]) -> BatchResult:
        time.sleep(0.03)
        return BatchResult(outputs=[Output(self.out, m.value(), str(m.partition())) for m in messages])

    def idle_work_due(self) -> bool:
        return False


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[tuple[str, str]]:
    with copy_topics(kafka_bootstrap, f"t.budget.{uuid.uuid4().hex[:10]}", 3) as names:
        yield names


def _order_by_partition(bootstrap: str, topic: str) -> dict[bytes, list[int]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    order: dict[bytes, list[int]] = {}
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline and sum(map(len, order.values())) < RECORDS:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.key() is not None:
                order.setdefault(msg.key() or b"", []).append(int((msg.value() or b"r0")[1:]))
    finally:
        consumer.close()
    return order


def test_transactions_out_of_time_take_part_of_their_input_and_lose_nothing(
    kafka_bootstrap: str, topics: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(txloop, "TRANSACTION_BUDGET_S", 0.05)  # two parts at most per transaction
    cuts: list[int] = []
    read_again = TransactionalLoop._read_again
    monkeypatch.setattr(
        TransactionalLoop,
        "_read_again",
        lambda self, rest: cuts.append(len(rest)) or read_again(self, rest),
    )
    source, out = topics
    settings = load_settings(kafka={"bootstrap_servers": kafka_bootstrap})
    stage = SlowCopyStage(out)
    loop = group_loop(settings, stage, f"budget-{source}", source, "a", max_batch=200)
    with running(loop, 120):
        wait_for("the partitions", lambda: len(stage.assigned) == 3, 60)
        produce_numbered(kafka_bootstrap, source, 0, RECORDS)
        seen = committed_output(kafka_bootstrap, out, RECORDS, 90)
    assert set(seen) == {f"r{i}".encode() for i in range(RECORDS)}, "records lost"
    assert [v for v, n in seen.items() if n > 1] == [], "records written twice"
    assert len(cuts) >= 3, "the budget cut transactions short"
    for numbers in _order_by_partition(kafka_bootstrap, out).values():
        assert numbers == sorted(numbers), "a partition's records out of order"
