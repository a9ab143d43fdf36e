"""Exactly-once consume-transform-produce with Kafka transactions (confluent-kafka).

Both pipeline stages are this loop with a different ``Stage``: every poll batch becomes one
transaction that holds the outputs and the input offsets, so a crash at any point either commits
all of a batch's effects or none of them. Zombie workers are fenced by the consumer group
generation (KIP-447), so each process may use its own transactional id.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
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
from confluent_kafka.admin import AdminClient
from prometheus_client import Gauge

from stormwatch.allocator import release_free_memory, tune_malloc
from stormwatch.config import Settings
from stormwatch.errors import KafkaUnavailable
from stormwatch.gctune import SurvivorFreeze, tune_gc
from stormwatch.kafka.client import base_config, is_transient
from stormwatch.lifecycle import worker_lifecycle
from stormwatch.logs import lifecycle_log
from stormwatch.metrics import pipeline_metrics

__all__ = [
    "BatchResult",
    "Output",
    "Stage",
    "TransactionalLoop",
    "coordinates",
    "instance_id",
]

log = logging.getLogger("stormwatch.txloop")

STUCK_AFTER_S = 30.0
"""A transactional call that keeps timing out this long gets a new producer. librdkafka can keep
a transactional producer waiting on a group coordinator it cached before the broker went away,
and then every retry of send_offsets_to_transaction times out (seen in the 3-broker fault tests,
right after the cluster started; librdkafka issue #5511 describes such a hang). A new producer
with the same transactional id fences the old one and starts with fresh coordinator state."""

SEND_OFFSETS_TIMEOUT_S = 10.0
COMMIT_TIMEOUT_S = 30.0
"""The timeouts given to send_offsets_to_transaction and to commit/abort/init_transactions."""

HANG_GRACE_S = 10.0
"""A transactional call that has not returned this long after its own timeout is hung, and the loop
stops waiting for it. librdkafka's send_offsets_to_transaction can wait forever on a group
coordinator request whose timeout is never checked (librdkafka issues #5456 and #5511, both open):
the two-brokers fault test caught a correlator blocked in it for minutes after the brokers were
back. The hung call keeps its thread and its producer; the loop goes on with a new producer."""

CONSUMER_STUCK_AFTER_S = 120.0
"""A rewind whose offset reads have failed this long gets a new consumer. librdkafka can lose its
group coordinator for good when the broker is missing from one metadata answer (a broker fenced
for a moment): the coordinator's broker handle is decommissioned and never looked up again
(librdkafka issue #5511, open). Hour run 13 saw a correlator's consumer report "no broker available
for coordinator query" for the last 22 minutes of the run while a new client in the same network
namespace reached the broker at once. Longer than a broker restart (about 70 s in the chaos runs),
so an ordinary outage is waited out on the same consumer."""

CONSUMER_PROBE_EVERY_S = 15.0
"""While a rewind's or an assignment's offset reads fail, this often a new client (not a group
member) reads the same committed offsets. If it can, the brokers and the group coordinator are
there and only this consumer cannot reach them: it is replaced at once (a rewind's rather than
after ``CONSUMER_STUCK_AFTER_S``; an assignment's otherwise waits as long as the reads fail).
A broker-crash run at 52e192a saw both correlators' reads fail for 122 s with the broker back,
and a new consumer assigned 3 s after the replacement."""

UNSTABLE_STUCK_AFTER_S = 60.0
"""Committed offsets that no client reads stably this long, while a read without require_stable
answers at once, are held by the group coordinator for a transaction that has ended: no
transaction of the stages stays open that long (``transaction.timeout.ms`` is 10 s). Hour run 14
(Kafka 4.1.1): after a broker restart, the commit marker of a correlator's transaction reached
its ``__consumer_offsets`` partition 5 ms after that partition finished loading, and a second load
that would have read it was ignored; the coordinator kept the transaction's offsets pending, and
every read_committed consumer of the group waited on them until the coordinator loaded the
partition again (the next broker restart). The loop cannot clear it; it says so, and what to do."""

TRANSACTION_TIMEOUT_MS = 10_000
"""``transaction.timeout.ms`` of the stages' producers: a worker that dies mid-transaction holds
the read_committed readers of its outputs (and the stable offsets of its inputs) this long."""

TRANSACTION_BUDGET_S = TRANSACTION_TIMEOUT_MS / 2000
"""A transaction handles no further part of its input once this much time has passed since it
began: it commits what it handled and reads the rest again. The transaction coordinator rolls back
a transaction older than ``TRANSACTION_TIMEOUT_MS`` and fences its producer; in hour run 14, 32
minutes of backlog made the correlators' catch-up transactions outlive it, and each one ended in
a new producer and the same transaction again."""

LOG_EVERY_S = 10.0
"""At most one warning per retried call per this many seconds."""

STATUS_EVERY_S = 10.0
"""How often the loop logs what it did (INFO: shown with ``-v``), so a stalled worker shows where."""

LAG_INTERVAL_S = 5.0
"""How often the loop sets ``stormwatch_consumer_lag`` for its assigned partitions."""

STOP_GRACE_S = 1.0
"""After a stop request, how long the loop still waits for a transactional call in flight: a
healthy broker answers a commit in milliseconds, so a clean stop keeps its last batch; a call that
waits for an absent broker is left behind (its transaction is never committed)."""

_TICK_S = 0.05  # how often a wait for a transactional call looks at the stop request

REWIND_READ_TIMEOUT_S = 5.0
"""Timeout of each offset read of a rewind (committed offsets, low watermarks), retried while
Kafka is away. The loop waits in them without noticing a stop request, so they stay well under
the shutdown bound (``shutdown_timeout_ms``, 10 s): a worker stopped while rewinding through an
outage ends cleanly instead of being cut off at the bound."""


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

    # Optional: ``handle_bytes``, the input bytes per ``handle`` call (e.g. ``HANDLE_BYTES``). A
    # transaction's input is then handled in parts of at most that size, each part's outputs
    # produced before the next part is handled, all committed together.


def split_by_bytes(records: list[Message], limit: int | None) -> Iterator[tuple[list[Message], bool]]:
    """``records`` in order as lists of at most ``limit`` bytes of values (at least one record
    each; all of them when ``limit`` is None), each with whether it is the last."""
    if limit is None or len(records) <= 1:
        yield records, True
        return
    chunk: list[Message] = []
    size = 0
    for msg in records:
        length = len(msg)
        if chunk and size + length > limit:
            yield chunk, False
            chunk, size = [], 0
        chunk.append(msg)
        size += length
    yield chunk, True


def coordinates(msg: Message) -> tuple[str, int, int]:
    """(topic, partition, offset) of a consumed record; never None for records from consume()."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


DEFAULT_MAX_BATCH_BYTES = 8 * 1024 * 1024
"""Input bytes per transaction, roughly. The records asked for per poll follow the recent record
size, so a batch of large records (a Prometheus push carries up to 256 alerts) stays a short
transaction, and the next stage works on it while this one reads the next (docs/performance.md)."""

_FIRST_BATCH = 100  # records asked for before any record size is known

HANDLE_BYTES = 2 * 1024 * 1024
"""Input bytes per ``handle`` call for the stages that set ``handle_bytes`` to it (the correlator;
ingest sets a quarter of it), within transactions of up to ``DEFAULT_MAX_BATCH_BYTES``. A catch-up's transactions
are full, and holding a whole one's decoded input and outputs at once needs new memory arenas that
the few long-lived objects made meanwhile keep afterwards: offline, ingest kept 41 arenas after a
60 s backlog with 8 MiB parts and 10 with 2 MiB ones, at the same CPU (docs/performance.md,
"Memory after faults")."""

TRIM_INTERVAL_S = 10.0
"""How often a busy loop hands freed heap memory back to the OS (see ``release_free_memory``)."""


def stage_consumer_config(
    settings: Settings, group_id: str, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The consumer of a stage's transactional loop: read_committed, offsets only through the
    transactions, incremental rebalances."""
    return {
        **base_config(settings),  # quiet: librdkafka logs go to the "stormwatch.kafka" logger
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 2000,
        # The rebalance timeout too: bounds how long a restarted coordinator keeps a rejoin
        # waiting for members no client speaks for any more (docs/operations.md). A rebalance
        # callback (a restore) does not count against it; only the time between polls does.
        "max.poll.interval.ms": settings.kafka.max_poll_interval_ms,
        "fetch.wait.max.ms": 50,
        # No static membership (group.instance.id), although it would spare a restarted replica
        # the dead member's session timeout: a static member can fence itself when the group
        # coordinator moves (a broker failure), and librdkafka makes that fatal for the consumer.
        # The 3-broker fault tests hit it (docs/performance.md, "Recovery").
        **(overrides or {}),
    }


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
        consumer_lag: Gauge | None = None,
        lag_interval_s: float = LAG_INTERVAL_S,
        max_batch_bytes: int | None = DEFAULT_MAX_BATCH_BYTES,
    ) -> None:
        """``consumer_lag``: a gauge labelled (topic, partition) for the lag report; by default the
        pipeline's ``stormwatch_consumer_lag``. ``lag_interval_s`` <= 0 turns the report off.
        ``max_batch_bytes``: input bytes per transaction, roughly (None: ``max_batch`` records)."""
        self.settings = settings
        self.stage = stage
        self.group_id = group_id
        self.transactional_id = transactional_id
        self.topics = topics
        self.max_batch = max_batch
        self.max_batch_bytes = max_batch_bytes
        self._record_bytes = 0.0  # moving mean of the input record size
        self._trim_due = 0.0
        self._worked_since_trim = False  # a transaction ran since the last release_free_memory
        self._survivors = SurvivorFreeze()  # what each commit leaves (state) is kept out of GC scans
        self.poll_timeout_s = poll_timeout_s
        self.on_commit = on_commit
        self._running = True
        self._stopping = threading.Event()  # the same request as _running, for waits to wake on
        self.stopped_while_waiting: str | None = None  # what the loop was waiting for when stopped
        self._assigned: list[TopicPartition] = []
        self.lag_interval_s = lag_interval_s
        if lag_interval_s <= 0:
            self._lag_gauge: Gauge | None = None
        else:
            self._lag_gauge = consumer_lag if consumer_lag is not None else pipeline_metrics().consumer_lag
        self._lag_due = 0.0
        self._lag_start: dict[tuple[str, int], int] = {}  # committed offsets of partitions not read yet
        self._status = _Status()
        self._slow_parts = _SlowParts()
        base = base_config(settings)  # quiet: librdkafka logs go to the "stormwatch.kafka" logger
        producer_conf = {
            **base,
            "transactional.id": transactional_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.max.bytes": settings.topics.max_message_bytes + 65536,
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            # One produce request in flight per broker: with more, a later batch can succeed while
            # an earlier one to the same partition waits for a retry, and librdkafka then reports
            # the earlier records delivered without writing them (its implicit acknowledgement; a
            # broker with no state for the producer on that partition accepts the gap, KAFKA-15591),
            # and the transaction would commit without them (docs/architecture.md,
            # "Exactly once"). A transaction's records still go out in batches per partition.
            "max.in.flight.requests.per.connection": 1,
            **(producer_overrides or {}),
        }
        self._consumer_overrides = consumer_overrides
        self.consumer = Consumer(stage_consumer_config(settings, group_id, consumer_overrides))
        self._retired_consumers: list[Consumer] = []  # replaced, still closing (_replace_consumer)
        self._producer_conf = producer_conf
        self.producer = self._new_producer()
        self._calls = _CallThread()
        self.hung_producers = _HungProducers()  # producers still inside a call that never returned

    def stop(self, *_: Any) -> None:
        """Ask the loop to end (any thread): it commits the batch in hand and returns, or, while it
        waits for Kafka, returns without committing."""
        self._running = False
        self._stopping.set()

    def serve(self, name: str, *, max_seconds: float | None = None, **fields: Any) -> None:
        """``run`` as a worker process (`stormwatch ingest` ...): logs ``started`` and ``stopped``
        with the reason, and SIGTERM/SIGINT end the process within ``shutdown_timeout_ms``, even
        in a Kafka call that does not return (``stormwatch.lifecycle``)."""
        with worker_lifecycle(
            name,
            stop=self.stop,
            shutdown_timeout_s=self.settings.shutdown_timeout_ms / 1000,
            group=self.group_id,
            topics=self.topics,
            transactional_id=self.transactional_id,
            bootstrap_servers=self.settings.kafka.bootstrap_servers,
            **fields,
        ) as life:
            self.run(max_seconds=max_seconds)
            life.detail = self.stopped_while_waiting

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Before the restore: the partitions' committed offsets, stable (KIP-447: a read_committed
        # OffsetFetch waits while a previous owner's transaction that sent offsets is still open).
        # Restoring first could read the changelog up to that open transaction, which may still
        # commit: the state would lack its writes while the offsets skip its input, and the next
        # decisions would repeat sequence numbers the audit log already has (the hour-long chaos
        # run: 128 events written twice after rebalances under faults).
        # Offset reads that fail while a new client reads the same offsets: this consumer lost its
        # coordinator (librdkafka #5511, hour run 14's restarted correlator). It cannot be replaced
        # inside its own callback, so _ConsumerCutOff leaves the callback (confluent-kafka then
        # assigns the partitions itself, unread) and poll() hands it to the run loop.
        reads = _FailingReads()

        def wait_until_stable() -> None:
            try:
                self._stable_offsets(consumer, partitions)
            except KafkaException as exc:
                if not (_transient(exc) and reads.probe_due()):
                    raise
                if self._others_read_offsets(partitions):
                    raise _ConsumerCutOff(
                        f"the assignment's offset reads have failed for {reads.failing_s():.0f}s "
                        f"({_describe(exc)}) while a new client read them"
                    ) from exc
                self._explain_unstable(partitions, reads)
                raise

        if self._retired(consumer):
            return  # replaced: what it is handed now is the new consumer's to claim
        if not self._running:
            # Stopping: the consumer's close serves a rebalance still pending. This process
            # handles nothing more, so it restores nothing; waiting on Kafka here raised out of
            # close() when the offsets did not come (a SIGTERM during a scale-out exited 1 in CI).
            consumer.incremental_assign(partitions)
            self._assigned.extend(partitions)
            return
        self._waiting_out_outages("stable offsets", wait_until_stable)
        with _collector_paused():  # restoring makes long-lived objects only: nothing to collect
            self._waiting_out_outages("restore", lambda: self.stage.on_assign(consumer, partitions))
        gc.freeze()  # state restored for these partitions lives until they are revoked
        release_free_memory()  # what reading the changelog needed on the way
        consumer.incremental_assign(partitions)
        self._assigned.extend(partitions)
        lifecycle_log.info(
            "partitions assigned", extra={"group": self.group_id, "partitions": _names(partitions)}
        )

    def _revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._retired(consumer):  # its partitions were given up when it was replaced
            with contextlib.suppress(KafkaException):
                consumer.incremental_unassign(partitions)
            return
        self.stage.on_revoke(partitions)
        consumer.incremental_unassign(partitions)
        gone = {(p.topic, p.partition) for p in partitions}
        self._assigned = [p for p in self._assigned if (p.topic, p.partition) not in gone]
        self._forget_lag(partitions)
        lifecycle_log.info(
            "partitions revoked", extra={"group": self.group_id, "partitions": _names(partitions)}
        )

    def run(self, *, max_seconds: float | None = None) -> None:
        """Run until stopped (SIGTERM/SIGINT) or ``max_seconds`` passed; commits before returning."""
        tune_gc()
        tune_malloc()
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            self._init_producer()
            self._subscribe()
            while self._running and (deadline is None or time.monotonic() < deadline):
                try:
                    messages = self._poll()
                except _ConsumerCutOff as cut:  # raised in _assign, out of the rebalance callback
                    self._replace_consumer(str(cut))
                    continue
                if self._lag_gauge is not None and time.monotonic() >= self._lag_due:
                    self.report_lag()
                if time.monotonic() >= self._status.due:
                    self._status.report(self._assigned)
                records: list[Message] = []
                eof: set[tuple[str, int]] = set()
                size = 0
                for msg in messages:
                    err = msg.error()
                    if err is None:
                        records.append(msg)
                        size += len(msg)
                    elif err.code() == KafkaError._PARTITION_EOF:
                        topic, partition, _ = coordinates(msg)
                        eof.add((topic, partition))
                    elif err.fatal():
                        raise KafkaException(err)
                    elif err.code() == KafkaError._MAX_POLL_EXCEEDED:
                        log.warning(
                            "%s: this worker left its group and rejoins; the transaction in hand is "
                            "refused and its input read again. Raise kafka.max_poll_interval_ms if "
                            "this happens while Kafka is healthy",
                            err.str(),
                        )
                    else:
                        log.warning("consumer error: %s", err)
                if records:
                    self._learn_size(len(records), size)
                # Before the idle `continue`: what a burst freed is released once the loop is idle
                # too (since ticks come on demand, an idle worker reads nothing at all).
                if self._worked_since_trim and time.monotonic() >= self._trim_due:
                    self._trim_due = time.monotonic() + TRIM_INTERVAL_S
                    self._worked_since_trim = False
                    release_free_memory()
                if not records and not eof and not self.stage.idle_work_due():
                    continue
                self._worked_since_trim = True
                start = 0
                for chunk, last in self._chunks(records):
                    taken = self._transact(chunk, eof if last else set())
                    if taken is None:
                        break  # rewound: the rest of this poll is read again from the committed offsets
                    if taken < len(chunk):  # out of time (TRANSACTION_BUDGET_S)
                        self._read_again(records[start + taken :])
                        break
                    start += taken
        except _StoppedWhileWaiting as stopped:
            # The open transaction is never committed: the next owner redoes its input.
            self.stopped_while_waiting = f"stopped while waiting for Kafka ({stopped})"
            log.warning(
                "%s; the open transaction is not committed: it is aborted and its input read again",
                self.stopped_while_waiting,
            )
        finally:
            self._forget_lag(self._assigned)  # this process no longer reads them
            self.consumer.close()
            close_stage = getattr(self.stage, "close", None)  # optional: a stage's own clients
            if close_stage is not None:
                close_stage()
            if self.stopped_while_waiting is None:  # else the producer may be inside a call still
                with contextlib.suppress(KafkaException):  # a failed producer has nothing left to flush
                    self.producer.flush(10)

    def _poll(self) -> list[Message]:
        """Wait for the first record (or EOF event), then take what else is already fetched.

        ``consume(n, timeout)`` alone returns only when it has ``n`` records or the timeout passed,
        which added the whole poll timeout to every stage's latency whenever traffic is light.
        """
        timeout = self.poll_timeout_s
        due_in = getattr(self.stage, "idle_work_in", None)  # optional: stages with timed idle work
        if due_in is not None:
            timeout = min(timeout, due_in())
        first = self.consumer.poll(timeout)
        if first is None:
            return []
        size = self._batch_size()
        if size <= 1:
            return [first]
        return [first, *self.consumer.consume(size - 1, 0)]

    def _batch_size(self) -> int:
        """Records to ask for: ``max_batch``, fewer when that would be over ``max_batch_bytes``."""
        if self.max_batch_bytes is None:
            return self.max_batch
        if self._record_bytes <= 0:
            return min(self.max_batch, _FIRST_BATCH)
        return max(1, min(self.max_batch, int(self.max_batch_bytes / self._record_bytes)))

    def _chunks(self, records: list[Message]) -> Iterator[tuple[list[Message], bool]]:
        """The poll's records as transactions of at most ``max_batch_bytes`` of input (at least one
        record each), each with whether it is the last.

        The poll was sized from the mean record size so far, which is far off when sizes change:
        a correlator catching up after an outage reads ingest's catch-up batches, ~50 times the
        size of its steady-state records, so one poll took up to the whole prefetch queue (64 MB)
        at once. A transaction's decoded input is what the process's memory peak follows, and
        CPython keeps the arenas of such a peak: the hour-long chaos run's correlators stayed at
        0.7-1.6 GB resident with 70 MB of live objects (docs/reliability.md, run 2)."""
        return split_by_bytes(records, self.max_batch_bytes)

    def _learn_size(self, count: int, size: int) -> None:
        mean = size / count
        self._record_bytes = mean if self._record_bytes <= 0 else (self._record_bytes + mean) / 2

    def report_lag(self) -> dict[tuple[str, int], int]:
        """Set the lag gauge for each assigned partition, and return the values set.

        Lag = the partition's high watermark minus this consumer's position (next offset to read).
        Both are local reads: librdkafka caches the high watermark from every fetch response (a
        caught-up consumer long-polls every ``fetch.wait.max.ms``), so it is fresh without
        ``statistics.interval.ms``; only while the prefetch queue is full (a large backlog) does it
        age, by a second or two, when the lag is large anyway. A partition the application has not
        read from since its assignment has no position yet: its committed offset stands in (one
        broker request per assignment). Like Kafka's own tools, the high watermark counts records
        of a still-open upstream transaction, so a caught-up read_committed consumer may show up
        to one upstream transaction's records.
        """
        self._lag_due = time.monotonic() + self.lag_interval_s
        gauge = self._lag_gauge
        if gauge is None or not self._assigned:
            return {}
        try:
            positions = self.consumer.position(list(self._assigned))
        except KafkaException as exc:
            log.debug("no consumer positions for the lag report: %s", exc)
            return {}
        unread = [tp for tp in positions if tp.offset < 0 and (tp.topic, tp.partition) not in self._lag_start]
        if unread:
            self._remember_start(unread)
        lags: dict[tuple[str, int], int] = {}
        for tp in positions:
            if tp.error is not None:
                continue
            key = (tp.topic, tp.partition)
            try:
                low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            position = tp.offset if tp.offset >= 0 else self._lag_start.get(key, OFFSET_INVALID)
            if position < 0:  # no committed offset: auto.offset.reset=earliest starts at the low mark
                position = low
            if high < 0 or position < 0:
                continue
            lags[key] = max(high - position, 0)
            gauge.labels(topic=tp.topic, partition=str(tp.partition)).set(lags[key])
        return lags

    def _remember_start(self, partitions: list[TopicPartition]) -> None:
        """Where reading starts on partitions not read from yet: their committed offsets."""
        try:
            committed = self.consumer.committed(partitions, timeout=5)
        except KafkaException as exc:
            log.debug("no committed offsets for the lag report: %s", exc)
            return
        for tp in committed:
            if tp.error is None:
                self._lag_start[(tp.topic, tp.partition)] = tp.offset

    def _forget_lag(self, partitions: list[TopicPartition]) -> None:
        """Drop the lag series of partitions this loop no longer owns (another worker reports them)."""
        for tp in partitions:
            self._lag_start.pop((tp.topic, tp.partition), None)
        if self._lag_gauge is None:
            return
        for tp in partitions:
            with contextlib.suppress(KeyError):
                self._lag_gauge.remove(tp.topic, str(tp.partition))

    def _transact(self, records: list[Message], eof: set[tuple[str, int]]) -> int | None:
        """One transaction over ``records`` (or their first parts: ``_run_transaction``); how many
        it took, or None when it failed and the loop rewound."""
        started = time.monotonic()
        try:
            try:
                taken = self._run_transaction(records, eof)
            except KafkaException as exc:
                self._recover(exc)
                return None
        except _ProducerHung as hung:  # in the transaction, or in the abort after it
            self._start_over(f"{hung}; replacing the producer and rewinding", hung=hung)
            return None
        self._status.committed(taken)
        self._survivors.committed()
        if self.on_commit is not None:
            self.on_commit(taken, time.monotonic() - started)
        return taken

    def _run_transaction(self, records: list[Message], eof: set[tuple[str, int]]) -> int:
        """One transaction over ``records``, or over the first parts of them handled within
        ``TRANSACTION_BUDGET_S``; returns how many records it took."""
        self._renew_after_outage()
        self.producer.begin_transaction()
        began = time.monotonic()
        next_offsets: dict[tuple[str, int], int] = {}
        handled = 0
        # Each part's outputs go to the producer (which copies them) before the next part is
        # handled: a catch-up's 8 MiB transaction then never holds all of its outputs as objects
        # at once, whose arenas CPython would keep (docs/performance.md, "Memory after faults").
        for part, last in split_by_bytes(records, getattr(self.stage, "handle_bytes", None)):
            part_began = time.monotonic()
            if handled and part_began - began >= TRANSACTION_BUDGET_S:
                break  # the caller reads the rest again
            result = self.stage.handle(part, eof if last else set())
            for out in result.outputs:
                self._produce(out)
            self._slow_parts.check(len(part), time.monotonic() - part_began)
            next_offsets.update(self._next_offsets(part, result))
            handled += len(part)
            del result
        offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
        if offsets:
            metadata = self.consumer.consumer_group_metadata()
            self._retrying(
                "send offsets",
                lambda: self.producer.send_offsets_to_transaction(offsets, metadata, SEND_OFFSETS_TIMEOUT_S),
                call_timeout_s=SEND_OFFSETS_TIMEOUT_S,
                give_up_after_s=STUCK_AFTER_S,
            )
        self._retrying(
            "commit",
            lambda: self.producer.commit_transaction(COMMIT_TIMEOUT_S),
            call_timeout_s=COMMIT_TIMEOUT_S,
            give_up_after_s=STUCK_AFTER_S,
        )
        return handled

    def _read_again(self, records: list[Message]) -> None:
        """Seek each partition of ``records`` (the rest of a poll, in order) back to its first
        one: the next poll returns them again."""
        first: dict[tuple[str, int], int] = {}
        for msg in records:
            topic, partition, offset = coordinates(msg)
            first.setdefault((topic, partition), offset)
        try:
            for (topic, partition), offset in first.items():
                self.consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:  # the committed offsets are where the rest starts too
            log.warning("seeking back to the records a transaction left failed (%s); rewinding", exc)
            self._rewind()

    def _recover(self, exc: KafkaException) -> None:
        """After a failed transaction: abort or replace the producer, then rewind; re-raise what no
        retry can fix."""
        error = exc.args[0] if exc.args else None
        if not isinstance(error, KafkaError):
            raise exc
        # produce() reports a producer that is already in a fatal state as code _FATAL without
        # the fatal flag: hour run 14's correlators exited on it, once the transaction coordinator
        # had rolled back a catch-up transaction that outlived transaction.timeout.ms and bumped
        # the producer's epoch ("fenced by a newer instance"); restarted, they did it again.
        if error.fatal() or error.code() == KafkaError._FATAL:
            # e.g. the coordinator aborted our transaction during a long broker outage
            self._start_over(f"transactional producer failed ({error}); replacing it and rewinding")
            return
        if error.retriable():
            # _retrying gave up: the same call kept timing out for STUCK_AFTER_S
            self._start_over(
                f"transactional producer stuck for {STUCK_AFTER_S:.0f}s ({error}); replacing it and rewinding"
            )
            return
        # _STATE: a produce() refused because the transaction is already in an abortable error (a
        # record of it failed, e.g. timed out while its broker restarted), which librdkafka does not
        # flag txn_requires_abort; the way out is the same abort (seen in the hour-long chaos run,
        # where it ended a correlator).
        erroneous_state = error.code() == KafkaError._STATE
        if not (error.txn_requires_abort() or erroneous_state):
            raise exc
        log.warning("aborting transaction after %s; rewinding to the committed offsets", error)
        try:
            self._retrying(
                "abort",
                lambda: self.producer.abort_transaction(COMMIT_TIMEOUT_S),
                call_timeout_s=COMMIT_TIMEOUT_S,
                give_up_after_s=STUCK_AFTER_S,
            )
        except KafkaException as abort_exc:
            abort_error = abort_exc.args[0] if abort_exc.args else None
            if not (
                isinstance(abort_error, KafkaError)
                and (abort_error.fatal() or abort_error.retriable() or erroneous_state)
            ):
                raise
            # The coordinator gave up on the transaction meanwhile (long outage), or the abort kept
            # timing out with the brokers back: after a broker crash, ingest retried it every 30 s
            # for minutes and read nothing (9-minute chaos run, 2026-12-05). A new producer fences
            # the old one and aborts its transaction at the coordinator.
            log.warning("abort failed (%s); replacing the producer", abort_error)
            self._replace_producer()
        self._rewind()

    def _start_over(self, why: str, *, hung: _ProducerHung | None = None) -> None:
        log.warning("%s", why)
        self._replace_producer(hung=hung)
        self._rewind()

    def _replace_producer(self, *, hung: _ProducerHung | None = None) -> None:
        """A new producer with the same transactional id: init fences and aborts the old one's work.

        ``hung``: the old producer is still inside that call. It is neither flushed nor destroyed
        here (either could block as well): the thread stuck in the call releases it if the call
        ever returns. Kept for good, each one held its librdkafka instance (threads, buffers and the
        batch in flight; a release freed about 9 MB in the notifier, docs/reliability.md)."""
        if hung is not None:
            hung.calls.retire(self.producer, hung.what, self.hung_producers)
        else:
            with contextlib.suppress(Exception):
                self.producer.flush(0)
        self.producer = self._new_producer()
        self._init_producer()

    def _new_producer(self) -> Producer:
        """A producer whose error callback sets ``_outage_seen`` when it loses every broker (its own
        event: a replaced producer still in a hung call cannot set the new one's)."""
        seen = self._outage_seen = threading.Event()
        tracker = self._producer_conf.get("error_cb")

        def on_error(err: KafkaError) -> None:
            if err.code() == KafkaError._ALL_BROKERS_DOWN:
                seen.set()
            if tracker is not None:
                tracker(err)

        return Producer({**self._producer_conf, "error_cb": on_error})

    def _renew_after_outage(self) -> None:
        """Before a transaction: a producer that lost every broker since the last one is replaced.

        After a broker crash, each stage's first send_offsets_to_transaction on a producer that
        lived through it hung (librdkafka #5456): in three crashes in a row every stage but ingest,
        whose producer had been replaced during the outage, had one such call, which cost 20 s
        (``HANG_GRACE_S`` past its timeout), a rewind, and a librdkafka instance held until the
        call returned (docs/reliability.md). A new producer costs an init_transactions."""
        self.producer.poll(0)  # serves its error events: nothing else polls it between transactions
        if self._outage_seen.is_set():
            log.warning(
                "the producer lost every broker since its last transaction; replacing it before the "
                "next one (a producer that lived through an outage can hang in send_offsets, librdkafka #5456)"
            )
            self._replace_producer()

    def _init_producer(self) -> None:
        """init_transactions, on a fresh producer each time the call hangs."""
        try:
            self._retrying(
                "init transactions",
                lambda: self.producer.init_transactions(COMMIT_TIMEOUT_S),
                call_timeout_s=COMMIT_TIMEOUT_S,
            )
        except _ProducerHung as hung:
            log.warning("%s; trying a new producer", hung)
            self._replace_producer(hung=hung)

    def _retrying(
        self,
        what: str,
        call: Callable[[], None],
        *,
        call_timeout_s: float,
        give_up_after_s: float | None = None,
    ) -> None:
        """Retry a transactional call while Kafka calls its error retriable (brokers away, leader
        elections): the pipeline stalls instead of dying, and resumes when the brokers return.
        Abortable and fatal errors propagate (the first aborts and rewinds, the second exits).
        ``give_up_after_s``: re-raise a retriable error after retrying this long (the caller then
        replaces the producer). A call still running ``HANG_GRACE_S`` after its own timeout
        (``call_timeout_s``) raises ``_ProducerHung``."""
        started = time.monotonic()
        limit_s = call_timeout_s + HANG_GRACE_S

        def retry(exc: Exception) -> bool:
            if give_up_after_s is not None and time.monotonic() - started >= give_up_after_s:
                return False
            return _flagged_retriable(exc)

        self._retry_while(what, lambda: self._bounded(what, call, limit_s), retry)

    def _bounded(self, what: str, call: Callable[[], None], limit_s: float) -> None:
        """Run ``call`` on the call thread; _ProducerHung when it has not returned after ``limit_s``,
        _StoppedWhileWaiting when a stop request came and it has not returned ``STOP_GRACE_S`` later."""
        try:
            done = self._calls.run(call, limit_s, self._stopping)
        except _Interrupted:
            self._calls = _CallThread()  # the old one stays in the call
            raise _StoppedWhileWaiting(f"{what} had not returned") from None
        if not done:
            stuck, self._calls = self._calls, _CallThread()  # the old one stays blocked in the hung call
            raise _ProducerHung(
                f"{what} did not return within {limit_s:.0f}s (a librdkafka hang)", what, stuck
            )

    def _waiting_out_outages(self, what: str, call: Callable[[], None]) -> None:
        """Retry a non-transactional step (restore, rewind) through any transient Kafka failure.

        These steps only read: repeating them is safe, and a worker that gives up here would have
        to be restarted only to do the same thing once the brokers are back."""
        self._retry_while(what, call, _transient)

    def _retry_while(self, what: str, call: Callable[[], None], retry: Callable[[Exception], bool]) -> None:
        attempt = 0
        logged_at = -LOG_EVERY_S
        while True:
            try:
                call()
                return
            except (KafkaException, KafkaUnavailable) as exc:
                if not retry(exc):
                    raise
                if not self._running:  # SIGTERM while Kafka is away: stop, nothing is committed
                    raise _StoppedWhileWaiting(f"{what}: {_describe(exc)}") from exc
                attempt += 1
                if time.monotonic() - logged_at >= LOG_EVERY_S:  # calls can block for their timeout
                    logged_at = time.monotonic()
                    log.warning(
                        "%s failed (%s, attempt %d); retrying until Kafka answers",
                        what,
                        _describe(exc),
                        attempt,
                    )
                if self._stopping.wait(_retry_pause(attempt)):
                    raise _StoppedWhileWaiting(f"{what}: {_describe(exc)}") from exc

    def _produce(self, out: Output) -> None:
        while True:
            try:
                if out.partition is None:
                    self.producer.produce(out.topic, out.value, out.key, headers=out.headers)
                else:
                    self.producer.produce(out.topic, out.value, out.key, out.partition, headers=out.headers)
                return
            except BufferError:  # the queue is full: wait for deliveries, unless asked to stop
                if self._stopping.is_set():
                    raise _StoppedWhileWaiting("produce: the producer's queue is full") from None
                self.producer.poll(0.05)

    @staticmethod
    def _next_offsets(records: list[Message], result: BatchResult) -> dict[tuple[str, int], int]:
        if result.offsets is not None:
            return result.offsets
        last: dict[tuple[str, int], int] = {}
        for msg in records:
            topic, partition, offset = coordinates(msg)
            last[(topic, partition)] = offset + 1
        return last

    @staticmethod
    def _stable_offsets(consumer: Consumer, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The committed offsets of ``partitions`` once no transaction that sent offsets for them is
        open (librdkafka asks with require_stable under read_committed, and waits)."""
        return list(consumer.committed(partitions, timeout=REWIND_READ_TIMEOUT_S))

    def _rewind(self) -> None:
        """After an abort, re-read everything after the last committed offsets (and rebuild state).
        Offset reads that keep failing get a new consumer: as soon as a new client reads them
        (``CONSUMER_PROBE_EVERY_S``), or after ``CONSUMER_STUCK_AFTER_S`` regardless."""
        self._status.rewinds += 1
        reads = _FailingReads()

        def once() -> None:
            try:
                self._rewind_once()
            except (KafkaException, KafkaUnavailable) as exc:
                if not _transient(exc):
                    raise
                assigned = list(self._assigned)
                failing = (
                    f"the rewind's offset reads have failed for {reads.failing_s():.0f}s ({_describe(exc)})"
                )
                if reads.failing_s() >= CONSUMER_STUCK_AFTER_S:
                    self._replace_consumer(failing)
                elif reads.probe_due():
                    if not self._others_read_offsets(assigned):
                        self._explain_unstable(assigned, reads)
                        raise
                    self._replace_consumer(f"{failing} while a new client read them")
                else:
                    raise

        self._waiting_out_outages("rewind", once)

    def _others_read_offsets(self, partitions: list[TopicPartition], *, stable: bool = True) -> bool:
        """Whether a new client of the group's configuration (not a member) reads the committed
        offsets of ``partitions`` now: then Kafka answers and only the loop's consumer does not.
        ``stable=False``: read without require_stable, whatever transaction holds them."""
        if not partitions:
            return False
        overrides = {**(self._consumer_overrides or {})}
        if not stable:
            overrides["isolation.level"] = "read_uncommitted"
        probe = Consumer(stage_consumer_config(self.settings, self.group_id, overrides))
        try:
            probe.committed(partitions, timeout=REWIND_READ_TIMEOUT_S)
            return True
        except KafkaException as exc:
            log.info("the new client could not read the committed offsets either (%s)", _describe(exc))
            return False
        finally:
            # Not a member, nothing to leave; a thread of its own all the same, as its close
            # may wait on the same coordinator.
            threading.Thread(target=probe.close, name="offsets-probe", daemon=True).start()

    def _explain_unstable(self, partitions: list[TopicPartition], reads: _FailingReads) -> None:
        """Past ``UNSTABLE_STUCK_AFTER_S``, at most once a minute, when a new client has just failed
        to read the offsets of ``partitions`` stably too but reads them at once without
        require_stable: an error that the group coordinator holds them (the Kafka fault of hour run
        14), with the remedy. Nothing when Kafka does not answer at all (an outage, waited out)."""
        if reads.failing_s() < UNSTABLE_STUCK_AFTER_S or not reads.explain_due():
            return
        if not self._others_read_offsets(partitions, stable=False):
            return
        log.error(
            "the committed offsets of %s have been unstable for %.0fs although no transaction stays "
            "open that long and they read at once without require_stable: the group coordinator "
            "holds the offsets of a transaction that has ended (a Kafka broker fault after a "
            'restart; docs/operations.md, "Offsets that stay unstable"). Nothing reads this '
            "group's offsets until its coordinator loads them again: restart %s, the coordinator "
            "of group %s",
            ", ".join(_names(partitions)),
            reads.failing_s(),
            self._coordinator(),
            self.group_id,
        )

    def _coordinator(self) -> str:
        """The broker that coordinates the loop's group, as the operator restarts it."""
        admin = AdminClient(base_config(self.settings))
        try:
            group = admin.describe_consumer_groups([self.group_id], request_timeout=5)[self.group_id].result()
        except KafkaException as exc:
            return f"the broker that coordinates it (not found: {_describe(exc)})"
        node = group.coordinator
        return f"broker {node.id} ({node.host}:{node.port})"

    def _subscribe(self) -> None:
        self.consumer.subscribe(
            self.topics, on_assign=self._assign, on_revoke=self._revoke, on_lost=self._revoke
        )

    def _retired(self, consumer: Consumer) -> bool:
        return any(consumer is old for old in self._retired_consumers)

    def _replace_consumer(self, why: str) -> None:
        """A new consumer (a new group member) in place of one that cannot reach its group
        coordinator any more. Its partitions are given up as lost: their next owner, this worker
        again or another, restores them from the committed offsets. The old one is closed on a
        thread of its own, since its close may wait on the same coordinator."""
        log.warning("%s; replacing the consumer: its partitions are given up and assigned again", why)
        lost, self._assigned = self._assigned, []
        if lost:
            self.stage.on_revoke(lost)
            self._forget_lag(lost)
        old = self.consumer
        self._retired_consumers.append(old)
        self.consumer = Consumer(
            stage_consumer_config(self.settings, self.group_id, self._consumer_overrides)
        )
        self._subscribe()

        def close_old() -> None:
            try:
                old.close()
            except Exception as exc:  # a consumer that lost its group may not close cleanly
                log.info("the replaced consumer closed with %s", exc)
            self._retired_consumers.remove(old)

        threading.Thread(target=close_old, name="retired-consumer", daemon=True).start()

    def _rewind_once(self) -> None:
        assigned = list(self._assigned)
        if not assigned:
            return
        committed = self._stable_offsets(self.consumer, assigned)  # before the restore: see _assign
        self.stage.on_revoke(assigned)
        self.stage.on_assign(self.consumer, assigned)
        for tp in committed:
            if tp.offset == OFFSET_INVALID or tp.offset < 0:
                low, _ = self.consumer.get_watermark_offsets(tp, timeout=REWIND_READ_TIMEOUT_S)
                tp.offset = low
            self.consumer.seek(tp)


class _FailingReads:
    """How long a step's offset reads have failed, and when a new client last looked at them."""

    def __init__(self) -> None:
        self.since = time.monotonic()
        self._last = {"probe": self.since, "explain": -float("inf")}

    def failing_s(self) -> float:
        return time.monotonic() - self.since

    def probe_due(self) -> bool:
        """Every ``CONSUMER_PROBE_EVERY_S``."""
        return self._due("probe", CONSUMER_PROBE_EVERY_S)

    def explain_due(self) -> bool:
        """At most once per ``UNSTABLE_STUCK_AFTER_S``."""
        return self._due("explain", UNSTABLE_STUCK_AFTER_S)

    def _due(self, what: str, every_s: float) -> bool:
        now = time.monotonic()
        if now - self._last[what] < every_s:
            return False
        self._last[what] = now
        return True


class _SlowParts:
    """Warns of a part of a transaction's input that alone took ``TRANSACTION_BUDGET_S``: the
    budget cannot cut a part short, and one that takes ``TRANSACTION_TIMEOUT_MS`` is rolled back
    by the coordinator every time it is tried (at most one warning per ``LOG_EVERY_S``)."""

    def __init__(self) -> None:
        self._logged_at = -LOG_EVERY_S

    def check(self, records: int, took_s: float) -> None:
        now = time.monotonic()
        if took_s < TRANSACTION_BUDGET_S or now - self._logged_at < LOG_EVERY_S:
            return
        self._logged_at = now
        log.warning(
            "a part of the input (%d records) took %.1fs to handle and produce, more than a transaction's "
            "budget (%.0fs); a part that takes transaction.timeout.ms (%.0fs) is rolled back by "
            "Kafka each time it is tried. Is the machine overloaded?",
            records,
            took_s,
            TRANSACTION_BUDGET_S,
            TRANSACTION_TIMEOUT_MS / 1000,
        )


@dataclass(slots=True)
class _Status:
    """What the loop did since its last status line."""

    transactions: int = 0
    records: int = 0
    rewinds: int = 0
    due: float = field(default_factory=lambda: time.monotonic() + STATUS_EVERY_S)

    def committed(self, records: int) -> None:
        self.transactions += 1
        self.records += records

    def report(self, assigned: list[TopicPartition]) -> None:
        log.info(
            "last %.0fs: %d transactions, %d records, %d rewinds; assigned %s",
            STATUS_EVERY_S,
            self.transactions,
            self.records,
            self.rewinds,
            ",".join(f"{tp.topic}[{tp.partition}]" for tp in assigned) or "nothing",
        )
        self.transactions = self.records = self.rewinds = 0
        self.due = time.monotonic() + STATUS_EVERY_S


class _ProducerHung(Exception):
    """A transactional call did not return long after its own timeout."""

    def __init__(self, message: str, what: str, calls: _CallThread) -> None:
        super().__init__(message)
        self.what = what
        self.calls = calls  # the thread still inside the call


class _HungProducers:
    """How many producers are held by transactional calls that have not returned (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held = 0

    def __len__(self) -> int:
        return self._held

    def add(self, count: int) -> None:
        with self._lock:
            self._held += count
        pipeline_metrics().hung_producers.inc(count)


@dataclass(slots=True)
class _Call:
    run: Callable[[], None]
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class _CallThread:
    """A daemon thread that makes the producer's blocking transactional calls for the loop, so the
    loop can stop waiting for one that never returns; being a daemon, it never holds up the
    process's exit."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="txn-calls", daemon=True).start()

    def _serve(self) -> None:
        while True:
            call = self._calls.get()
            if call is None:
                return
            try:
                call.run()
            except BaseException as exc:  # handed to the waiting loop, which raises it
                call.error = exc
            call.done.set()

    def retire(self, producer: Producer, what: str, held: _HungProducers) -> None:
        """This thread is stuck in ``what`` on ``producer``: once that call returns, release the
        producer (its last reference: librdkafka destroys the instance) and end the thread.

        The call returns once the broker it waits on answers again: the new producer has fenced
        this one by then, so whatever it finishes with is refused."""
        since = time.monotonic()
        holder = [producer]
        held.add(1)

        def release() -> None:
            holder.clear()
            held.add(-1)
            log.warning(
                "the hung %s returned after %.0fs; its producer is released", what, time.monotonic() - since
            )

        self._calls.put(_Call(release))
        self._calls.put(None)

    def run(self, run: Callable[[], None], limit_s: float, stop: threading.Event | None = None) -> bool:
        """Make the call and re-raise its exception; False if it is still running after ``limit_s``;
        _Interrupted if ``stop`` is set and it is still running ``STOP_GRACE_S`` later."""
        call = _Call(run)
        self._calls.put(call)
        deadline = time.monotonic() + limit_s
        give_up: float | None = None
        while not call.done.wait(_TICK_S):
            now = time.monotonic()
            if stop is not None and stop.is_set():
                give_up = give_up or now + STOP_GRACE_S
                if now >= give_up:
                    raise _Interrupted
            if now >= deadline:
                return False
        if call.error is not None:
            raise call.error
        return True


class _Interrupted(Exception):
    """A stop request came while a transactional call was still running."""


class _ConsumerCutOff(Exception):
    """The consumer cannot read its group's offsets while a new client can (librdkafka #5511):
    raised in the assignment callback, replaced by the run loop."""


class _StoppedWhileWaiting(Exception):
    """A stop request arrived while the loop waited for Kafka (a retried or unfinished call)."""


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Cyclic GC off: a million restored alerts made it scan the growing heap over and over
    (200,000 alerts restored in 0.74 s instead of 0.93 s without it)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _retry_pause(attempt: int) -> float:
    """Seconds between attempts of a call that Kafka did not answer."""
    return min(0.2 * attempt, 2.0)


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]


def _error_of(exc: Exception) -> object:
    return exc.args[0] if exc.args else None


def _flagged_retriable(exc: Exception) -> bool:
    error = _error_of(exc)
    return isinstance(error, KafkaError) and bool(error.retriable())


def _transient(exc: Exception) -> bool:
    return isinstance(exc, KafkaUnavailable) or is_transient(_error_of(exc))


def _describe(exc: Exception) -> object:
    return exc if isinstance(exc, KafkaUnavailable) else _error_of(exc)
