"""A real pipeline: `stormwatch ingest`, `correlate` (and `link`) processes against a real broker.

Each ``PipelineRun`` owns its own topics (named from the settings model, tests.kit.topics), so
several runs can read the same raw topic and their results can be compared (uninterrupted vs.
crashed, one worker vs. two): ``canonical`` is what two runs must agree on exactly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from stormwatch.config import Settings, load_settings
from stormwatch.kafka.client import read_topic
from stormwatch.kafka.topics import create_topics
from stormwatch.schemas.incident import IncidentEvent
from tests.kit.topics import topic_names
from tests.kit.waits import wait_for
from tests.kit.workers import Workers

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


READ_TIMEOUT_S = 30.0


@dataclass
class PipelineRun:
    """One pipeline's config, rules and topics (created at once), and the workers started on it."""

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
    workers: Workers = field(init=False, default_factory=Workers)
    settings: Settings = field(init=False)
    config_path: Path = field(init=False)
    rules_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        raw = {} if self.raw_topic is None else {"raw": self.raw_topic}
        topics: dict[str, Any] = {
            **topic_names(self.suffix, **raw),
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

    @property
    def procs(self) -> dict[str, subprocess.Popen[bytes]]:
        """The running workers by ``stage:instance``; a test may take one out to end it itself."""
        return self.workers.procs

    # -- workers

    def _cli(self, stage: str, *args: str) -> list[str]:
        """`stormwatch --config CONFIG STAGE ARGS...` in this interpreter."""
        verbose = ["-v"] if os.environ.get("STORMWATCH_TEST_WORKER_VERBOSE") else []
        return [
            sys.executable,
            "-m",
            "stormwatch.cli",
            *verbose,
            "--config",
            str(self.config_path),
            stage,
            *args,
        ]

    def start(
        self, stage: str, instance: str, extra_args: Sequence[str] = (), prefix: Sequence[str] = ()
    ) -> subprocess.Popen[bytes]:
        """Start a worker; ``extra_args`` go after the stage's own (e.g. ``--metrics-port``).
        ``prefix`` goes before the whole command (``ip netns exec NS``: tests.kit.netfaults)."""
        rules = ["--rules", str(self.rules_path)] if stage != "link" else []
        argv = [*prefix, *self._cli(stage, *rules, "--instance-id", instance, *extra_args)]
        log = self.workdir / f"{stage}-{instance}-{self.suffix}.log"
        return self.workers.start(f"{stage}:{instance}", argv, log)

    def start_gateway(self, token_file: Path, port: int) -> subprocess.Popen[bytes]:
        """`stormwatch gateway` on ``port`` with the bearer token in ``token_file``."""
        argv = self._cli("gateway", "--port", str(port), "--bearer-token-file", str(token_file))
        return self.workers.start("gateway:g1", argv, self.workdir / f"gateway-{self.suffix}.log")

    def kill(self, stage: str, instance: str) -> None:
        self.workers.kill(f"{stage}:{instance}")

    def stop_all(self) -> None:
        self.workers.stop()

    def assert_alive(self) -> None:
        self.workers.check_alive()

    # -- results

    # Reads allow Kafka 30 s to answer (read_topic's default is 10): CI's two cores, busy with a
    # storm and a second test worker, have taken longer to answer a watermark request.
    def events(self) -> list[IncidentEvent]:
        return [
            IncidentEvent.from_bytes(m.value() or b"")
            for m in read_topic(self.settings, self.settings.topics.incidents, timeout_s=READ_TIMEOUT_S)
        ]

    def dead_letters(self) -> list[dict[str, Any]]:
        dlq = read_topic(self.settings, self.settings.topics.dlq, timeout_s=READ_TIMEOUT_S)
        return [orjson.loads(m.value() or b"{}") for m in dlq]

    def wait_until(
        self, done: Callable[[list[IncidentEvent]], bool], timeout_s: float
    ) -> list[IncidentEvent]:
        """The audit log once ``done`` holds for it; fails at once when a worker has exited."""
        seen: list[IncidentEvent] = []

        def finished() -> tuple[list[IncidentEvent]] | None:
            seen[:] = self.events()
            return (list(seen),) if done(seen) else None

        try:
            (events,) = wait_for(
                "the incident events", finished, timeout_s, interval_s=1.0, alive=self.assert_alive
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {len(seen)} events so far") from None
        return events


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


def assert_same_audit(events: list[IncidentEvent], reference: list[IncidentEvent], *, incidents: int) -> None:
    """The crash suite's oracle: both logs sound, ``incidents`` of them in the reference, and equal
    incident by incident. A failure names the incidents that differ and, for each, the first event
    that differs and its differing fields (a whole-log diff is too long to read in CI's output)."""
    check_audit_integrity(events)
    check_audit_integrity(reference)
    got, expected = incidents_by_id(events), incidents_by_id(reference)
    assert len(expected) == incidents, f"the reference run has {len(expected)} incidents, not {incidents}"
    if canonical(events) == canonical(reference):
        return
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    lines = [f"incidents missing {missing}, extra {extra}"]
    for iid in sorted(set(got) & set(expected)):
        mine, theirs = got[iid], expected[iid]
        if [e.to_bytes() for e in mine] == [e.to_bytes() for e in theirs]:
            continue
        lines.append(f"{iid}: {len(mine)} events in the faulted run, {len(theirs)} in the reference")
        for a, b in zip(mine, theirs, strict=False):
            if a.to_bytes() != b.to_bytes():
                lines.append(f"  first difference at seq {a.seq} ({a.type.value} / {b.type.value}):")
                lines.extend(
                    f"    {line}"
                    for line in _field_differences(orjson.loads(a.to_bytes()), orjson.loads(b.to_bytes()))
                )
                break
    raise AssertionError("the faulted run's audit log differs from the reference's:\n" + "\n".join(lines))


def _field_differences(a: object, b: object, path: str = "") -> list[str]:
    """``path: faulted != reference`` for each leaf that differs (objects and lists walked; of a
    list, its lengths and first differing item)."""
    out: list[str] = []
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            out.extend(_field_differences(a.get(key), b.get(key), f"{path}.{key}" if path else str(key)))
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} items != {len(b)} items")
        first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
        if first is not None:
            out.extend(_field_differences(a[first], b[first], f"{path}[{first}]"))
    elif a != b:
        out.append(f"{path}: {a!r:.200} != {b!r:.200}")
    return out


def check_audit_integrity(events: list[IncidentEvent]) -> None:
    """No incident event twice, and every incident's seqs run 1, 2, 3 ... without a gap."""
    seen: set[tuple[str, int]] = set()
    for e in events:
        key = (e.incident_id, e.seq)
        assert key not in seen, f"duplicated incident event {key}"
        seen.add(key)
    for iid, evs in incidents_by_id(events).items():
        assert [e.seq for e in evs] == list(range(1, len(evs) + 1)), f"gap in the events of {iid}"
