"""`stormwatch publish` and `simulate --to-kafka` against a real broker.

Each test publishes to its own raw topic (unique name from ``fresh_settings``) and reads the records
back: same values (times moved to the start), same headers, Kafka timestamps = start + t, and the
adapters turn them into alerts without dead letters.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from stormwatch.commands import simulate as command
from stormwatch.config import Settings
from stormwatch.errors import UserError
from stormwatch.kafka.client import read_topic
from stormwatch.schemas.adapters import parse_record
from stormwatch.simulate import SimRecord, encode_line, generate

pytestmark = pytest.mark.kafka

SMALL = {"duration_ms": 100_000, "eval_interval_ms": 10_000}


def create_topic(settings: Settings, topic: str, partitions: int = 3, **config: str) -> None:
    admin = AdminClient(settings.kafka.client_config())
    for future in admin.create_topics([NewTopic(topic, partitions, 1, config=config)]).values():
        future.result(timeout=30)
    deadline = time.monotonic() + 15
    while topic not in admin.list_topics(timeout=5).topics:  # metadata propagation
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {topic} did not appear")
        time.sleep(0.1)


def run(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="stormwatch")
    command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    result: int = args.handler(args, settings)
    return result


def write_file(path: Path, records: list[SimRecord], t0_ms: int) -> None:
    path.write_bytes(b"".join(encode_line(r, t0_ms) for r in records))


def read_back(settings: Settings, topic: str) -> list[tuple[int, bytes, list[tuple[str, bytes]]]]:
    rows = []
    for msg in read_topic(settings, topic, timeout_s=20):
        _, timestamp = msg.timestamp()
        rows.append((timestamp, msg.value() or b"", list(msg.headers() or [])))
    return sorted(rows)


def an_hour_ago() -> int:
    return (int(time.time()) - 3600) * 1000


def test_publish_replays_a_file_at_the_start_time(
    fresh_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = fresh_settings.topics.raw
    create_topic(fresh_settings, topic)
    records = list(generate("node-failure", size=10, seed=3, **SMALL))
    path = tmp_path / "storm.jsonl"
    write_file(path, records, t0_ms=1_735_689_600_000)
    start = an_hour_ago()

    assert run(["publish", str(path), "--start", str(start)], fresh_settings) == 0
    out = capsys.readouterr().out
    assert f"published {len(records)} records" in out and f"{len(records)} delivered, 0 failed" in out

    with path.open("rb") as f:
        expected = sorted((r.timestamp_ms, r.value or b"", r.headers) for r in command.file_records(f, start))
    got = read_back(fresh_settings, topic)
    assert got == expected
    assert [ts for ts, _, _ in got] == sorted(start + r.t_ms for r in records)

    fingerprints: set[str] = set()
    for offset, (timestamp, value, headers) in enumerate(got):
        result = parse_record(
            value, topic=topic, partition=0, offset=offset, timestamp_ms=timestamp, headers=dict(headers)
        )
        assert not result.dead_letters, result.dead_letters[0].detail
        fingerprints.update(a.fingerprint for a in result.alerts)
        for alert in result.alerts:
            assert alert.received_at.timestamp() * 1000 == timestamp
    assert len(fingerprints) == 10


def test_simulate_to_kafka_with_a_json_summary(
    fresh_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = fresh_settings.topics.raw
    create_topic(fresh_settings, topic)
    start = an_hour_ago()
    argv = ["simulate", "db-cascade", "--size", "12", "--format", "alertmanager", "--duration", "100s"]
    argv += ["--eval-interval", "10s", "--start", str(start), "--to-kafka", "--json"]
    assert run(argv, fresh_settings) == 0
    captured = capsys.readouterr()
    summary: dict[str, Any] = orjson.loads(captured.out)
    assert summary["publish"]["delivered"] == summary["simulation"]["records"] > 0
    assert summary["publish"]["failed"] == 0 and summary["publish"]["topic"] == topic
    assert "db-cascade (alertmanager, seed 1): 12 distinct alerts" in captured.err

    sim = generate("db-cascade", size=12, seed=1, fmt="alertmanager", start_ms=start, **SMALL)
    expected = sorted((start + r.t_ms, r.value, [("stormwatch-format", b"alertmanager")]) for r in sim)
    assert read_back(fresh_settings, topic) == expected


def test_start_file_keeps_the_times_of_the_file(fresh_settings: Settings, tmp_path: Path) -> None:
    topic = fresh_settings.topics.raw
    create_topic(fresh_settings, topic, partitions=1)
    t0 = an_hour_ago()
    records = list(generate("flapping", size=2, seed=1, fmt="pagerduty", start_ms=t0, **SMALL))
    path = tmp_path / "flap.jsonl"
    write_file(path, records, t0_ms=t0)
    assert run(["publish", str(path), "--start", "file"], fresh_settings) == 0
    got = read_back(fresh_settings, topic)
    assert [(ts, value) for ts, value, _ in got] == [(t0 + r.t_ms, r.value) for r in records]


def test_realtime_and_rate_pace_the_records(fresh_settings: Settings, tmp_path: Path) -> None:
    topic = fresh_settings.topics.raw
    create_topic(fresh_settings, topic, partitions=1)
    alert = {"labels": {"alertname": "Paced", "service": "x"}}
    path = tmp_path / "paced.jsonl"
    lines = [
        {"t": t, "headers": {"stormwatch-format": "prometheus"}, "value": [alert] * 50}
        for t in (0, 600, 1500)
    ]
    path.write_bytes(b"\n".join(orjson.dumps(line) for line in lines) + b"\n")

    started = time.monotonic()
    assert run(["publish", str(path), "--realtime"], fresh_settings) == 0
    assert time.monotonic() - started >= 1.5

    started = time.monotonic()
    assert run(["publish", str(path), "--rate", "200"], fresh_settings) == 0  # 100 alerts before the last
    assert time.monotonic() - started >= 0.5
    timestamps = [ts for ts, _, _ in read_back(fresh_settings, topic)]
    assert len(timestamps) == 6


def test_a_refused_record_exits_1_with_the_reason(
    fresh_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = fresh_settings.topics.raw
    create_topic(fresh_settings, topic, partitions=1, **{"max.message.bytes": "4096"})
    noise = os.urandom(32 * 1024).hex()  # incompressible, so zstd cannot squeeze it under the limit
    big = {"labels": {"alertname": "Big"}, "annotations": {"noise": noise}}
    path = tmp_path / "big.jsonl"
    path.write_bytes(orjson.dumps({"t": 0, "headers": {"stormwatch-format": "prometheus"}, "value": [big]}))

    assert run(["publish", str(path), "--start", str(an_hour_ago())], fresh_settings) == 1
    captured = capsys.readouterr()
    assert "0 delivered, 1 failed" in captured.out
    assert "stormwatch publish: error: 1 of 1 records were not delivered (record 1):" in captured.err
    assert "max.message.bytes" in captured.err


def test_a_missing_topic_is_a_user_error(fresh_settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "one.jsonl"
    write_file(path, list(generate("steady", size=1, seed=1, **SMALL))[:1], t0_ms=an_hour_ago())
    with pytest.raises(UserError, match="does not exist"):
        run(["publish", str(path)], fresh_settings)


def test_a_bad_line_stops_with_its_number(fresh_settings: Settings, tmp_path: Path) -> None:
    topic = fresh_settings.topics.raw
    create_topic(fresh_settings, topic, partitions=1)
    path = tmp_path / "bad.jsonl"
    good = orjson.dumps({"t": 0, "headers": {}, "value": [{"labels": {"alertname": "A"}}]})
    path.write_bytes(good + b"\n" + b'{"t": 5}\n')
    with pytest.raises(UserError, match=r'bad\.jsonl: line 2: "value" is missing'):
        run(["publish", str(path)], fresh_settings)
    assert len(read_back(fresh_settings, topic)) == 1  # what came before the bad line is delivered
