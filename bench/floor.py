"""The machine's floor: a bare confluent-kafka consumer that reads the raw records and parses them.

It is what any Python consumer of the same data pays at least (fetch, decompress, one orjson.loads
per record), measured in the same run as the pipeline so their ratio is meaningful on a noisy
machine. Run as a subprocess by the harness, so its CPU time and memory are its own:

    python -m stormwatch.bench.floor --bootstrap HOST:PORT --topic TOPIC              # read everything once
    python -m stormwatch.bench.floor --bootstrap HOST:PORT --topic TOPIC --follow 60  # live: per-record latency

It prints one JSON object.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import uuid
from typing import Any

import orjson
from confluent_kafka import OFFSET_END, Consumer, KafkaError, TopicPartition

from stormwatch.bench.results import percentiles

__all__ = ["follow", "read_all"]


def _consumer(bootstrap: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"stormwatch-bench-floor-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 50,
            "log_level": 3,
        }
    )


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread, librdkafka's included
    return usage.ru_utime + usage.ru_stime


def _alerts_in(value: bytes | None) -> int:
    doc = orjson.loads(value or b"null")
    if type(doc) is dict and type(doc.get("al")) is list:  # the gateway's notes-v1 records
        return len(doc["al"])
    return len(doc) if type(doc) is list else 1


def read_all(bootstrap: str, topic: str) -> dict[str, Any]:
    """Consume every record of ``topic`` once and parse it; time from assignment to the last EOF."""
    consumer = _consumer(bootstrap)
    try:
        md = consumer.list_topics(topic, timeout=10)
        partitions = sorted(md.topics[topic].partitions)
        highs = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions}
        pending = {p for p, (low, high) in highs.items() if high > low}
        started_wall, started_cpu = time.monotonic(), _cpu()
        consumer.assign([TopicPartition(topic, p, highs[p][0]) for p in partitions])
        records = alerts = 0
        while pending:
            for msg in consumer.consume(5000, 1.0):
                err = msg.error()
                if err is None:
                    records += 1
                    alerts += _alerts_in(msg.value())
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition() or 0)
                else:
                    raise RuntimeError(f"floor consumer: {err}")
        wall = time.monotonic() - started_wall
        cpu = _cpu() - started_cpu
    finally:
        consumer.close()
    return _figures(records, alerts, wall, cpu)


def _figures(records: int, alerts: int, wall: float, cpu: float) -> dict[str, Any]:
    """What both measurements report: counts, rates and this process's peak memory."""
    return {
        "records": records,
        "alerts": alerts,
        "wall_s": wall,
        "cpu_s": cpu,
        "alerts_per_s": alerts / wall if wall > 0 else 0.0,
        "alerts_per_cpu_s": alerts / cpu if cpu > 0 else 0.0,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def follow(bootstrap: str, topic: str, seconds: float) -> dict[str, Any]:
    """Consume new records for ``seconds``; latency = arrival here minus the record timestamp."""
    consumer = _consumer(bootstrap)
    latencies: list[float] = []
    records = alerts = 0
    try:
        md = consumer.list_topics(topic, timeout=10)
        consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in sorted(md.topics[topic].partitions)])
        started_wall, started_cpu = time.monotonic(), _cpu()
        deadline = started_wall + seconds
        while time.monotonic() < deadline:
            first = consumer.poll(0.05)  # returns as soon as a record is there
            if first is None:
                continue
            now_ms = time.time() * 1000
            for msg in [first, *consumer.consume(1000, 0)]:
                if msg.error() is not None:
                    continue
                records += 1
                alerts += _alerts_in(msg.value())
                latencies.append(now_ms - msg.timestamp()[1])
        wall = time.monotonic() - started_wall
        cpu = _cpu() - started_cpu
    finally:
        consumer.close()
    return {**_figures(records, alerts, wall, cpu), "latency_ms": percentiles(latencies)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stormwatch.bench.floor", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--follow", type=float, help="Read live records for this many seconds")
    args = parser.parse_args(argv)
    if args.follow:
        result = follow(args.bootstrap, args.topic, args.follow)
    else:
        result = read_all(args.bootstrap, args.topic)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
