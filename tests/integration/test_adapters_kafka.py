"""Adapters against a real broker: raw records of every format (and bad ones) through Kafka and back.

Produces one record per input format plus bad records to a fresh topic, consumes them, parses each
with parse_record exactly as the ingest stage does (value, headers, coordinates, record timestamp),
then writes the dead letters to a fresh DLQ topic and reads them back.
"""

from __future__ import annotations

import base64
import contextlib
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from stormwatch.schemas.adapters import FORMAT_HEADER, ParseLimits, ParseResult, parse_record
from stormwatch.schemas.alert import AlertStatus, InputFormat
from stormwatch.schemas.dlq import DeadLetter, DeadLetterReason
from stormwatch.schemas.fingerprint import key_fingerprint
from tests.kit.paths import UNIT_FIXTURES

pytestmark = pytest.mark.kafka

BASE_MS = 1714557600000  # 2024-05-01T10:00:00Z; record i gets BASE_MS + i seconds

# The records' CreateTime (BASE_MS) is years old, so under the broker's default retention (7 days)
# its next retention check (log.retention.check.interval.ms, a minute on the test brokers) deletes
# them; when that check falls between producing and consuming, the consumer finds the log start
# offset past the records and reads none. The test's topics keep records for as long as they exist.
KEEP_FOREVER = {"retention.ms": "-1"}


@pytest.fixture
def topics(bootstrap: str) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:12]
    raw, dlq = f"test.adapters.raw.{suffix}", f"test.adapters.dlq.{suffix}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new_topics = [NewTopic(name, 1, 1, config=KEEP_FOREVER) for name in (raw, dlq)]
    for future in admin.create_topics(new_topics, operation_timeout=15).values():
        future.result(timeout=30)
    try:
        yield raw, dlq
    finally:
        for future in admin.delete_topics([raw, dlq], operation_timeout=15).values():
            with contextlib.suppress(Exception):  # best effort: the topic names are unique anyway
                future.result(timeout=30)


def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, list[tuple[str, bytes]]]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    errors: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    for i, (value, headers) in enumerate(records):
        producer.produce(
            topic, value=value, headers=headers or None, timestamp=BASE_MS + i * 1000, on_delivery=on_delivery
        )
    assert producer.flush(30) == 0
    assert errors == []


def consume(bootstrap: str, topic: str, count: int) -> list[Message]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-adapters-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + 45
    try:
        while len(messages) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            messages.append(msg)
    finally:
        consumer.close()
    assert len(messages) == count, f"read {len(messages)} of {count} records from {topic}"
    return messages


def parse_message(msg: Message) -> ParseResult:
    """Exactly what the ingest stage hands the adapters."""
    _, timestamp_ms = msg.timestamp()
    headers = {k: v for k, v in (msg.headers() or []) if v is not None}
    return parse_record(
        msg.value(),
        topic=msg.topic() or "",
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        timestamp_ms=timestamp_ms,
        headers=headers,
        limits=ParseLimits(),
    )


def fixture(name: str) -> bytes:
    return (UNIT_FIXTURES / name).read_bytes()


def test_every_format_and_bad_records_through_kafka(bootstrap: str, topics: tuple[str, str]) -> None:
    raw_topic, dlq_topic = topics
    bad_batch = orjson.dumps([{"labels": {"alertname": "Fine"}}, {"labels": {"alertname": 42}}])
    records: list[tuple[bytes | None, list[tuple[str, bytes]]]] = [
        (fixture("prometheus_push.json"), []),  # 0
        (fixture("alertmanager_webhook_firing.json"), []),  # 1
        (fixture("pagerduty_trigger.json"), []),  # 2
        (fixture("cloudevents_batch.json"), []),  # 3
        (fixture("native_batch.json"), [(FORMAT_HEADER, b"native")]),  # 4, declared
        (fixture("pagerduty_resolve.json"), []),  # 5
        (b'{"labels": {"alertname": ', []),  # 6 not JSON
        (b'[{"labels":{"alertname":"\xff"}}]', []),  # 7 invalid UTF-8
        (b'{"metric":"cpu"}', []),  # 8 unknown format
        (fixture("prometheus_push.json"), [(FORMAT_HEADER, b"graphite")]),  # 9 unknown header
        (bad_batch, []),  # 10 one good, one bad alert
        (None, []),  # 11 tombstone
    ]
    produce(bootstrap, raw_topic, records)
    messages = consume(bootstrap, raw_topic, len(records))
    results = [parse_message(m) for m in messages]

    for i, (msg, result) in enumerate(zip(messages, results, strict=True)):
        assert msg.offset() == i
        at = datetime.fromtimestamp((BASE_MS + i * 1000) / 1000, tz=UTC)
        for alert in result.alerts:
            assert alert.received_at == at  # the record timestamp travelled through Kafka
            assert alert.origin is not None
            assert (alert.origin.topic, alert.origin.partition, alert.origin.offset) == (raw_topic, 0, i)
        for dead in result.dead_letters:
            assert dead.at == at
            assert (dead.source_topic, dead.source_partition, dead.source_offset) == (raw_topic, 0, i)

    formats = [r.format for r in results[:6]]
    assert formats == [
        InputFormat.PROMETHEUS,
        InputFormat.ALERTMANAGER,
        InputFormat.PAGERDUTY,
        InputFormat.CLOUDEVENTS,
        InputFormat.NATIVE,
        InputFormat.PAGERDUTY,
    ]
    assert [len(r.alerts) for r in results[:6]] == [3, 2, 1, 3, 2, 1]
    assert all(r.dead_letters == [] for r in results[:6])

    # the same HighCPU alert pushed by Prometheus, notified by Alertmanager, relayed as a CloudEvent
    high_cpu = {
        results[0].alerts[0].fingerprint,
        results[1].alerts[0].fingerprint,
        results[3].alerts[2].fingerprint,
    }
    assert len(high_cpu) == 1
    trigger, resolve = results[2].alerts[0], results[5].alerts[0]
    assert trigger.fingerprint == resolve.fingerprint == key_fingerprint("pagerduty", "srv01/disk-full")
    assert (trigger.status, resolve.status) == (AlertStatus.FIRING, AlertStatus.RESOLVED)

    whole = {
        6: DeadLetterReason.NOT_JSON,
        7: DeadLetterReason.INVALID_UTF8,
        8: DeadLetterReason.UNKNOWN_FORMAT,
        9: DeadLetterReason.UNKNOWN_FORMAT,
        11: DeadLetterReason.EMPTY,
    }
    for i, reason in whole.items():
        assert results[i].alerts == []
        [dead] = results[i].dead_letters
        assert dead.reason is reason
        assert dead.alert_index is None
        assert base64.b64decode(dead.original) == (records[i][0] or b"")

    [fine] = results[10].alerts
    [bad] = results[10].dead_letters
    assert fine.labels == {"alertname": "Fine"}
    assert (bad.reason, bad.alert_index, bad.detail) == (
        DeadLetterReason.INVALID_ALERT,
        1,
        "[1].labels.alertname: expected string, got int",
    )

    # dead letters survive their own trip through the DLQ topic
    dead_letters = [d for r in results for d in r.dead_letters]
    produce(
        bootstrap,
        dlq_topic,
        [(d.to_bytes(), [("stormwatch-reason", d.reason.value.encode())]) for d in dead_letters],
    )
    read_back = [
        DeadLetter.from_bytes(m.value() or b"") for m in consume(bootstrap, dlq_topic, len(dead_letters))
    ]
    assert read_back == dead_letters

    # parsing is a pure function of the record: a second read gives identical bytes
    again = [parse_message(m) for m in consume(bootstrap, raw_topic, len(records))]
    assert [[a.to_bytes() for a in r.alerts] for r in again] == [
        [a.to_bytes() for a in r.alerts] for r in results
    ]
