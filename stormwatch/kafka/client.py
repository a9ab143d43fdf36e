"""Small confluent-kafka helpers shared by every command and stage.

They exist so that every client gets the same safe defaults (idempotent producers, read_committed
consumers), the same connection settings (``settings.kafka.client_config()``), stays quiet on
stderr (librdkafka's own log lines go to the ``stormwatch.kafka`` logger, demoted so they only show
with ``-v``), and so that Kafka failures reach the user as one actionable ``UserError`` line.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ParamSpec

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from stormwatch.config import Settings
from stormwatch.errors import KafkaUnavailable, UserError

__all__ = [
    "ErrorTracker",
    "KafkaUnavailable",
    "base_config",
    "check_reachable",
    "delivery_failure",
    "is_transient",
    "list_topics_or_refusal",
    "make_consumer",
    "make_producer",
    "open_tail",
    "produce_sync",
    "read_changelog",
    "read_changelogs",
    "read_topic",
    "read_topic_batches",
    "refused_access",
    "require_topic",
    "unreachable_error",
]

_P = ParamSpec("_P")
log = logging.getLogger("stormwatch.kafka")

# Room for the record batch, headers and key on top of the largest value we allow on a topic.
MESSAGE_OVERHEAD_BYTES = 64 * 1024

# Consumers never commit for read_topic, but librdkafka insists on a group id.
_READER_GROUP_ID = "stormwatch.reader.no-commit"

UNCONFIRMED_DELIVERY = (
    "Kafka acknowledged the record without an offset (an implicit acknowledgement after an earlier "
    "request failed), so it may not have been written"
)


def delivery_failure(err: KafkaError | None, msg: Message) -> str | None:
    """Why a delivery report does not prove that the record is in the log; None when it does.

    librdkafka's idempotent producer reports a record as delivered, with no offset, when a later
    batch to its partition succeeds while its own request failed and waits for a retry (its
    "implicit acknowledgement"). A broker that holds no state for the producer on that partition
    (a new producer, a partition it never wrote to) accepts the later batch despite the gap, so
    such a record can be missing (seen in CI: a gateway 2xx whose alert was not in the raw topic;
    KAFKA-15591). A record really written at acks=all always comes back with its offset.
    """
    if err is not None:
        return str(err.str())
    offset = msg.offset()
    if offset is None or offset < 0:
        return UNCONFIRMED_DELIVERY
    return None


ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(records_read, records_expected)`` while read_topic runs."""


class _DemotingLogger:
    """Receives librdkafka's log lines and re-logs them one level lower than their severity.

    librdkafka reports every failed connection attempt at ERROR, several times a second, which
    would drown the single actionable line the CLI prints; the information stays available
    with ``-v`` (INFO) or ``-vv`` (DEBUG).
    """

    def log(self, level: int, msg: str, *args: Any) -> None:
        log.log(logging.INFO if level >= logging.WARNING else logging.DEBUG, msg, *args)


class ErrorTracker:
    """Keeps the last client-level error (connection refused, auth failed ...) for error messages.

    Pass an instance as a client's ``error_cb``; ``last`` then explains a later timeout."""

    def __init__(self) -> None:
        self.last: KafkaError | None = None

    def __call__(self, err: KafkaError) -> None:
        # "1/1 brokers are down" follows the error that explains why; keep the explanation.
        if err.code() != KafkaError._ALL_BROKERS_DOWN or self.last is None:
            self.last = err
        log.debug("kafka client error: %s", err)


_LOGGER = _DemotingLogger()


def base_config(settings: Settings) -> dict[str, Any]:
    """Connection settings plus quiet logging, for clients built elsewhere (the stage loops)."""
    return _base_config(settings)


def _base_config(settings: Settings, errors: ErrorTracker | None = None) -> dict[str, Any]:
    conf = settings.kafka.client_config()
    if settings.kafka.debug is None:
        conf["logger"] = _LOGGER
    # else librdkafka writes its lines to stderr itself, each with the time it was made: through
    # the logger they would wait for the client's next poll, and a stall is what is being looked at.
    conf["error_cb"] = errors if errors is not None else ErrorTracker()
    return conf


def make_producer(settings: Settings, *, transactional_id: str | None = None, **overrides: Any) -> Producer:
    """An idempotent producer (acks=all, zstd) that can send the largest record a topic accepts.

    ``overrides`` are librdkafka property names; pass dotted names as ``**{"linger.ms": 0}``.
    """
    conf = _base_config(settings)
    conf.update(
        {
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": "zstd",
            "linger.ms": 5,
            "message.max.bytes": settings.topics.max_message_bytes + MESSAGE_OVERHEAD_BYTES,
        }
    )
    if transactional_id is not None:
        conf["transactional.id"] = transactional_id
    conf.update(overrides)
    try:
        return Producer(conf)
    except (KafkaException, ValueError) as exc:
        raise UserError(f"invalid Kafka producer configuration: {exc}") from exc


def make_consumer(settings: Settings, group_id: str | None, **overrides: Any) -> Consumer:
    """A read_committed consumer that never commits on its own.

    ``group_id=None`` is for consumers that assign partitions explicitly and never commit.
    ``overrides`` are librdkafka property names, as for make_producer.
    """
    return _new_consumer(settings, group_id, overrides)[0]


def _new_consumer(
    settings: Settings, group_id: str | None, overrides: dict[str, Any]
) -> tuple[Consumer, ErrorTracker]:
    errors = ErrorTracker()
    conf = _base_config(settings, errors)
    conf.update(
        {
            "group.id": group_id if group_id is not None else _READER_GROUP_ID,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    conf.update(overrides)
    try:
        return Consumer(conf), errors
    except (KafkaException, ValueError) as exc:
        raise UserError(f"invalid Kafka consumer configuration: {exc}") from exc


def _unreachable(settings: Settings, reason: object) -> UserError:
    return unreachable_error(settings, str(reason))


def unreachable_error(settings: Settings, reason: str) -> UserError:
    """One actionable line for a client that got no answer: a refused certificate or password
    names the settings to fix; a broker that is simply not there gets ``KafkaUnavailable``."""
    reason = _CONNECT_NOISE.sub("", reason)
    servers = settings.kafka.bootstrap_servers
    problem = _access_problem(reason)
    if problem is None:
        return KafkaUnavailable(
            f"cannot reach Kafka at {servers} ({reason}); start it with `make kafka-up` or set "
            "KAFKA_BOOTSTRAP_SERVERS"
        )
    what, fix = problem
    return UserError(f"Kafka at {servers} {what} ({reason}); {fix}")


def _access_problem(reason: str) -> tuple[str, str] | None:
    """(what went wrong, which settings fix it) when the brokers answered but refused this client."""
    text = reason.lower()
    if "certificate verify failed" in text:
        return (
            "sent a TLS certificate this client does not trust",
            "set kafka.ssl_ca_location to the CA that signed the brokers' certificates",
        )
    if any(
        s in text for s in ("bad certificate", "certificate required", "alert number 42", "alert number 116")
    ):
        return (
            "refused this client's TLS certificate (the brokers require one signed by a CA they trust)",
            "set kafka.ssl_certificate_location and kafka.ssl_key_location to such a certificate and its key",
        )
    if any(s in text for s in ("ssl routines", "ssl handshake", "ssl alert", "certificate", "handshake")):
        return (
            "and this client could not agree on TLS",
            "check kafka.security_protocol (SSL or SASL_SSL only for a TLS listener) and the kafka.ssl_* files",
        )
    if "authentication" in text or "sasl" in text:
        return (
            "refused this client's credentials",
            "check kafka.security_protocol, kafka.sasl_mechanism, kafka.sasl_username and kafka.sasl_password",
        )
    return None


def refused_access(errors: ErrorTracker) -> bool:
    """True once a client error says the brokers refused TLS or the credentials: waiting for a
    metadata answer is then pointless, as no retry gets past a wrong certificate or password."""
    last = errors.last
    if last is None:
        return False
    if last.code() in (KafkaError._SSL, KafkaError._AUTHENTICATION):
        return True
    return _access_problem(_CONNECT_NOISE.sub("", last.str())) is not None


def _reason(exc: KafkaException, client: Consumer, errors: ErrorTracker) -> str:
    """The most useful explanation: the connection error librdkafka saw, else the exception's own."""
    client.poll(0)  # serves the queued error callbacks ("Connection refused", auth failures ...)
    err = errors.last if errors.last is not None else (exc.args[0] if exc.args else exc)
    return err.str() if isinstance(err, KafkaError) else str(err)


def list_topics_or_refusal(
    list_topics: Callable[[float], Any], serve: Callable[[], object], errors: ErrorTracker, timeout_s: float
) -> Any:
    """``list_topics`` within ``timeout_s``, asked in short slices so that a refused certificate or
    password (seen by ``errors`` once ``serve`` ran the error callbacks) ends the wait at once
    instead of after the whole timeout. Raises the last KafkaException when it gives up."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            return list_topics(min(max(left, 0.01), _METADATA_SLICE_S))
        except KafkaException:
            serve()
            if refused_access(errors) or time.monotonic() >= deadline:
                raise


_METADATA_SLICE_S = 0.5


_CONNECT_NOISE = re.compile(r"^\S+/(?:bootstrap|\d+): |\s*\(after \d+ms in state \w+\)")


def check_reachable(settings: Settings, timeout_s: float = 5.0) -> None:
    """Raise UserError unless a broker answers a metadata request within ``timeout_s``."""
    consumer, errors = _new_consumer(settings, None, {})
    try:
        list_topics_or_refusal(
            lambda t: consumer.list_topics(timeout=t), lambda: consumer.poll(0), errors, timeout_s
        )
    except KafkaException as exc:
        raise _unreachable(settings, _reason(exc, consumer, errors)) from exc
    finally:
        consumer.close()


def _topic_partitions(
    consumer: Consumer, errors: ErrorTracker, settings: Settings, topic: str, timeout_s: float
) -> list[int]:
    """Partition ids of ``topic``, or UserError when it does not exist or Kafka is unreachable."""
    try:
        metadata = list_topics_or_refusal(
            lambda t: consumer.list_topics(topic, timeout=t), lambda: consumer.poll(0), errors, timeout_s
        )
    except KafkaException as exc:
        raise _unreachable(settings, _reason(exc, consumer, errors)) from exc
    topic_md = metadata.topics.get(topic)
    err: KafkaError | None = topic_md.error if topic_md is not None else None
    if topic_md is None or err is not None:
        if err is not None and is_transient(err):  # a broker restarting: its leaders are not elected yet
            raise KafkaUnavailable(f"the metadata of topic {topic} is not available yet: {err.str()}")
        if err is None or err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
            raise UserError(
                f"topic {topic} does not exist on Kafka at {settings.kafka.bootstrap_servers}; "
                "create the topics with `stormwatch topics create` or fix the topic name in the config"
            )
        raise UserError(f"cannot read metadata of topic {topic}: {err.str()}")
    return sorted(topic_md.partitions)


def require_topic(settings: Settings, topic: str, timeout_s: float = 10.0) -> int:
    """Check that ``topic`` exists (without auto-creating it); return its partition count.

    Producing to a missing topic would either auto-create it with broker defaults (wrong
    partitions and retention) or hang until the delivery timeout, so commands check first.
    """
    consumer, errors = _new_consumer(settings, None, {})
    try:
        return len(_topic_partitions(consumer, errors, settings, topic, timeout_s))
    finally:
        consumer.close()


_BULK_READ = {
    "enable.partition.eof": True,
    # Fetches of up to 16 MiB per partition instead of librdkafka's 1 MiB: reading a changelog
    # back (a correlator's restore) took half as long, 2.1 µs a record instead of 4.7.
    "max.partition.fetch.bytes": 16 * 1024 * 1024,
    "fetch.max.bytes": 64 * 1024 * 1024,
}


def read_topic_batches(
    settings: Settings,
    topic: str,
    *,
    partitions: Iterable[int] | None = None,
    start: Mapping[int, int] | None = None,
    timeout_s: float = 10.0,
    progress: ProgressCallback | None = None,
) -> Iterator[list[Message]]:
    """Yield every committed record of ``topic``, each partition in offset order, in the batches
    the consumer hands over, then stop. A restore reads millions of records: per batch, what is
    done per record is the least it can be.

    The end of each partition is its last stable offset observed at call time (read_committed),
    so records produced meanwhile and open transactions are not waited for. The end is detected
    by consumer position, not by the last record's offset, because the final offsets of a
    transactional topic are control markers that are never delivered. ``partitions`` limits the
    read to those partitions (UserError if the topic lacks one); ``start`` begins a partition at
    an offset instead of its beginning (one incident's events: from its first). ``timeout_s`` bounds the
    metadata requests and the time without any progress before UserError is raised.
    """
    consumer, errors = _new_consumer(settings, None, _BULK_READ)
    try:
        available = _topic_partitions(consumer, errors, settings, topic, timeout_s)
        wanted = available if partitions is None else sorted(set(partitions))
        missing = [p for p in wanted if p not in available]
        if missing:
            raise UserError(
                f"topic {topic} has no partition {missing[0]} (it has {len(available)}, numbered from 0)"
            )
        end: dict[int, int] = {}
        expected = 0
        begin: dict[int, int] = {}
        for p in wanted:
            low, high = _watermarks(consumer, topic, p, timeout_s)
            first = low if start is None else max(low, start.get(p, low))
            if high > first:
                end[p] = high
                begin[p] = first
                expected += high - first
        if not end:
            return
        consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING if start is None else begin[p]) for p in sorted(end)]
        )
        yield from _drain(consumer, topic, end, expected, timeout_s, progress)
    finally:
        consumer.close()


def _one_by_one(batched: Callable[_P, Iterator[list[Message]]]) -> Callable[_P, Iterator[Message]]:
    def records(*args: _P.args, **kwargs: _P.kwargs) -> Iterator[Message]:
        for batch in batched(*args, **kwargs):
            yield from batch

    return records


read_topic = _one_by_one(read_topic_batches)
read_topic.__doc__ = """``read_topic_batches``, one record at a time."""


def open_tail(settings: Settings, topics: Iterable[str], *, timeout_s: float = 10.0) -> Consumer:
    """A consumer placed at the current end of every partition of ``topics``: it reads only what
    is written from now on (e.g. the outcome of a command about to be sent).

    The ends are read before returning, not left to ``OFFSET_END``, which librdkafka resolves
    lazily: a record written between the call and that resolution would be missed.
    """
    consumer, errors = _new_consumer(settings, None, {})
    try:
        positions = []
        for topic in topics:
            for p in _topic_partitions(consumer, errors, settings, topic, timeout_s):
                positions.append(TopicPartition(topic, p, _watermarks(consumer, topic, p, timeout_s)[1]))
        consumer.assign(positions)
    except BaseException:
        consumer.close()
        raise
    return consumer


def _watermarks(consumer: Consumer, topic: str, partition: int, timeout_s: float) -> tuple[int, int]:
    """Low and high offsets, waiting out transient errors (a leader election right after the topic
    was created or a broker restarted) for up to ``timeout_s``, then KafkaUnavailable.

    The partition was just read from the topic's metadata, so librdkafka's "unknown partition" is
    transient here too: its cache lags a broker that restarted and answers before it has loaded
    every partition (a chaos run's broker crash: five workers exited on it while restoring)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            lagging = isinstance(error, KafkaError) and error.code() == KafkaError._UNKNOWN_PARTITION
            if not (lagging or is_transient(error)):
                raise UserError(f"cannot read the offsets of {topic} partition {partition}: {error}") from exc
            if time.monotonic() >= deadline:
                raise KafkaUnavailable(
                    f"cannot read the offsets of {topic} partition {partition} within {timeout_s:g}s: {error}"
                ) from exc
            time.sleep(0.2)


TRANSIENT_CODES = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._DESTROY_BROKER,
        KafkaError._WAIT_COORD,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.OFFSET_NOT_AVAILABLE,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError.REPLICA_NOT_AVAILABLE,
        KafkaError.PREFERRED_LEADER_NOT_AVAILABLE,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.KAFKA_STORAGE_ERROR,
    }
)
"""Errors seen while brokers are away or leadership moves, whether or not librdkafka flags them
retriable. ``_DESTROY_BROKER`` and ``NOT_COORDINATOR`` reached callers unflagged in the
two-brokers-down fault test, and so did ``OFFSET_NOT_AVAILABLE`` ("Leader high watermark is not
caught up": a new leader's answer to a watermark query before its followers caught up) while the
correlator restored its changelog; the other codes are the ones Kafka's own clients retry while a
partition's leadership moves."""


def is_transient(error: object) -> bool:
    """True for a non-fatal Kafka error that the same request can get past once brokers answer."""
    if not isinstance(error, KafkaError) or error.fatal():
        return False
    return bool(error.retriable()) or error.code() in TRANSIENT_CODES


DRAIN_BATCH = 5000
"""Records taken from the consumer's queue at once while reading a topic through."""


def _drain(
    consumer: Consumer,
    topic: str,
    end: dict[int, int],
    expected: int,
    timeout_s: float,
    progress: ProgressCallback | None,
) -> Iterator[list[Message]]:
    remaining = dict(end)
    read = 0
    last_progress_at = time.monotonic()
    last_report = 0.0

    def finish(partition: int) -> None:
        remaining.pop(partition, None)
        consumer.pause([TopicPartition(topic, partition)])

    while remaining:
        # consume() waits for its whole timeout unless the batch fills up, so wait for the first
        # record only and then take whatever else has already been fetched.
        first = consumer.poll(0.2)
        batch = [first, *consumer.consume(num_messages=DRAIN_BATCH, timeout=0)] if first is not None else []
        records: list[Message] = []
        for msg in batch:
            partition = msg.partition()
            offset = msg.offset()
            if partition is None or offset is None:
                continue
            last = remaining.get(partition)
            if last is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    if offset >= last:
                        finish(partition)
                    continue
                failure = KafkaUnavailable if is_transient(err) else UserError
                raise failure(f"error reading {topic} partition {partition}: {err.str()}")
            if offset >= last:  # produced after we started: not ours to read
                finish(partition)
                continue
            records.append(msg)
            if offset + 1 >= last:
                finish(partition)
        if records:
            read += len(records)
            last_progress_at = time.monotonic()
            yield records
        if remaining:
            # Control markers are never delivered but do move the position past them (a local
            # call: cheap enough to ask after every batch instead of after an empty poll).
            for tp in consumer.position([TopicPartition(topic, p) for p in remaining]):
                if tp.offset >= 0 and tp.offset >= remaining[tp.partition]:
                    finish(tp.partition)
        now = time.monotonic()
        if remaining and now - last_progress_at > timeout_s:
            stuck = ", ".join(f"partition {p} (end offset {o})" for p, o in sorted(remaining.items()))
            raise KafkaUnavailable(
                f"reading {topic} made no progress for {timeout_s:g}s; still waiting for {stuck}; "
                "check that the brokers are up"
            )
        if progress is not None and (now - last_report >= 0.1 or not remaining):
            progress(read, expected if remaining else read)
            last_report = now


def read_changelog(
    settings: Settings, topic: str, partition: int | None = None, *, timeout_s: float = 30.0
) -> dict[str, bytes]:
    """The state a compacted changelog holds: the latest committed value per key.

    Reads one partition (a stage restores its own share of the state) or, with ``partition=None``,
    all of them. A tombstone (null value) deletes its key; keyless records hold no state. Aborted
    transactions never show and open ones are not waited for (see read_topic), so the result is
    exactly the state of the last commits.
    """
    wanted = None if partition is None else [partition]
    state: dict[str, bytes] = {}
    for part in read_changelogs(settings, topic, wanted, timeout_s=timeout_s).values():
        state.update(part)
    return state


def read_changelogs(
    settings: Settings, topic: str, partitions: Iterable[int] | None = None, *, timeout_s: float = 30.0
) -> dict[int, dict[str, bytes]]:
    """``read_changelog`` of several partitions in one pass, state per partition.

    One consumer fetches them all at once: a correlator restoring six partitions this way read
    its changelog three times as fast as one partition after another (docs/performance.md).
    """
    wanted = None if partitions is None else list(partitions)
    states: dict[int, dict[str, bytes]] = {p: {} for p in wanted or ()}
    for batch in read_topic_batches(settings, topic, partitions=wanted, timeout_s=timeout_s):
        for msg in batch:
            key = msg.key()
            if key is None:
                continue
            state = states.get(msg.partition())  # type: ignore[arg-type]
            if state is None:
                state = states[msg.partition()] = {}  # type: ignore[index]
            value = msg.value()
            if value is None:
                state.pop(key.decode(), None)
            else:
                state[key.decode()] = value
    return states


RESTORE_CATCH_UP_S = 60.0
"""How long a restore waits for a changelog to catch up with the committed offsets."""
RESTORE_RETRY_S = 0.5
COMMITTED_TIMEOUT_S = 10.0


def restore_caught_up(
    consumer: Consumer,
    input_topic: str,
    partitions: list[int],
    restore: Callable[[list[int]], Mapping[int, int]],
) -> None:
    """Restore ``partitions`` (``restore`` reads their changelog, builds their state and returns
    each one's last processed input offset) until no state is behind its committed offset.

    A stage commits an input offset in the same transaction as the state that processed the input
    before it, so a committed offset past the restored state's last processed record plus one
    means the changelog was read before that transaction's records were readable: the stable
    offsets only prove it committed, and its markers reach each partition on their own (during a
    broker outage they wait for the brokers). Such partitions are read again, with a warning,
    for at most RESTORE_CATCH_UP_S; then the committed offsets win, with an error (offsets moved
    by hand get there)."""
    asked = [TopicPartition(input_topic, p) for p in partitions]
    try:
        committed = {tp.partition: tp.offset for tp in consumer.committed(asked, timeout=COMMITTED_TIMEOUT_S)}
    except KafkaException as exc:
        log.warning("could not read the committed offsets to check the restored state: %s", exc)
        committed = {}
    started = time.monotonic()
    todo = partitions
    while True:
        processed = restore(todo)
        behind = {p: (processed[p], committed[p]) for p in todo if committed.get(p, -1) > processed[p] + 1}
        if not behind:
            return
        if time.monotonic() - started >= RESTORE_CATCH_UP_S:
            log.error(
                "restored state still behind the committed offsets of %s after %.0fs; going on from "
                "the committed offsets (were they moved by hand?)",
                input_topic,
                RESTORE_CATCH_UP_S,
                extra={"behind": behind},
            )
            return
        log.warning(
            "restored state behind the committed offsets of %s (the changelog's last transaction "
            "is not readable yet); reading it again",
            input_topic,
            extra={"behind": behind},
        )
        time.sleep(RESTORE_RETRY_S)
        todo = sorted(behind)


def produce_sync(
    producer: Producer,
    topic: str,
    key: str | bytes | None,
    value: bytes | None,
    headers: dict[str, str | bytes | None] | list[tuple[str, str | bytes | None]] | None = None,
    timeout_s: float = 10,
) -> Message:
    """Produce one record and wait for the broker's acknowledgement; return the delivered record.

    On timeout the record may still be delivered later, so callers that retry must send the same
    idempotency key (command id) again.
    """
    outcome: list[tuple[KafkaError | None, Message]] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        outcome.append((err, msg))

    try:
        producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
    except BufferError as exc:
        raise UserError(f"the producer queue is full; cannot send to {topic} right now: {exc}") from exc
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        text = err.str() if isinstance(err, KafkaError) else str(err)
        raise UserError(f"Kafka refused a record for {topic}: {text}") from exc
    deadline = time.monotonic() + timeout_s
    while not outcome:
        left = deadline - time.monotonic()
        if left <= 0:
            raise UserError(
                f"no acknowledgement from Kafka for a record to {topic} within {timeout_s:g}s; "
                "check that the brokers are up (a retry with the same id is safe)"
            )
        producer.flush(min(left, 1.0))
    err, msg = outcome[0]
    if (failure := delivery_failure(err, msg)) is not None:
        raise UserError(f"Kafka did not accept the record for {topic}: {failure}")
    return msg
