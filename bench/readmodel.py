"""The read model at scale: memory and catch-up time with N active alerts (docs/performance.md).

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 .venv/bin/python -m stormwatch.bench.readmodel --alerts 100000

Writes a synthetic but exact correlator state changelog (GroupState / AlertState records as the
correlator writes them: eight labels and three annotations per alert, 50 alerts per group, every
alert firing), one OPENED audit event per group and a few silences to fresh topics; then, in a
child process of its own (so the parent's records do not blur its memory), starts the gateway's
ReadModelFollower, waits until it has caught up, and prints: catch-up time, the resident memory the
model added, and how long the API's queries take on it. A pure pass without Kafka (tracemalloc)
gives the model's own size. The topics are deleted at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import xxhash

from stormwatch.bench.procstat import machine, sample
from stormwatch.config import Settings, TopicSettings, load_settings
from stormwatch.kafka.client import make_producer
from stormwatch.kafka.topics import create_topics, delete_topics
from stormwatch.readmodel.follower import ReadModelFollower
from stormwatch.readmodel.model import AlertQuery, ReadModel
from stormwatch.schemas.common import Severity, utc_from_ms
from stormwatch.schemas.incident import IncidentEvent, IncidentEventType, IncidentSnapshot, IncidentState
from stormwatch.schemas.matchers import Matcher
from stormwatch.schemas.silence import Silence
from stormwatch.streams.core.groups import AlertState, GroupState, IncidentRuntime

PER_GROUP = 50
SILENCES = 20


def records(alerts: int, partitions: int, now_ms: int) -> Iterator[tuple[str, int, str, bytes]]:
    """(kind, partition, key, value) of the synthetic topics, in the order a correlator writes them."""
    groups = max(1, alerts // PER_GROUP)
    for g in range(groups):
        partition = g % partitions
        service = f"svc-{g:05d}"
        labels_g = {"alertname": f"Alert{g % 40}", "cluster": f"c{g % 4}", "service": service}
        gkhash = xxhash.xxh3_64_hexdigest(service.encode())
        incident_id = f"inc-{gkhash}-1"
        group = GroupState(
            gkhash=gkhash,
            group_key="{" + ",".join(f'{k}="{v}"' for k, v in labels_g.items()) + "}",
            rule="default",
            group_labels=labels_g,
            incident=IncidentRuntime(incident_id=incident_id, state=IncidentState.OPEN, opened_ms=now_ms),
        )
        yield "state", partition, f"g/{gkhash}", group.encode_meta()
        for i in range(min(PER_GROUP, alerts - g * PER_GROUP)):
            labels = {
                **labels_g,
                "namespace": f"ns-{g % 25}",
                "job": "node-exporter",
                "severity": "warning",
                "instance": f"10.{g % 250}.{i}.{g % 7}:9100",
                "pod": f"{service}-{i:03d}-7f9c{g % 1000:03d}",
            }
            annotations = {
                "summary": f"{labels['alertname']} on {labels['instance']}",
                "description": f"{service} instance {i} has been above its threshold for 5 minutes",
                "runbook_url": f"https://runbooks.example/{labels['alertname']}",
            }
            fp = xxhash.xxh3_64_hexdigest(json.dumps(labels, sort_keys=True).encode())
            alert = AlertState(
                fp, labels, annotations, "warning", True, now_ms - 600_000, now_ms, None, member=True
            )
            yield "state", partition, f"a/{gkhash}/{fp}", alert.encode()
        snapshot = IncidentSnapshot(
            state=IncidentState.OPEN,
            severity=Severity.WARNING,
            title=f"{labels_g['alertname']} on {service}",
            group_key=group.group_key,
            group_labels=labels_g,
            rule="default",
            alert_count=PER_GROUP,
            firing_count=PER_GROUP,
            opened_at=utc_from_ms(now_ms),
        )
        event = IncidentEvent(
            event_id=f"{incident_id}-1",
            incident_id=incident_id,
            seq=1,
            type=IncidentEventType.OPENED,
            from_state=None,
            to_state=IncidentState.OPEN,
            at=utc_from_ms(now_ms),
            actor="correlator",
            cause="group_wait elapsed",
            snapshot=snapshot,
        )
        yield "incident", partition, incident_id, event.to_bytes()
    start = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
    for s in range(SILENCES):
        silence = Silence(
            silence_id=f"silence-{s}",
            matchers=[Matcher.parse(f"alertname=Alert{s}"), Matcher.parse("cluster=c1")],
            starts_at=start - timedelta(minutes=1),
            ends_at=start + timedelta(hours=2),
            created_by="bench",
            comment="bench",
        )
        yield "silence", 0, silence.silence_id, silence.to_bytes()


def produce(settings: Settings, alerts: int, now_ms: int) -> int:
    overrides: dict[str, Any] = {"linger.ms": 20, "batch.num.messages": 10000}
    producer = make_producer(settings, **overrides)
    topics = {
        "state": settings.topics.correlator_state,
        "incident": settings.topics.incidents,
        "silence": settings.topics.silences,
    }
    count = 0
    for kind, partition, key, value in records(alerts, settings.topics.partitions, now_ms):
        while True:
            try:
                producer.produce(topics[kind], value=value, key=key, partition=partition)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
        if count % 10000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left:
        raise SystemExit(f"{left} records were not acknowledged")
    return count


def pure_pass(alerts: int, partitions: int, now_ms: int) -> dict[str, Any]:
    """The model's own size (tracemalloc) and apply time without Kafka."""
    model = ReadModel()
    started = time.perf_counter()
    for kind, partition, key, value in records(alerts, partitions, now_ms):
        if kind == "state":
            model.apply_state(partition, key, value)
    apply_s = time.perf_counter() - started
    del model
    gc.collect()
    tracemalloc.start()
    model = ReadModel()
    for kind, partition, key, value in records(alerts, partitions, now_ms):
        if kind == "state":
            model.apply_state(partition, key, value)
        elif kind == "incident":
            model.apply_incident(value)
        else:
            model.apply_silence(key, value, now_ms)
    gc.collect()
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "model_bytes": size,
        "bytes_per_alert": size / max(alerts, 1),
        "records_generated_and_applied_s": apply_s,
    }


def follow(settings: Settings, now_ms: int) -> dict[str, Any]:
    """Run in the child: catch up, then time the API's queries."""
    gc.collect()
    before = sample(os.getpid())
    follower = ReadModelFollower(settings)
    started = time.monotonic()
    follower.start()
    if not follower.wait_ready(600):
        raise SystemExit(f"the read model did not catch up: {follower.reason}")
    wall = time.monotonic() - started
    gc.collect()
    after = sample(os.getpid())
    query_now = now_ms + 1000

    def timed(name: str, run: Any) -> tuple[str, float, float, int]:
        """Wall and CPU seconds (this thread's: the follower's thread is idle by now)."""
        t0, c0 = time.perf_counter(), time.thread_time()
        n = run()
        return name, time.perf_counter() - t0, time.thread_time() - c0, n

    queries = [
        timed(
            "all alerts (GET /api/v2/alerts)",
            lambda: follower.read(lambda m: m.alerts(AlertQuery(), query_now).total),
        ),
        timed(
            "alerts, filter alertname=Alert7",
            lambda: follower.read(
                lambda m: m.alerts(AlertQuery(matchers=(Matcher.parse("alertname=Alert7"),)), query_now).total
            ),
        ),
        timed(
            "alerts, silenced=false, first page of 100",
            lambda: follower.read(lambda m: m.alerts(AlertQuery(silenced=False, limit=100), query_now).total),
        ),
        timed(
            "groups (GET /api/v2/alerts/groups)",
            lambda: follower.read(lambda m: len(m.alert_groups(AlertQuery(), query_now))),
        ),
        timed("silences (GET /api/v2/silences)", lambda: follower.read(lambda m: len(m.silences(query_now)))),
    ]
    counts = follower.read(lambda m: m.counts())
    follower.stop()
    return {
        "catch_up_s": follower.catch_up_seconds,
        "ready_after_s": wall,
        "records": follower.caught_up_records,
        "rss_before": before.rss,
        "rss_after": after.rss,
        "rss_added": after.rss - before.rss,
        "cpu_s": after.cpu_s - before.cpu_s,
        "counts": counts,
        "queries": [{"query": q, "seconds": s, "cpu_seconds": c, "answer": n} for q, s, c, n in queries],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stormwatch.bench.readmodel", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--alerts", type=int, default=100_000, help="active alerts (default 100000)")
    parser.add_argument("--partitions", type=int, default=6, help="partitions of each topic (default 6)")
    parser.add_argument(
        "--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--output", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--child", metavar="SUFFIX", help=argparse.SUPPRESS)
    parser.add_argument("--now-ms", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    def settings_for(suffix: str) -> Settings:
        return load_settings(
            kafka={"bootstrap_servers": args.bootstrap_servers},
            topics=TopicSettings.with_prefix("bench.readmodel", f".{suffix}", partitions=args.partitions),
        )

    if args.child:
        print(json.dumps(follow(settings_for(args.child), args.now_ms)))
        return 0

    load_before = os.getloadavg()
    now_ms = int(time.time() * 1000)
    suffix = uuid.uuid4().hex[:8]
    settings = settings_for(suffix)
    create_topics(settings, timeout_s=30)
    try:
        t0 = time.perf_counter()
        produced = produce(settings, args.alerts, now_ms)
        produce_s = time.perf_counter() - t0
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "stormwatch.bench.readmodel",
                "--child",
                suffix,
                "--now-ms",
                str(now_ms),
                "--partitions",
                str(args.partitions),
                "--bootstrap-servers",
                args.bootstrap_servers,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        followed = json.loads(child.stdout)
    finally:
        delete_topics(settings, settings.topics.names().values(), timeout_s=30)
    pure = pure_pass(args.alerts, args.partitions, now_ms)
    result = {
        "alerts": args.alerts,
        "records": produced,
        "produce_s": produce_s,
        **followed,
        "pure": pure,
        "load": {"before": load_before, "after": os.getloadavg()},
        "machine": machine(),
    }
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    mib = 1024 * 1024
    print(f"read model with {args.alerts} active alerts ({produced} records, {args.partitions} partitions)")
    print(
        f"  catch-up from Kafka     {followed['catch_up_s']:.2f} s ({followed['records'] / followed['catch_up_s']:.0f} records/s, {followed['cpu_s']:.1f} CPU s)"
    )
    print(
        f"  resident memory added   {followed['rss_added'] / mib:.0f} MiB ({followed['rss_added'] / args.alerts:.0f} bytes/alert)"
    )
    print(
        f"  model size (tracemalloc) {pure['model_bytes'] / mib:.0f} MiB ({pure['bytes_per_alert']:.0f} bytes/alert)"
    )
    print(f"  counts                  {followed['counts']}")
    print(f"  load average            {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for q in followed["queries"]:
        print(
            f"  {q['query']:<42} {q['seconds'] * 1000:8.0f} ms wall {q['cpu_seconds'] * 1000:8.0f} ms CPU"
            f"  ({q['answer']})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
