"""Integration test kit: real pipeline workers as subprocesses against a real broker.

Each ``PipelineRun`` owns its own correlator/incident topics, so several runs can read the same
raw topic and their results can be compared (uninterrupted vs. crashed, one worker vs. two).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import Producer

from stormwatch.config import Settings, load_settings
from stormwatch.kafka.client import read_topic
from stormwatch.kafka.topics import create_topics
from stormwatch.schemas.incident import IncidentEvent

ROOT = Path(__file__).resolve().parent.parent

TEST_RULES = """
defaults:
  group_wait: 5s
  group_interval: 10s
  resolve_timeout: 20s
  reopen_window: 5s
  close_after: 10s
allowed_lateness: 200ms
state_time_resolution: 1s
flap: {enabled: false}
"""


def topic_names(suffix: str, raw: str | None = None) -> dict[str, str]:
    names = {
        k: f"t.{k}.{suffix}"
        for k in (
            "raw",
            "dlq",
            "incidents",
            "commands",
            "mitigation_commands",
            "mitigation_results",
            "correlator_input",
            "correlator_state",
            "silences",
            "agent_state",
        )
    }
    if raw is not None:
        names["raw"] = raw
    return names


@dataclass
class PipelineRun:
    bootstrap: str
    workdir: Path
    raw_topic: str | None = None
    partitions: int = 3
    rules: str = TEST_RULES
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    # Extra TopicSettings fields (replication_factor, min_insync_replicas ...) and other config
    # sections (ingest, kafka ...) merged into the workers' YAML config.
    topics_overrides: dict[str, Any] = field(default_factory=dict)
    config_overrides: dict[str, Any] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    settings: Settings = field(init=False)
    config_path: Path = field(init=False)
    rules_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        topics: dict[str, Any] = {
            **topic_names(self.suffix, self.raw_topic),
            "partitions": self.partitions,
            **self.topics_overrides,
        }
        kafka = {**self.config_overrides.get("kafka", {}), "bootstrap_servers": self.bootstrap}
        config = {**self.config_overrides, "kafka": kafka, "topics": topics}
        self.config_path = self.workdir / f"config-{self.suffix}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.rules_path = self.workdir / f"rules-{self.suffix}.yaml"
        self.rules_path.write_text(self.rules)
        # KAFKA_BOOTSTRAP_SERVERS (the session broker) must not redirect a run on another cluster.
        self.settings = load_settings(self.config_path, kafka={"bootstrap_servers": self.bootstrap})
        create_topics(self.settings)

    # -- workers

    def start(self, stage: str, instance: str, extra_args: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        """Start a worker; ``extra_args`` go after the stage's own (e.g. ``--metrics-port``)."""
        name = f"{stage}:{instance}"
        log = open(self.workdir / f"{stage}-{instance}-{self.suffix}.log", "ab")  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stormwatch.cli",
                *(["-v"] if os.environ.get("STORMWATCH_TEST_WORKER_VERBOSE") else []),
                "--config",
                str(self.config_path),
                stage,
                "--rules",
                str(self.rules_path),
                "--instance-id",
                instance,
                *extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        self.procs[name] = proc
        return proc

    def kill(self, stage: str, instance: str) -> None:
        proc = self.procs.pop(f"{stage}:{instance}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()

    def assert_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                logs = "\n".join(p.read_text()[-3000:] for p in self.workdir.glob(f"*{self.suffix}.log"))
                raise AssertionError(f"worker {name} exited with {proc.returncode}:\n{logs}")

    # -- results

    def events(self) -> list[IncidentEvent]:
        return [
            IncidentEvent.from_bytes(m.value() or b"")
            for m in read_topic(self.settings, self.settings.topics.incidents)
        ]

    def dead_letters(self) -> list[dict[str, Any]]:
        return [orjson.loads(m.value() or b"{}") for m in read_topic(self.settings, self.settings.topics.dlq)]

    def wait_until(
        self, done: Callable[[list[IncidentEvent]], bool], timeout_s: float
    ) -> list[IncidentEvent]:
        deadline = time.monotonic() + timeout_s
        events: list[IncidentEvent] = []
        while time.monotonic() < deadline:
            self.assert_alive()
            events = self.events()
            if done(events):
                return events
            time.sleep(1.0)
        raise AssertionError(f"timed out after {timeout_s}s; {len(events)} events so far")


def storm_records(
    *, seed: int, t0_ms: int, groups: int, alerts_per_group: int, rounds: int, per_record: int, span_s: float
) -> list[tuple[int, bytes]]:
    """A deterministic storm in Prometheus' push format: every alert re-sent each round, resolved at the end.

    Returns (timestamp_ms, value) pairs; the timestamps become the records' CreateTime, so the raw
    log (and everything derived from it) is identical however often it is replayed.
    """
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


def incidents_by_id(events: list[IncidentEvent]) -> dict[str, list[IncidentEvent]]:
    out: dict[str, list[IncidentEvent]] = {}
    for e in events:
        out.setdefault(e.incident_id, []).append(e)
    for evs in out.values():
        evs.sort(key=lambda e: e.seq)
    return out


def canonical(events: list[IncidentEvent]) -> dict[str, list[bytes]]:
    """Per incident, its events in seq order: the thing two runs must agree on exactly."""
    return {iid: [e.to_bytes() for e in evs] for iid, evs in sorted(incidents_by_id(events).items())}


def check_audit_integrity(events: list[IncidentEvent]) -> None:
    seen: set[tuple[str, int]] = set()
    for e in events:
        key = (e.incident_id, e.seq)
        assert key not in seen, f"duplicated incident event {key}"
        seen.add(key)
    for iid, evs in incidents_by_id(events).items():
        assert [e.seq for e in evs] == list(range(1, len(evs) + 1)), f"gap in the events of {iid}"
