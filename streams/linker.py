"""The linker stage (issue #12): one ``LinkerPartition`` per assigned linker-input partition.

Like the correlator, its state lives in a compacted changelog written in the same transaction as
its output (linking commands and marks for the correlator input) and the input offsets, and is
restored on assignment before any input is read. The topology topic is read by a consumer of its
own, outside the group (every partition needs all of it): whole on start, then whatever arrived
before each batch (streams.core.linkpartition says when a record takes effect).
"""

from __future__ import annotations

import base64
import logging
import time
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from stormwatch.config import Settings
from stormwatch.kafka.client import make_consumer, read_changelogs, read_topic, restore_caught_up
from stormwatch.kafka.txloop import BatchResult, Output, coordinates
from stormwatch.metrics import PipelineMetrics
from stormwatch.schemas.dlq import DeadLetter, DeadLetterReason
from stormwatch.schemas.topology import decode_topology_record
from stormwatch.streams.core.linkpartition import LinkerOutput, LinkerPartition, TopologyLog
from stormwatch.streams.core.topology import TopologyConfig

log = logging.getLogger("stormwatch.linker")


class LinkerStage:
    def __init__(
        self,
        settings: Settings,
        config: TopologyConfig,
        correlator_partitions: int,
        linker_partitions: int,
        metrics: PipelineMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.config = config
        self.correlator_partitions = correlator_partitions
        self.linker_partitions = linker_partitions
        self.metrics = metrics
        self.partitions: dict[int, LinkerPartition] = {}
        self.log = TopologyLog()
        self._follower: Consumer | None = None
        self._reported: dict[str, int] = {}

    # ------------------------------------------------------------------ topology

    def _read_topology(self) -> None:
        """The whole topology topic now, then a consumer placed after it to follow it."""
        if self._follower is not None:
            return
        ends: dict[int, int] = {}
        for msg in read_topic(self.settings, self.topics.topology):
            self._take_topology(msg)
            ends[msg.partition() or 0] = (msg.offset() or 0) + 1
        follower = make_consumer(self.settings, None, **{"enable.partition.eof": False})
        follower.assign([TopicPartition(self.topics.topology, 0, ends.get(0, 0))])
        self._follower = follower

    def _follow_topology(self) -> None:
        if self._follower is None:
            return
        while True:
            msg = self._follower.poll(0)
            if msg is None:
                return
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("topology topic: %s", error)
                return
            self._take_topology(msg)

    def _take_topology(self, msg: Message) -> None:
        try:
            update = decode_topology_record(msg.key(), msg.value())
        except ValueError as exc:
            self.log.refused += 1
            log.warning("refused topology record at offset %s: %s", msg.offset(), exc)
            return
        self.log.add(msg.timestamp()[1], update)

    # ------------------------------------------------------------------ assignment

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        mine = sorted(tp.partition for tp in partitions if tp.topic == self.topics.linker_input)
        if not mine:
            return
        started = time.monotonic()
        self._read_topology()

        def restore(todo: list[int]) -> dict[int, int]:
            states = read_changelogs(self.settings, self.topics.linker_state, todo)
            for partition in todo:
                part = LinkerPartition(
                    self.config, partition, self.correlator_partitions, self.linker_partitions, self.log
                )
                part.restore(states.pop(partition))
                self.partitions[partition] = part
            return {p: self.partitions[p].processed for p in todo}

        restore_caught_up(consumer, self.topics.linker_input, mine, restore)
        log.info(
            "restored linker partitions %s in %.2fs: %d linked incidents",
            ",".join(map(str, mine)),
            time.monotonic() - started,
            sum(len(p.linker) for p in self.partitions.values()),
        )

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            if tp.topic == self.topics.linker_input:
                self.partitions.pop(tp.partition, None)
                if self.metrics is not None:
                    self.metrics.record_linker_state(tp.partition, None)

    def idle_work_due(self) -> bool:
        return False

    # ------------------------------------------------------------------ batches

    def handle(self, messages: list[Message], eof: set[tuple[str, int]]) -> BatchResult:
        self._follow_topology()
        touched: set[int] = set()
        for msg in messages:
            _, partition, offset = coordinates(msg)
            part = self.partitions.get(partition)
            if part is None:
                continue
            part.process(msg.value() or b"", offset)
            touched.add(partition)
        outputs: list[Output] = []
        offsets: dict[tuple[str, int], int] = {}
        for partition in sorted(touched):
            part = self.partitions[partition]
            part.release()
            self._write(partition, part.take_output(), outputs)
            offsets[(self.topics.linker_input, partition)] = part.processed + 1
        self._report()
        return BatchResult(outputs, offsets)

    def _write(self, partition: int, out: LinkerOutput, outputs: list[Output]) -> None:
        t = self.topics
        # Commands before marks: a correlator partition that reads a mark has read what it covers.
        outputs.extend(Output(t.correlator_input, value, key) for key, value in out.commands)
        outputs.extend(Output(t.correlator_input, value, None, p) for p, value in out.marks)
        for offset, why, value in out.bad_records:
            dead = DeadLetter(
                reason=DeadLetterReason.UNKNOWN_FORMAT,
                detail=why,
                original=base64.b64encode(value).decode(),
                original_size=len(value),
                source_topic=t.linker_input,
                source_partition=partition,
                source_offset=offset,
                at=datetime.now(UTC),
            )
            outputs.append(Output(t.dlq, dead.to_bytes(), f"{t.linker_input}/{partition}/{offset}"))
        for key, state in out.state.items():
            outputs.append(Output(t.linker_state, state, key, partition))

    def _report(self) -> None:
        if self.metrics is None:
            return
        totals: dict[str, int] = {}
        for part in self.partitions.values():
            for name, value in part.stats.items():
                totals[name] = totals.get(name, 0) + value
        self.metrics.record_linker(totals, self._reported)
        self._reported = totals
        for partition, part in self.partitions.items():
            self.metrics.record_linker_state(
                partition, len(part.linker), part.linker.groups_held, len(part.buffer)
            )
