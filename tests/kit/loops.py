"""A stage's transactional loop in a thread of the test, as its `stormwatch` command would run it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from confluent_kafka import Consumer, TopicPartition

from stormwatch.kafka.txloop import TransactionalLoop


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
