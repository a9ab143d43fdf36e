"""Ten thousand malformed records through the real pipeline (tests/kit/corpus.py).

The corpus (random bytes, truncated and oversize JSON, a wrong type in every typed field of every
format, invalid UTF-8, deep nesting, label bombs, years 1 and 9999 ...) is written to a raw topic
with 500 good alerts spread between the bad records, and read by real ingest and correlator
processes. Afterwards:

- every bad record has exactly one dead letter, found by its source partition and offset, with a
  reason the case allows, the DLQ key ``topic/partition/offset``, the ``stormwatch-reason`` header,
  and (for a whole-record refusal) the original bytes;
- no good record has a dead letter, and every good alert joined an incident;
- no worker crashed and the ingest stage caught up with the raw topic within a bound.

The first test checks the corpus itself against the adapters (pure, no broker), so a generator
mistake shows up as such rather than as a pipeline failure.
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from stormwatch.kafka.client import is_transient, make_consumer, read_topic
from stormwatch.schemas.adapters import ParseLimits, parse_record
from stormwatch.schemas.incident import AlertChangeKind, IncidentEvent
from tests.kit.corpus import Case, CorpusBuilder, interleave
from tests.kit.metrics import metric
from tests.kit.pipeline import PipelineRun
from tests.kit.ports import free_port
from tests.kit.waits import wait_for

pytestmark = pytest.mark.faults

SEED = 20260101
GOOD = 500
LIMITS = {
    "max_record_bytes": 256 * 1024,
    "max_labels": 256,
    "max_label_bytes": 16 * 1024,
    "max_json_depth": 32,
}
PARSE_LIMITS = ParseLimits(**LIMITS)
CATCH_UP_S = 240.0
"""Bound for ingest to read the whole corpus (about 30 MB) and the correlator to group the good alerts."""


def corpus() -> list[Case]:
    builder = CorpusBuilder(seed=SEED, **LIMITS)
    bad = builder.bad_cases()
    good = builder.good_cases(GOOD)
    return list(interleave(bad, good, SEED))


def _parse(case: Case, partition: int = 0, offset: int = 0) -> Any:
    return parse_record(
        case.value,
        topic="raw",
        partition=partition,
        offset=offset,
        timestamp_ms=1_767_225_600_000,
        headers=dict(case.headers) if case.headers else None,
        limits=PARSE_LIMITS,
    )


def test_corpus_is_bad_by_the_adapters_own_verdict() -> None:
    cases = corpus()
    bad = [c for c in cases if not c.good]
    assert len(bad) >= 10_000 and sum(c.good for c in cases) == GOOD
    kinds = Counter(c.kind.split(":")[0] for c in bad)
    for kind in ("random_bytes", "truncated_json", "too_large", "wrong_type", "invalid_utf8"):
        assert kinds[kind] > 0, kind
    for kind in ("deep_nesting", "label_bomb", "year_1_or_9999", "at_limit_missing_labels"):
        assert kinds[kind] > 0, kind
    for case in cases:
        result = _parse(case)
        if case.good:
            assert len(result.alerts) == 1 and not result.dead_letters, (case.kind, result.dead_letters)
            continue
        assert not result.alerts and len(result.dead_letters) == 1, (
            case.kind,
            case.value and case.value[:200],
        )
        reason = result.dead_letters[0].reason.value
        assert not case.expect or reason in case.expect, (case.kind, reason, result.dead_letters[0].detail)


def _produce(bootstrap: str, topic: str, cases: list[Case], t0_ms: int) -> list[tuple[int, int]]:
    """Write the cases in order; return each one's (partition, offset)."""
    coords: list[tuple[int, int] | None] = [None] * len(cases)
    errors: list[KafkaError] = []

    def delivered(index: int) -> Any:
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                errors.append(err)
            else:
                coords[index] = (msg.partition() or 0, msg.offset() or 0)

        return on_delivery

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 20,
            # the raw topic takes max_record_bytes + 64 KiB per record *batch*: keep batches small
            # (a larger record travels alone)
            "batch.size": 64 * 1024,
        }
    )
    for i, case in enumerate(cases):
        while True:
            try:
                producer.produce(
                    topic, case.value, headers=case.headers, timestamp=t0_ms + i, on_delivery=delivered(i)
                )
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0 and errors == [], errors[:5]
    assert all(c is not None for c in coords)
    return [c for c in coords if c is not None]


def _ingest_progress(run: PipelineRun) -> dict[int, tuple[int, int]] | None:
    """Per raw partition, the ingest group's committed offset and the end offset (None while the
    group coordinator is still loading or moving: the caller asks again)."""
    topics = run.settings.topics
    consumer = make_consumer(run.settings, f"stormwatch-ingest-{topics.correlator_input}")
    try:
        partitions = [TopicPartition(topics.raw, p) for p in range(run.partitions)]
        progress = {}
        for tp in consumer.committed(partitions, timeout=10):
            _, high = consumer.get_watermark_offsets(TopicPartition(topics.raw, tp.partition), timeout=10)
            progress[tp.partition] = (tp.offset, high)
        return progress
    except KafkaException as exc:
        if is_transient(exc.args[0] if exc.args else None):
            return None
        raise
    finally:
        consumer.close()


def _joined(events: list[IncidentEvent]) -> set[str]:
    return {c.fingerprint for e in events for c in e.alerts if c.change is AlertChangeKind.JOINED}


@pytest.mark.kafka
@pytest.mark.slow
def test_malformed_records_all_land_in_the_dlq_and_good_alerts_still_flow(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    cases = corpus()
    good_fingerprints = {_parse(c).alerts[0].fingerprint for c in cases if c.good}
    run = PipelineRun(kafka_bootstrap, tmp_path, config_overrides={"ingest": LIMITS})
    topics = run.settings.topics
    started = time.monotonic()
    coords = _produce(kafka_bootstrap, topics.raw, cases, int(time.time() * 1000) - 900_000)
    produced_s = time.monotonic() - started
    ingest_metrics = free_port()
    run.start("ingest", "i1", ["--metrics-port", str(ingest_metrics)])
    run.start("correlate", "c1")
    try:
        started = time.monotonic()

        progress: list[dict[int, tuple[int, int]] | None] = [None]

        def caught_up() -> bool:
            run.assert_alive()
            progress[0] = _ingest_progress(run)
            # a raw partition the producer happened to leave empty has no commit to wait for
            return progress[0] is not None and all(
                done == end or end == 0 for done, end in progress[0].values()
            )

        try:
            wait_for("ingest to read the whole corpus", caught_up, CATCH_UP_S, interval_s=1.0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; raw partition: (committed, end) {progress[0]}") from None
        ingest_s = time.monotonic() - started

        def all_joined() -> bool:
            run.assert_alive()
            return good_fingerprints <= _joined(run.events())

        wait_for("every good alert to join an incident", all_joined, CATCH_UP_S, interval_s=1.0)
        run.assert_alive()
        dead_letter_total = metric(ingest_metrics, "stormwatch_dead_letters_total")
    finally:
        run.stop_all()

    by_coords: dict[tuple[int, int], list[tuple[bytes | None, dict[str, Any], dict[str, bytes]]]] = {}
    for msg in read_topic(run.settings, topics.dlq, timeout_s=30):
        dead = orjson.loads(msg.value() or b"{}")
        assert dead["source_topic"] == topics.raw
        source = (int(dead["source_partition"]), int(dead["source_offset"]))
        raw_headers = msg.headers() or []
        pairs = raw_headers.items() if isinstance(raw_headers, dict) else raw_headers
        headers = {name: value for name, value in pairs if isinstance(value, bytes)}
        by_coords.setdefault(source, []).append((msg.key(), dead, headers))

    bad = 0
    reasons: Counter[str] = Counter()
    for case, (partition, offset) in zip(cases, coords, strict=True):
        found = by_coords.pop((partition, offset), [])
        if case.good:
            assert found == [], f"a good record ({case.kind}) was dead-lettered: {found[0][1]['reason']}"
            continue
        bad += 1
        assert len(found) == 1, f"{case.kind} at {partition}/{offset}: {len(found)} dead letters"
        dlq_key, dead, headers = found[0]
        reason = dead["reason"]
        assert reason and dead["detail"], dead
        assert not case.expect or reason in case.expect, (case.kind, reason, dead["detail"])
        assert dlq_key == f"{topics.raw}/{partition}/{offset}".encode()
        assert headers.get("stormwatch-reason") == reason.encode()
        if dead["alert_index"] is None:  # the whole record is kept, byte for byte
            assert base64.b64decode(dead["original"]) == (case.value or b""), case.kind
        reasons[reason] += 1
    assert by_coords == {}, f"dead letters for records that are not in the corpus: {list(by_coords)[:5]}"
    assert bad >= 10_000
    assert dead_letter_total == bad
    print(
        f"bad input: {bad} bad records, {GOOD} good; produced in {produced_s:.1f}s, ingest caught up in "
        f"{ingest_s:.1f}s; dead letters by reason: {dict(sorted(reasons.items()))}"
    )
