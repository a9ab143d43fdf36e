"""Raw input for pipeline tests: deterministic storms, and the producers that write records.

Records are ``(timestamp_ms, value)`` pairs; the timestamp becomes the record's CreateTime, so
the raw log (and everything derived from it) is the same however often it is replayed.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer

from stormwatch.config import Settings
from stormwatch.kafka.client import delivery_failure, make_producer
from stormwatch.schemas.adapters import ParseLimits
from stormwatch.streams.core.batching import AlertBatcher, RawRecord
from stormwatch.streams.core.rules import RulesConfig


def storm_records(
    *, seed: int, t0_ms: int, groups: int, alerts_per_group: int, rounds: int, per_record: int, span_s: float
) -> list[tuple[int, bytes]]:
    """A deterministic storm in Prometheus' push format: every alert re-sent each round, resolved at the end."""
    rnd = random.Random(seed)
    alerts = [
        {"alertname": f"Storm{g}", "service": f"svc{g % 7}", "instance": f"10.{g}.{i // 200}.{i % 200}:9100"}
        for g in range(groups)
        for i in range(alerts_per_group)
    ]
    records: list[tuple[int, bytes]] = []
    step = span_s * 1000 / max(rounds, 1)
    for r in range(rounds + 1):
        order = alerts[:]
        rnd.shuffle(order)
        resolved = r == rounds
        base = t0_ms + int(r * step)
        for start in range(0, len(order), per_record):
            chunk = order[start : start + per_record]
            ts = base + start * int(step / 2) // max(len(order), 1)
            payload = []
            for labels in chunk:
                item: dict[str, Any] = {"labels": labels, "annotations": {"summary": "storm"}}
                if resolved:
                    item["endsAt"] = _iso(ts - 1)
                payload.append(item)
            records.append((ts, orjson.dumps(payload)))
    return records


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def produce_records(bootstrap: str, topic: str, records: list[tuple[int, bytes]]) -> None:
    """Write the records to ``topic`` of a plaintext broker, all at once."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    for ts, value in records:
        while True:
            try:
                producer.produce(topic, value, timestamp=ts)
                break
            except BufferError:
                producer.poll(0.1)
    if producer.flush(30) != 0:
        raise AssertionError("raw records were not all delivered")


def produce_timestamped(settings: Settings, records: list[tuple[int, bytes]]) -> Producer:
    """Write the records to the raw topic with the settings' own client options (SASL, TLS); the
    producer is returned for more."""
    producer = make_producer(settings)
    for ts, value in records:
        producer.produce(settings.topics.raw, value, timestamp=ts)
    assert producer.flush(30) == 0, "raw records were not all delivered"
    return producer


class PacedProducer(threading.Thread):
    """Produces (timestamp, value) records when the wall clock reaches ``timestamp - lead_s``.

    The storm is live (the pipeline sees it arrive), yet every record's timestamp is ahead of the
    wall clock when it is written, and the ingest stage's clock never runs ahead of the data it has
    read (at a partition's end it takes max(wall clock, newest timestamp)). So no record is ever
    late, and the incidents depend only on the raw log: a replay of the same topic must give the
    same audit log. Runs that read these records take ``leading_clock(lead_s)`` as config, so that
    the records lead their clock too (ingest.max_future_ms) and the storm takes no longer than it
    did before that bound existed.

    So the records must be made just before ``start()``, once the workers run: a storm stamped
    before slow worker starts is produced late, its first records behind the wall clock, and the
    ingest clock at a partition's end (the wall clock then) runs ahead of them; the audit log is
    then no longer a function of the raw log alone (in CI the zombie test's workers took 14 s to
    start, and all six opened events listed other alerts than a replay's). ``late_ms`` says how
    late the first record was due when the thread started.
    """

    def __init__(self, bootstrap: str, topic: str, records: list[tuple[int, bytes]], lead_s: float) -> None:
        super().__init__(name="paced-producer", daemon=True)
        self.records = records
        self.topic = topic
        self.lead_ms = int(lead_s * 1000)
        self.errors: list[KafkaError] = []
        self.delivered = 0
        self.unconfirmed = 0
        self.undelivered = -1
        self.late_ms = 0
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5}
        )

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        # An implicit acknowledgement (no offset) counts as delivered here: the tests judge the
        # storm by what the raw topic holds, and the minority-leader test saw two in one CI run.
        if err is None:
            self.delivered += 1
            if delivery_failure(err, msg) is not None:
                self.unconfirmed += 1
        else:
            self.errors.append(err)

    def run(self) -> None:
        if self.records:
            self.late_ms = max(0, int(time.time() * 1000) + self.lead_ms - self.records[0][0])
        for ts, value in self.records:
            while (wait_ms := ts - self.lead_ms - time.time() * 1000) > 0:
                self.producer.poll(min(wait_ms / 1000, 0.2))
            while True:
                try:
                    self.producer.produce(self.topic, value, timestamp=ts, on_delivery=self._on_delivery)
                    break
                except BufferError:
                    self.producer.poll(0.1)
            self.producer.poll(0)
        self.undelivered = self.producer.flush(120)


def leading_clock(lead_s: float) -> dict[str, Any]:
    """Config overrides for a run that reads a ``PacedProducer``'s records (a reference run after
    the storm too: its last records still lead): ``ingest.max_future_ms`` covers the lead plus the
    seconds before a storm's first record."""
    return {"ingest": {"max_future_ms": int((lead_s + 10) * 1000)}}


def read_raw(
    value: bytes, headers: dict[str, bytes], ts: int, topic: str = "raw", partition: int = 0, offset: int = 0
) -> RawRecord:
    """A raw record as the ingest stage reads it (the gateway's notes or any input format)."""
    return AlertBatcher(RulesConfig()).add_raw(
        value,
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp_ms=ts,
        headers=headers,
        limits=ParseLimits(),
    )


def record_headers(msg: Message) -> dict[str, bytes]:
    headers = msg.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers  # consumed records: a list
    return {name: value for name, value in pairs if isinstance(value, bytes)}


def reparse(msg: Message) -> RawRecord:
    """Exactly the ingest stage's call on a consumed raw record."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return read_raw(msg.value() or b"", record_headers(msg), msg.timestamp()[1], topic, partition, offset)
