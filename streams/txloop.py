"""Exactly-once consume-transform-produce with Kafka transactions (confluent-kafka).

Both pipeline stages are this loop with a different ``Stage``: every poll batch becomes one
transaction that holds the outputs and the input offsets, so a crash at any point either commits
all of a batch's effects or none of them. Zombie workers are fenced by the consumer group
generation (KIP-447), so each process may use its own transactional id.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from stormwatch.config import Settings

log = logging.getLogger("stormwatch.txloop")


@dataclass(slots=True)
class Output:
    topic: str
    value: bytes | None
    key: bytes | str | None = None
    partition: int | None = None
    headers: list[tuple[str, str | bytes | None]] | None = None


@dataclass(slots=True)
class BatchResult:
    outputs: list[Output] = field(default_factory=list)
    # Offsets to commit (next offset to read) per input (topic, partition); None = after the last consumed.
    offsets: dict[tuple[str, int], int] | None = None


class Stage(Protocol):
    """What a stage plugs into the loop."""

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None: ...

    def on_revoke(self, partitions: list[TopicPartition]) -> None: ...

    def handle(self, messages: list[Message], eof: set[tuple[str, int]]) -> BatchResult: ...

    def idle_work_due(self) -> bool:
        """True when the stage must run a transaction even without input (clock ticks)."""
        ...


def coordinates(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed record; never None for records from consume()."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class TransactionalLoop:
    def __init__(
        self,
        settings: Settings,
        *,
        stage: Stage,
        group_id: str,
        topics: list[str],
        transactional_id: str,
        max_batch: int,
        poll_timeout_s: float = 0.05,
        producer_overrides: dict[str, Any] | None = None,
        consumer_overrides: dict[str, Any] | None = None,
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.stage = stage
        self.topics = topics
        self.max_batch = max_batch
        self.poll_timeout_s = poll_timeout_s
        self.on_commit = on_commit
        self._running = True
        self._assigned: list[TopicPartition] = []
        base = settings.kafka.client_config()
        consumer_conf = {
            **base,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 2000,
            "max.poll.interval.ms": 300000,
            "fetch.wait.max.ms": 50,
            "log_level": 3,
            **(consumer_overrides or {}),
        }
        producer_conf = {
            **base,
            "transactional.id": transactional_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.max.bytes": settings.topics.max_message_bytes + 65536,
            "transaction.timeout.ms": 10000,
            "log_level": 3,
            **(producer_overrides or {}),
        }
        self.consumer = Consumer(consumer_conf)
        self.producer = Producer(producer_conf)

    def stop(self, *_: Any) -> None:
        self._running = False

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stage.on_assign(consumer, partitions)
        consumer.incremental_assign(partitions)
        self._assigned.extend(partitions)

    def _revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.stage.on_revoke(partitions)
        consumer.incremental_unassign(partitions)
        gone = {(p.topic, p.partition) for p in partitions}
        self._assigned = [p for p in self._assigned if (p.topic, p.partition) not in gone]

    def run(self, *, max_seconds: float | None = None) -> None:
        """Run until stopped (SIGTERM/SIGINT) or ``max_seconds`` passed; commits before returning."""
        self.producer.init_transactions(30)
        self.consumer.subscribe(
            self.topics, on_assign=self._assign, on_revoke=self._revoke, on_lost=self._revoke
        )
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            while self._running and (deadline is None or time.monotonic() < deadline):
                messages = self.consumer.consume(self.max_batch, self.poll_timeout_s)
                records: list[Message] = []
                eof: set[tuple[str, int]] = set()
                for msg in messages:
                    err = msg.error()
                    if err is None:
                        records.append(msg)
                    elif err.code() == KafkaError._PARTITION_EOF:
                        topic, partition, _ = coordinates(msg)
                        eof.add((topic, partition))
                    elif err.fatal():
                        raise KafkaException(err)
                    else:
                        log.warning("consumer error: %s", err)
                if not records and not eof and not self.stage.idle_work_due():
                    continue
                self._transact(records, eof)
        finally:
            self.consumer.close()
            self.producer.flush(10)

    def _transact(self, records: list[Message], eof: set[tuple[str, int]]) -> None:
        started = time.monotonic()
        self.producer.begin_transaction()
        try:
            result = self.stage.handle(records, eof)
            for out in result.outputs:
                self._produce(out)
            offsets = self._offsets(records, result)
            if offsets:
                self.producer.send_offsets_to_transaction(
                    offsets, self.consumer.consumer_group_metadata(), 30
                )
            self.producer.commit_transaction(60)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.txn_requires_abort():
                log.warning("aborting transaction after %s; rewinding to the committed offsets", error)
                self.producer.abort_transaction(30)
                self._rewind()
                return
            raise
        if self.on_commit is not None:
            self.on_commit(len(records), time.monotonic() - started)

    def _produce(self, out: Output) -> None:
        while True:
            try:
                if out.partition is None:
                    self.producer.produce(out.topic, out.value, out.key, headers=out.headers)
                else:
                    self.producer.produce(out.topic, out.value, out.key, out.partition, headers=out.headers)
                return
            except BufferError:
                self.producer.poll(0.05)

    def _offsets(self, records: list[Message], result: BatchResult) -> list[TopicPartition]:
        if result.offsets is not None:
            return [TopicPartition(t, p, o) for (t, p), o in result.offsets.items()]
        last: dict[tuple[str, int], int] = {}
        for msg in records:
            topic, partition, offset = coordinates(msg)
            last[(topic, partition)] = offset + 1
        return [TopicPartition(t, p, o) for (t, p), o in last.items()]

    def _rewind(self) -> None:
        """After an abort, re-read everything after the last committed offsets (and rebuild state)."""
        assigned = list(self._assigned)
        if not assigned:
            return
        self.stage.on_revoke(assigned)
        self.stage.on_assign(self.consumer, assigned)
        committed = self.consumer.committed(assigned, timeout=30)
        for tp in committed:
            if tp.offset == OFFSET_INVALID or tp.offset < 0:
                low, _ = self.consumer.get_watermark_offsets(tp, timeout=30)
                tp.offset = low
            self.consumer.seek(tp)
