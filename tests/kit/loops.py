"""A stage's transactional loop in a thread of the test, as its `stormwatch` command would run it,
and the topics and records such a test gives it and reads back."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from stormwatch.config import Settings
from stormwatch.kafka.txloop import BatchResult, Output, Stage, TransactionalLoop
from tests.kit.waits import wait_for


def group_loop(
    settings: Settings, stage: Stage, group: str, topic: str, instance: str, **kwargs: Any
) -> TransactionalLoop:
    """A loop of the group ``group``, reading ``topic``, as worker ``instance`` of it."""
    return TransactionalLoop(
        settings,
        stage=stage,
        group_id=group,
        topics=[topic],
        transactional_id=f"{group}-{instance}",
        **{"lag_interval_s": 0, **kwargs},
    )


@contextlib.contextmanager
def running(loop: TransactionalLoop, max_seconds: float = 300) -> Iterator[TransactionalLoop]:
    """Run ``loop`` in a thread for the ``with`` block, then stop it; an exception of the loop is
    raised in the test (after the block), so a crashed stage fails the test that ran it."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            loop.run(max_seconds=max_seconds)
        except BaseException as exc:  # re-raised in the test thread below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.stop()
        thread.join(30)
    if errors:
        raise errors[0]


class TracksAssignment:
    """A test stage's bookkeeping of the (topic, partition)s its loop owns right now."""

    def __init__(self) -> None:
        self.assigned: set[tuple[str, int]] = set()

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned |= {(tp.topic, tp.partition) for tp in partitions}

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        self.assigned -= {(tp.topic, tp.partition) for tp in partitions}


class CopyStage(TracksAssignment):
    """Copies each input record to ``out`` with its key; no idle work."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out

    def handle(self, messages: list[Message], eof: set[tuple[str, int]]) -> BatchResult:
        return BatchResult(outputs=[Output(self.out, m.value(), m.key()) for m in messages])

    def idle_work_due(self) -> bool:
        return False


def produce_numbered(bootstrap: str, topic: str, first: int, count: int) -> None:
    """Records r<first> .. r<first+count-1>, keyed by their number."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(first, first + count):
        producer.produce(topic, f"r{i}".encode(), key=str(i).encode())
    assert producer.flush(30) == 0


def committed_output(bootstrap: str, topic: str, expected: int, timeout_s: float) -> Counter[bytes]:
    """How many times each value is in ``topic`` for a read_committed reader (waits for ``expected``)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    seen: Counter[bytes] = Counter()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and sum(seen.values()) < expected:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                seen[msg.value()] += 1
        end = time.monotonic() + 2  # anything written twice would follow soon after
        while time.monotonic() < end:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                seen[msg.value()] += 1
    finally:
        consumer.close()
    return seen


@contextlib.contextmanager
def copy_topics(bootstrap: str, base: str, in_partitions: int) -> Iterator[tuple[str, str]]:
    """``base``.in with ``in_partitions`` partitions and ``base``.out with one, deleted afterwards."""
    names = (f"{base}.in", f"{base}.out")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics(
        [NewTopic(names[0], in_partitions, 1), NewTopic(names[1], 1, 1)]
    ).values():
        future.result(30)
    wait_for("the topics", lambda: set(names) <= set(admin.list_topics(timeout=5).topics), 20)
    try:
        yield names
    finally:
        admin.delete_topics(list(names))
