"""The read model's Kafka part: catch up with three topics on start, then follow them live.

One consumer (read_committed, no group, never committing) is assigned every partition of the
audit log (``topics.incidents``), the correlator's state changelog (``topics.correlator_state``)
and the silences topic, from the beginning. The ends of the partitions are taken when it starts;
once the consumer's position passed every one of them the model has caught up (``ready``), and it
goes on applying whatever is written later. A background thread does the reading; readers take
the model under ``lock`` (``read``). When Kafka fails in a way the consumer cannot ride out, the
thread starts over with an empty model, and ``ready`` is false until it has caught up again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from stormwatch.allocator import release_free_memory
from stormwatch.config import Settings
from stormwatch.errors import UserError
from stormwatch.kafka.client import is_transient, make_consumer, unreachable_error
from stormwatch.readmodel.model import ReadModel

__all__ = ["ReadModelFollower"]

log = logging.getLogger("stormwatch.readmodel")

T = TypeVar("T")

_READ = {
    "max.partition.fetch.bytes": 16 * 1024 * 1024,
    "fetch.max.bytes": 64 * 1024 * 1024,
    "allow.auto.create.topics": False,
}
_BATCH = 2000


class _NotYet(Exception):
    """Kafka is not ready for the follower (a topic is missing, a broker is away): retry later."""


class ReadModelFollower:
    """Keeps a ReadModel current with Kafka from a background thread."""

    def __init__(
        self,
        settings: Settings,
        model_factory: Callable[[], ReadModel] = ReadModel,
        *,
        retry_interval_s: float = 2.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self._factory = model_factory
        self.model = model_factory()
        self.lock = threading.Lock()
        self.retry_interval_s = retry_interval_s
        self.timeout_s = timeout_s
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reason = f"not started: no answer yet from Kafka at {settings.kafka.bootstrap_servers}"
        self.catch_up_seconds: float | None = None
        self.caught_up_records = 0
        self._progress = (0, 0)  # (records read, records to read) while catching up

    # -- lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="readmodel-follower", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread; a thread still in a metadata request after ``timeout_s`` is left to
        end by itself (a daemon: it closes its consumer when the request returns)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def wait_ready(self, timeout_s: float) -> bool:
        return self._ready.wait(timeout_s)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def reason(self) -> str:
        """Why reads are refused now ("" once caught up)."""
        if self._ready.is_set():
            return ""
        read, total = self._progress
        if total:
            return f"catching up with Kafka: {read} of about {total} records read"
        return self._reason

    def read(self, query: Callable[[ReadModel], T]) -> T:
        """``query(model)`` under the lock (the follower does not apply records meanwhile)."""
        with self.lock:
            return query(self.model)

    # -- the thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except (_NotYet, UserError) as exc:
                self._reason = str(exc)
                log.info("read model not ready: %s (retrying in %gs)", exc, self.retry_interval_s)
            except KafkaException as exc:
                self._reason = f"Kafka error: {exc}"
                log.warning("read model: %s; starting over in %gs", self._reason, self.retry_interval_s)
            except Exception:  # a bug must not kill the thread silently: say it, start over
                self._reason = "internal error (see the gateway log)"
                log.exception("read model follower failed; starting over")
            if self._ready.is_set() or self.model.applied:
                self._ready.clear()
                with self.lock:
                    self.model = self._factory()
            self._progress = (0, 0)
            self._stop.wait(self.retry_interval_s)

    def _assignment(self, consumer: Consumer) -> tuple[list[TopicPartition], dict[tuple[str, int], int]]:
        """Every partition of the three topics from the beginning, and the end of each that has
        records (the offset the position must reach to have caught up)."""
        assignment: list[TopicPartition] = []
        ends: dict[tuple[str, int], int] = {}
        for topic in (self.topics.silences, self.topics.incidents, self.topics.correlator_state):
            try:
                metadata = consumer.list_topics(topic, timeout=self.timeout_s)
            except KafkaException as exc:
                raise _NotYet(str(unreachable_error(self.settings, str(exc.args[0])))) from None
            found = metadata.topics.get(topic)
            if found is None or found.error is not None or not found.partitions:
                raise _NotYet(
                    f"topic {topic} does not exist on Kafka at {self.settings.kafka.bootstrap_servers}; "
                    "create the topics with `stormwatch topics create`"
                )
            for partition in sorted(found.partitions):
                tp = TopicPartition(topic, partition)
                try:
                    low, high = consumer.get_watermark_offsets(tp, timeout=self.timeout_s)
                except KafkaException as exc:
                    raise _NotYet(
                        f"cannot read the offsets of {topic} partition {partition}: {exc}"
                    ) from None
                if high > low:
                    ends[(topic, partition)] = int(high)
                assignment.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
        return assignment, ends

    def _follow(self) -> None:
        consumer = make_consumer(self.settings, None, **_READ)
        try:
            started = time.monotonic()
            assignment, ends = self._assignment(consumer)
            consumer.assign(assignment)
            self._progress = (0, 0)
            if not ends:
                self._caught_up(started, 0)
            read = 0
            while not self._stop.is_set():
                first = consumer.poll(0.2)
                batch = (
                    [first, *consumer.consume(num_messages=_BATCH, timeout=0)] if first is not None else []
                )
                if batch:
                    read += self._apply(batch)
                if ends:
                    self._progress = (read, sum(ends.values()))
                    done = [
                        (tp.topic, tp.partition)
                        for tp in consumer.position([TopicPartition(t, p) for t, p in ends])
                        if tp.offset >= 0 and tp.offset >= ends[(tp.topic, tp.partition)]
                    ]
                    for key in done:
                        del ends[key]
                    if not ends:
                        self._caught_up(started, read)
        finally:
            consumer.close()

    def _apply(self, batch: list[Any]) -> int:
        applied = 0
        incidents, silences = self.topics.incidents, self.topics.silences
        with self.lock:
            model = self.model
            for msg in batch:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF or is_transient(err):
                        continue
                    raise KafkaException(err)
                topic = msg.topic()
                if topic == incidents:
                    model.apply_incident(msg.value(), msg.partition() or 0, msg.offset() or 0)
                elif topic == silences:
                    key = msg.key()
                    model.apply_silence(
                        None if key is None else key.decode(), msg.value(), msg.timestamp()[1]
                    )
                else:
                    key = msg.key()
                    if key is None:
                        continue
                    model.apply_state(msg.partition() or 0, key.decode(), msg.value())
                applied += 1
        return applied

    def _caught_up(self, started: float, records: int) -> None:
        self.catch_up_seconds = time.monotonic() - started
        self.caught_up_records = records
        self._progress = (0, 0)
        self._reason = ""
        # The catch-up freed the fetched batches: hand that memory back, as a correlator's restore does.
        release_free_memory()
        self._ready.set()
        counts = self.read(lambda m: m.counts())
        log.info(
            "read model caught up in %.2fs (%d records): %s",
            self.catch_up_seconds,
            records,
            ", ".join(f"{k} {v}" for k, v in counts.items()),
        )
