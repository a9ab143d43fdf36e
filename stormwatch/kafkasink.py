"""The gateway's Kafka side: an idempotent producer whose acknowledgements answer HTTP requests.

The gateway answers 2xx only after Kafka acknowledged the write, and 503 at once while Kafka is
unreachable; ``KafkaSink`` is that producer with its health check, kept apart from the HTTP code
so the write path and its errors (``DeliveryError`` and its kinds) can be read on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import Gauge

from stormwatch.config import Settings
from stormwatch.kafka.client import delivery_failure, make_producer, unreachable_error
from stormwatch.metrics import process_wide

log = logging.getLogger("stormwatch.gateway")  # the gateway's logger, as before the split

# Delivery errors that mean "Kafka is not there right now" rather than "this record is bad".
_OUTAGE_CODES = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.REQUEST_TIMED_OUT,
    }
)
_TOO_LARGE_CODES = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})


def _ready_gauge() -> Gauge:
    return Gauge("stormwatch_gateway_kafka_ready", "1 when the broker answers and the raw topic exists")


kafka_ready_gauge = process_wide(_ready_gauge)
"""``stormwatch_gateway_kafka_ready``, one per process (also ``GatewayMetrics.kafka_ready``)."""


class DeliveryError(Exception):
    """The record was not written; ``status`` is the HTTP status to answer."""

    status = 503


class KafkaUnavailable(DeliveryError):
    """Kafka is unreachable, too slow, or the raw topic is missing: the sender should retry."""


class RecordTooLarge(DeliveryError):
    """Kafka refused the record for its size (the topic's max.message.bytes)."""

    status = 413


class KafkaSink:
    """An idempotent producer (acks=all) whose acknowledgements resolve asyncio futures.

    A background thread polls the producer (serving delivery callbacks, which it hands to the
    event loop with ``call_soon_threadsafe``); another checks, with a metadata request for the raw
    topic, that a broker answers and the topic exists. While that check fails, ``send`` refuses at
    once instead of queueing records Kafka cannot take; it passes again by itself when Kafka returns.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        check_interval_s: float = 5.0,
        retry_interval_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.topic = settings.topics.raw
        self.delivery_timeout_s = settings.gateway.delivery_timeout_ms / 1000
        self.check_interval_s = check_interval_s
        self.retry_interval_s = retry_interval_s
        self._producer_lock = threading.Lock()
        self._fatal: KafkaError | None = None
        self._ready = False
        self._reason = f"no answer yet from Kafka at {settings.kafka.bootstrap_servers}"
        self._client_error: KafkaError | None = None
        self._checked = threading.Event()
        self._ready_event = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._producer = self._new_producer()

    def _new_producer(self) -> Producer:
        timeout_ms = self.settings.gateway.delivery_timeout_ms
        overrides: dict[str, Any] = {
            # librdkafka fails a record it could not write in time: the request then gets a 503.
            "message.timeout.ms": timeout_ms,
            "linger.ms": 2,
            # lz4, as the stages' transactional producers: cheaper to compress than zstd, for
            # records that live only until ingest read them (docs/performance.md, "Gateway").
            "compression.type": "lz4",
            # A metadata request must never create the raw topic with broker defaults.
            "allow.auto.create.topics": False,
            "reconnect.backoff.max.ms": 1000,
            "error_cb": self._on_error,
        }
        return make_producer(self.settings, **overrides)

    # -- lifecycle

    def start(self) -> None:
        for name, target in (("gateway-poll", self._poll_loop), ("gateway-health", self._health_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self, timeout_s: float = 10.0) -> None:
        """Wait up to ``timeout_s`` for records in flight, then stop the threads."""
        with self._producer_lock:
            producer = self._producer
        left = producer.flush(timeout_s)
        if left:
            log.warning("%d records were still unacknowledged at shutdown (their senders got 503)", left)
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(5)
        self._threads.clear()

    def wait_checked(self, timeout_s: float) -> bool:
        """Block until the first health check finished; True when Kafka is ready."""
        self._checked.wait(timeout_s)
        return self._ready

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until Kafka is ready (a topic just created takes a moment to appear) or timeout."""
        return self._ready_event.wait(timeout_s)

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def reason(self) -> str:
        """Why the sink is not ready ("" when it is)."""
        return "" if self._ready else self._reason

    # -- background threads

    def _on_error(self, err: KafkaError) -> None:
        if err.code() != KafkaError._ALL_BROKERS_DOWN or self._client_error is None:
            self._client_error = err  # the explanation (auth failed, refused), not the summary
        if err.fatal():
            self._fatal = err
        elif err.code() == KafkaError._ALL_BROKERS_DOWN and self._ready:
            # Often a blip librdkafka recovers from at once; the health check decides, right now.
            self._wake.set()
        log.debug("kafka client error: %s", err)

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            with self._producer_lock:
                producer = self._producer
            producer.poll(0.1)
            if self._fatal is not None:
                self._replace_producer()

    def _replace_producer(self) -> None:
        """After a fatal idempotence error the producer is unusable; records in it fail (503)."""
        err, self._fatal = self._fatal, None
        log.error("Kafka producer failed fatally (%s); starting a new one", err)
        with self._producer_lock:
            old, self._producer = self._producer, self._new_producer()
        old.purge()
        old.flush(0)

    def _health_loop(self) -> None:
        while not self._stop.is_set():
            ok, reason = self._check()
            if self._stop.is_set():
                break
            if ok and not self._ready:
                log.info("Kafka is ready: raw topic %s reachable", self.topic)
            elif not ok and self._ready:
                log.warning("Kafka not ready, answering 503: %s", reason)
            elif not ok and (reason != self._reason or not self._checked.is_set()):
                # At start-up a just-created topic takes a moment to appear: not yet worth a warning
                # (`stormwatch gateway` warns when Kafka is still not ready after a few seconds).
                log.info("Kafka not ready yet, answering 503: %s", reason)
            self._set_ready(ok, reason)
            self._checked.set()
            self._wake.wait(self.check_interval_s if ok else self.retry_interval_s)
            self._wake.clear()

    def _check(self) -> tuple[bool, str]:
        with self._producer_lock:
            producer = self._producer
        timeout = min(max(self.delivery_timeout_s, 1.0), 5.0)
        try:
            metadata = producer.list_topics(self.topic, timeout=timeout)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else exc
            text = err.str() if isinstance(err, KafkaError) else str(err)
            if self._client_error is not None:
                text = self._client_error.str()
            return False, str(unreachable_error(self.settings, text))
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            detail = topic.error.str() if topic is not None and topic.error is not None else "no partitions"
            return False, (
                f"raw topic {self.topic} is not available ({detail}); "
                "create it with `stormwatch topics create`"
            )
        self._client_error = None  # connected: older client errors explain nothing any more
        return True, ""

    def _mark_unready(self, reason: str) -> None:
        """A failed write or a lost connection: refuse at once, and re-check now (then every
        retry_interval_s, as the health loop does while not ready)."""
        if self._ready:
            log.warning("Kafka not ready, answering 503: %s", reason)
            self._set_ready(False, reason)
            self._wake.set()

    def _set_ready(self, ok: bool, reason: str) -> None:
        self._ready, self._reason = ok, reason
        if ok:
            self._ready_event.set()
        else:
            self._ready_event.clear()
        kafka_ready_gauge().set(1 if ok else 0)

    # -- the write

    async def send(
        self,
        value: bytes,
        *,
        key: bytes | None,
        headers: list[tuple[str, str | bytes | None]],
        timestamp_ms: int,
    ) -> None:
        """Write one record to the raw topic; return once Kafka acknowledged it, else raise."""
        if not self._ready:
            raise KafkaUnavailable(self._reason)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[KafkaError | str | None] = loop.create_future()
        on_delivery = functools.partial(_delivered, loop, future)
        with self._producer_lock:
            producer = self._producer
        try:
            producer.produce(
                self.topic,
                value=value,
                key=key,
                headers=headers,
                timestamp=timestamp_ms,
                on_delivery=on_delivery,
            )
        except BufferError:
            raise KafkaUnavailable("the producer queue is full (Kafka is slower than the senders)") from None
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() in _TOO_LARGE_CODES:
                raise RecordTooLarge(err.str()) from None
            raise KafkaUnavailable(err.str() if isinstance(err, KafkaError) else str(exc)) from None
        try:
            # librdkafka gives up after message.timeout.ms; the extra second covers callback latency.
            err = await asyncio.wait_for(future, self.delivery_timeout_s + 1.0)
        except TimeoutError:
            self._mark_unready("no acknowledgement from Kafka in time")
            raise KafkaUnavailable(
                f"no acknowledgement from Kafka within {self.delivery_timeout_s:g}s"
            ) from None
        if err is None:
            return
        if isinstance(err, str):
            # Possibly written, possibly not: the sender retries, and a duplicate is deduplicated.
            log.warning("answering 503 for a record Kafka did not confirm: %s", err)
            raise KafkaUnavailable(err)
        if err.code() in _TOO_LARGE_CODES:
            raise RecordTooLarge(err.str())
        if err.code() in _OUTAGE_CODES:
            self._mark_unready(f"delivery failed: {err.str()}")
        raise KafkaUnavailable(f"Kafka did not accept the record: {err.str()}")


def _delivered(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[KafkaError | str | None],
    err: KafkaError | None,
    msg: Message,
) -> None:
    """Runs on the poll thread: hand the outcome to the event loop (the error, the reason a
    "delivered" record is not proven written, or None once it is at its offset)."""
    outcome = err if err is not None else delivery_failure(None, msg)
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for this answer any more
        loop.call_soon_threadsafe(_settle, future, outcome)


def _settle(future: asyncio.Future[KafkaError | str | None], err: KafkaError | str | None) -> None:
    if not future.done():  # the request may have timed out meanwhile
        future.set_result(err)
