"""The stateless first stage: raw records in, routed alert batches, dead letters and ticks out.

It also forwards operator commands and mitigation results to the correlator partition that owns
their incident, so the correlator reads a single ordered log (see docs/architecture.md). Ticks go
only to the partitions that wait on time (streams.core.clock): it follows the correlator
partitions' clock demands on the compacted clock topic with a consumer of its own.
"""

from __future__ import annotations

import base64
import logging
import time
import zlib
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from stormwatch.config import Settings
from stormwatch.kafka.client import make_consumer
from stormwatch.kafka.txloop import BatchResult, Output, coordinates
from stormwatch.metrics import PipelineMetrics
from stormwatch.schemas.adapters import ParseLimits
from stormwatch.schemas.commands import CommandResult, OperatorAction, OperatorCommand
from stormwatch.schemas.dlq import DeadLetter, DeadLetterReason
from stormwatch.schemas.incident_id import IncidentId
from stormwatch.streams.core import wire
from stormwatch.streams.core.batching import AlertBatcher
from stormwatch.streams.core.clock import TickPolicy, raw_watermark
from stormwatch.streams.core.rules import RulesConfig

log = logging.getLogger("stormwatch.ingest")

DEMAND_POLL_S = 0.05
"""The loop waits at most this long for input, so clock demands are read this promptly."""

INGEST_HANDLE_BYTES = 512 * 1024
"""Ingest's part of a transaction's input per ``handle`` call: a quarter of the loop's
``HANDLE_BYTES``. The pymalloc arenas a catch-up leaves ingest follow the part size (offline, a
60 s backlog kept +10 arenas with 2 MiB parts and +5 with 1 MiB at the same CPU). Under faults
for an hour its arenas went 37 -> 45 at a broker crash with 2 MiB parts (run 14) and 38 -> 38
with 512 KiB (run 15; docs/performance.md, "Memory after faults"). Ingest's steady transactions
are far smaller, so only a catch-up is cut finer."""


class IngestStage:
    """Turns raw records into correlator input; one instance per worker process."""

    handle_bytes = INGEST_HANDLE_BYTES  # a catch-up's batches in parts (stormwatch.kafka.txloop)

    def __init__(
        self,
        settings: Settings,
        rules: RulesConfig,
        correlator_partitions: int,
        metrics: PipelineMetrics | None = None,
        wall_clock_ms: Any = None,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        # with ingest.notes_key_file, the gateway's signed notes are read without re-checking
        self.batcher = AlertBatcher(rules, settings.ingest.notes_keys())
        self.limits = ParseLimits.from_settings(settings.ingest)
        self.partitions = correlator_partitions
        self.metrics = metrics
        self._wall = wall_clock_ms or (lambda: int(time.time() * 1000))
        self.tick_interval_ms = settings.ingest.tick_interval_ms
        self.max_future_ms = settings.ingest.max_future_ms
        self._ahead = _AheadRecords()
        self._raw_owned: dict[int, int] = {}  # raw partition -> max record timestamp seen (-1: none)
        self._at_eof: set[int] = set()
        self._handled: dict[int, int] = {}  # raw partition -> offset after the last record handled
        self._raw_partition_count = 0
        self._last_tick = 0.0
        self._consumer: Consumer | None = None
        ingest = settings.ingest
        self.policy = TickPolicy(
            correlator_partitions,
            hot_ms=rules.allowed_lateness_ms + 2 * self.tick_interval_ms,
            heartbeat_ms=ingest.heartbeat_interval_ms,
            on_demand=ingest.tick_on_demand,
        )
        self._demands: Consumer | None = None  # follows topics.correlator_clock
        self._newest = 0  # the newest raw record timestamp seen, bounded as ticks are (see _raw_record)
        self._bad_demands = 0

    # -- loop hooks

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._consumer = consumer
        for tp in partitions:
            if tp.topic == self.topics.raw:
                self._raw_owned.setdefault(tp.partition, -1)
        if not self._raw_partition_count:
            md = consumer.list_topics(self.topics.raw, timeout=10)
            self._raw_partition_count = len(md.topics[self.topics.raw].partitions)

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            if tp.topic == self.topics.raw:
                self._raw_owned.pop(tp.partition, None)
                self._at_eof.discard(tp.partition)
                self._handled.pop(tp.partition, None)

    def idle_work_due(self) -> bool:
        if not self._raw_owned or (time.monotonic() - self._last_tick) * 1000 < self.tick_interval_ms:
            return False
        self._follow_demands()
        return bool(self.policy.due(self._wall()))

    def idle_work_in(self) -> float:
        """Seconds until the next tick may be due: the loop waits no longer, so ticks keep their
        pace, and at most DEMAND_POLL_S, so new clock demands are seen promptly."""
        self._follow_demands()
        due_ms = self.policy.next_in(self._wall())
        if due_ms is None:
            return DEMAND_POLL_S
        pace = max(0.0, self._last_tick + self.tick_interval_ms / 1000 - time.monotonic())
        return min(max(pace, due_ms / 1000), DEMAND_POLL_S)

    def close(self) -> None:
        if self._demands is not None:
            self._demands.close()
            self._demands = None

    def _follow_demands(self) -> None:
        """Take the clock demands written since the last call (never blocks)."""
        if not self.policy.on_demand:
            return
        consumer = self._demands
        if consumer is None:
            consumer = self._demands = make_consumer(self.settings, None, **{"enable.partition.eof": False})
            consumer.assign([TopicPartition(self.topics.correlator_clock, 0, OFFSET_BEGINNING)])
        for msg in consumer.consume(num_messages=1000, timeout=0):
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.debug("clock demand consumer: %s", err)
                continue
            value = msg.value()
            if value is None:
                continue
            try:
                self.policy.demand(wire.decode_demand(value))
            except ValueError as exc:
                self._bad_demands += 1
                if self._bad_demands == 1:
                    log.warning("ignored a bad record on %s: %s", self.topics.correlator_clock, exc)

    def handle(self, messages: list[Message], eof: set[tuple[str, int]]) -> BatchResult:
        outputs: list[Output] = []
        for msg in messages:
            topic = msg.topic()
            if topic == self.topics.raw:
                self._raw_record(msg, outputs)
            elif topic == self.topics.commands:
                self._command(msg, outputs)
            elif topic == self.topics.mitigation_results:
                self._result(msg, outputs)
        now = self._wall()
        for gkhash, value in self.batcher.drain():
            outputs.append(Output(self.topics.correlator_input, value, gkhash))
            self.policy.routed(self._partition_of(gkhash), self._newest, now)
        for topic, partition in eof:
            if topic == self.topics.raw and partition in self._raw_owned:
                self._at_eof.add(partition)
        if (time.monotonic() - self._last_tick) * 1000 >= self.tick_interval_ms:
            self._follow_demands()
            self._ticks(outputs)
        return BatchResult(outputs)

    def _partition_of(self, key: str) -> int:
        """The correlator partition Kafka's default (consistent) partitioner gives ``key``: CRC-32."""
        return zlib.crc32(key.encode()) % self.partitions

    # -- raw alerts

    def _raw_record(self, msg: Message, outputs: list[Output]) -> None:
        topic, partition, offset = coordinates(msg)
        ts = msg.timestamp()[1]
        self._at_eof.discard(partition)
        self._handled[partition] = offset + 1
        now = self._wall()
        bound = now + self.max_future_ms
        if ts > bound:  # its alerts wait until their time; the clock does not follow it
            self._ahead.seen(partition, offset, ts - now)
            if self.metrics is not None:
                self.metrics.raw_records_ahead.inc()
        if ts > self._raw_owned.get(partition, -1):
            self._raw_owned[partition] = ts
        # Alerts routed are hot until the clock passes this: not beyond what the ticks may say
        # (a record stamped further ahead waits on its partition's clock demand instead).
        newest = min(ts, bound)
        if newest > self._newest:
            self._newest = newest
        # Checked fields or the gateway's notes, never pydantic Alerts: each alert becomes a note at once.
        result = self.batcher.add_raw(
            msg.value() or b"",
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp_ms=ts,
            headers=_headers(msg),
            limits=self.limits,
        )
        for dead in result.dead_letters:
            outputs.append(self._dlq(dead))
        broadcasts = result.broadcasts
        for value in broadcasts:
            outputs.extend(self._broadcast(value))
        if broadcasts:  # sent to every partition: every partition is hot
            now = self._wall()
            for p in range(self.partitions):
                self.policy.routed(p, self._newest, now)
        if self.metrics is not None:
            self.metrics.record_ingest(result)

    def _dlq(self, dead: DeadLetter) -> Output:
        key = f"{dead.source_topic}/{dead.source_partition}/{dead.source_offset}"
        return Output(
            self.topics.dlq, dead.to_bytes(), key, headers=[("stormwatch-reason", dead.reason.value.encode())]
        )

    def _dead_letter(self, msg: Message, reason: DeadLetterReason, detail: str) -> Output:
        value = msg.value() or b""
        topic, partition, offset = coordinates(msg)
        ts = msg.timestamp()[1]
        dead = DeadLetter(
            reason=reason,
            detail=detail,
            original=base64.b64encode(value).decode(),
            original_size=len(value),
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            at=datetime.fromtimestamp(max(ts, 0) / 1000, tz=UTC),
        )
        if self.metrics is not None:
            self.metrics.dead_letters.labels(reason=reason.value).inc()
        return self._dlq(dead)

    # -- commands and results

    def _command(self, msg: Message, outputs: list[Output]) -> None:
        value = msg.value() or b""
        try:
            cmd = OperatorCommand.from_bytes(value)
        except ValueError as exc:
            outputs.append(self._dead_letter(msg, DeadLetterReason.INVALID_COMMAND, _first_error(exc)))
            return
        if cmd.action in (OperatorAction.SILENCE_ADD, OperatorAction.SILENCE_EXPIRE):
            encoded = wire.encode_command(cmd.to_bytes())
            if cmd.action is OperatorAction.SILENCE_ADD and cmd.silence is None:
                outputs.append(
                    self._dead_letter(msg, DeadLetterReason.INVALID_COMMAND, "silence_add without silence")
                )
                return
            outputs.extend(self._broadcast(encoded))
            return
        gkhash = IncidentId.gkhash_of(cmd.incident_id)
        if gkhash is None:
            # The wording is older than IncidentId's reasons (kept apart from them on purpose).
            detail = f"{cmd.action.value}: incident_id {cmd.incident_id!r} is not of the form inc-<16 hex>-<opened ms>"
            outputs.append(self._dead_letter(msg, DeadLetterReason.INVALID_COMMAND, detail))
            return
        outputs.append(self._forward(wire.encode_command(cmd.to_bytes(), self._wall()), gkhash))

    def _forward(self, value: bytes, gkhash: str) -> Output:
        """A command or result for the partition of ``gkhash``, which is ticked from now on until
        its clock has caught up with the forwarding time the record carries."""
        now = self._wall()
        self.policy.routed(self._partition_of(gkhash), now, now)
        return Output(self.topics.correlator_input, value, gkhash)

    def _result(self, msg: Message, outputs: list[Output]) -> None:
        value = msg.value() or b""
        try:
            result = CommandResult.from_bytes(value)
        except ValueError as exc:
            outputs.append(self._dead_letter(msg, DeadLetterReason.INVALID_COMMAND, _first_error(exc)))
            return
        gkhash = IncidentId.gkhash_of(result.incident_id)
        if gkhash is None:
            detail = f"result of {result.command_id}: bad incident_id {result.incident_id!r}"
            outputs.append(self._dead_letter(msg, DeadLetterReason.INVALID_COMMAND, detail))
            return
        outputs.append(self._forward(wire.encode_result(result.to_bytes(), self._wall()), gkhash))

    # -- clock

    def _broadcast(self, value: bytes) -> list[Output]:
        return [Output(self.topics.correlator_input, value, None, p) for p in range(self.partitions)]

    def _ticks(self, outputs: list[Output]) -> None:
        """The watermark of each owned raw partition to the correlator partitions that wait on time
        (``TickPolicy``; every partition with ``ingest.tick_on_demand`` off): the log's clock.

        One record carries them all (wire ``ticks``), so ticks cost a record per correlator
        partition ticked however many raw partitions this worker owns.
        """
        self._last_tick = time.monotonic()
        now = self._wall()
        targets = self.policy.due(now)
        if not targets:
            return
        marks: dict[str, int] = {}
        for partition, max_ts in sorted(self._raw_owned.items()):
            caught_up = self._caught_up(partition)
            mark = raw_watermark(max_ts, now, caught_up=caught_up, max_future_ms=self.max_future_ms)
            if mark is not None:
                marks[f"{self.topics.raw}/{partition}"] = mark
        if marks:
            value = wire.encode_ticks(marks, self._raw_partition_count)
            outputs.extend(Output(self.topics.correlator_input, value, None, p) for p in targets)
            self.policy.ticked(targets, now)

    def _caught_up(self, partition: int) -> bool:
        """Everything the broker had at the last fetch is read and handled: what an EOF event
        says, but also true between EOF events while records keep arriving (then the wall clock is
        the watermark rather than the last record's timestamp, which lags by the produce-to-consume
        time).

        The consumer's position alone is not enough: it counts every record the loop polled, and a
        poll larger than ``max_batch_bytes`` is handled as several transactions. A tick of the
        first would claim the partition read while the later ones still held its records, moving
        event time to the wall clock past them: they arrived late (a CI run saw 191 alerts per
        incident re-fire after their resolution). So the position must also be where this stage's
        own handling got to. (Behind transaction markers it stays ahead of that: the partition then
        counts as read at its EOF event.)

        An EOF event is not enough either: it says where the partition ended when it came, and
        the consumer goes on fetching while a batch is handled. Records fetched since then but not
        yet polled move the high watermark past the position. Trusting the EOF until the next
        record was handled made 88% of storm-http's alerts late, once the gateway could keep up
        (docs/performance.md, "Late alerts under a storm"). The cached high watermark is the log's
        end, not the last stable offset, so a transaction another producer keeps open on the raw
        topic also holds the partition's clock at its last record until it ends: its records may
        carry any time since it began (stormwatch's own gateway does not write transactionally)."""
        at_eof = partition in self._at_eof
        handled = self._handled.get(partition)
        if self._consumer is None or (handled is None and not at_eof):
            return at_eof
        tp = TopicPartition(self.topics.raw, partition)
        try:
            position = self._consumer.position([tp])[0].offset
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
        except KafkaException:
            return at_eof
        if at_eof:
            return high < 0 or position < 0 or high <= position
        return handled is not None and 0 <= high <= position <= handled


class _AheadRecords:
    """Warns of raw records stamped ahead of the wall clock: at once, then once a minute at most."""

    EVERY_S = 60.0

    def __init__(self) -> None:
        self.count = 0
        self._warned = 0
        self._last = -self.EVERY_S

    def seen(self, partition: int, offset: int, ahead_ms: int) -> None:
        self.count += 1
        if time.monotonic() - self._last < self.EVERY_S:
            return
        self._last = time.monotonic()
        log.warning(
            "raw records stamped ahead of this worker's clock (a producer's clock runs ahead?): "
            "their alerts wait until their time and do not move the clock past ingest.max_future_ms",
            extra={
                "records": self.count - self._warned,
                "partition": partition,
                "offset": offset,
                "ahead_ms": ahead_ms,
            },
        )
        self._warned = self.count


def _headers(msg: Message) -> dict[str, bytes] | None:
    raw = msg.headers()
    if not raw:
        return None
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {k: v if isinstance(v, bytes) else str(v).encode() for k, v in pairs if v is not None}


def _first_error(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(text[:3])[:500] if text else type(exc).__name__
