"""Digest of the audit log that seeded storms produce, with no broker: the refactoring oracle.

Each seeded scenario of ``stormwatch simulate`` goes through the ingest stage's transform and the
correlation engine exactly as the two stages run them (one raw partition, one correlator
partition, a commit after every batch, a crash-and-restore from the committed state half-way), and
the script prints, per scenario, how many incident events, dead letters and state records came
out and a SHA-256 over all their bytes. Run it before and after a change that must not alter
behaviour: equal digests mean byte-identical audit logs.

    python tools/audit_digest.py [--size N] [--seed S] > digests.txt
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from stormwatch.config import Settings
from stormwatch.loaders import load_rules
from stormwatch.schemas.commands import OperatorAction, OperatorCommand
from stormwatch.schemas.common import Severity
from stormwatch.schemas.matchers import Matcher
from stormwatch.schemas.silence import Silence
from stormwatch.simulate import FORMATS, MIN_SIZE, SCENARIOS, SIM_EPOCH_MS, generate
from stormwatch.streams.core.engine import PartitionEngine
from stormwatch.streams.ingest import IngestStage

BATCH = 50  # raw records per transaction, as a loaded ingest worker would take them
DRAIN_MS = 6 * 3600 * 1000  # after the storm, the clock runs on until every incident has closed
NO_WALL_CLOCK_MS = 100 * 365 * 24 * 3600 * 1000
"""ingest.max_future_ms here: the replay's wall clock stands at 0, so the records' own time is the
only clock (as for a worker reading a backlog)."""


@dataclass
class _Message:
    """The few accessors of confluent_kafka.Message the stages read."""

    _topic: str
    _partition: int
    _offset: int
    _ts: int
    _value: bytes
    _headers: list[tuple[str, bytes]] | None = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def key(self) -> bytes | None:
        return None


class _Replay:
    def __init__(self, settings: Settings, rules: Any) -> None:
        self.rules = rules
        self.clock = 0
        self.ingest = IngestStage(settings, rules, 1, wall_clock_ms=lambda: self.clock)
        self.ingest.tick_interval_ms = 0
        self.ingest._raw_owned[0] = -1
        self.ingest._raw_partition_count = 1
        self.raw_topic = settings.topics.raw
        self.input_topic = settings.topics.correlator_input
        self.commands_topic = settings.topics.commands
        self.engine = PartitionEngine(rules, 0, self.input_topic)
        self.log: list[bytes] = []
        self.state: dict[str, bytes] = {}
        self.committed = 0
        self.digest = hashlib.sha256()
        self.incidents: dict[str, None] = {}
        self.counts = {"events": 0, "dead_letters": 0, "state": 0, "feedback": 0, "ingest_dlq": 0}

    def feed(self, messages: list[_Message], eof: bool = False) -> None:
        eofs = {(self.raw_topic, 0)} if eof else set()
        for out in self.ingest.handle(messages, eofs).outputs:  # type: ignore[arg-type]
            if out.topic != self.input_topic:
                self.counts["ingest_dlq"] += 1
                self.digest.update(b"I" + out.value)
                continue
            self.log.append(out.value)
            self.engine.process(out.value, len(self.log) - 1)
        self.commit()

    def commit(self) -> None:
        out = self.engine.take_output()
        for event in out.events:
            self.counts["events"] += 1
            self.digest.update(b"E" + event.to_bytes())
            self.incidents.setdefault(event.incident_id, None)
        for dead in out.dead_letters:
            self.counts["dead_letters"] += 1
            self.digest.update(b"D" + dead.to_bytes())
        for key, command in out.feedback:
            self.counts["feedback"] += 1
            self.digest.update(b"F" + key.encode() + b"=" + command)
        for key, silence in out.silences:
            self.digest.update(b"L" + key.encode() + b"=" + (silence or b"<deleted>"))
        for key, value in sorted(out.state.items()):
            self.counts["state"] += 1
            self.digest.update(b"S" + key.encode() + b"=" + (value or b"<deleted>"))
            if value is None:
                self.state.pop(key, None)
            else:
                self.state[key] = value
        if out.commit_offset is not None:
            self.committed = out.commit_offset

    def crash_and_restore(self) -> None:
        engine = PartitionEngine(self.rules, 0, self.input_topic)
        engine.restore(dict(self.state))
        self.engine = engine
        for offset in range(self.committed, len(self.log)):
            engine.process(self.log[offset], offset)


def _operator_commands(replay: _Replay, at_ms: int, number: int) -> list[bytes]:
    """Acknowledge, assign, annotate, re-rate and resolve the first incidents; add and expire a
    silence: the operator paths of the engine, at a fixed point of the storm."""
    at = datetime.fromtimestamp(at_ms / 1000, tz=UTC)
    ids = list(replay.incidents)
    cmds: list[OperatorCommand] = []

    def cmd(action: OperatorAction, **kw: Any) -> None:
        cmds.append(OperatorCommand(command_id=f"c{number}-{len(cmds)}", action=action, by="op", at=at, **kw))

    if ids:
        cmd(OperatorAction.ACKNOWLEDGE, incident_id=ids[0])
        cmd(OperatorAction.ASSIGN, incident_id=ids[0], assignee="alice")
        cmd(OperatorAction.ANNOTATE, incident_id=ids[0], note="looking")
        cmd(OperatorAction.SET_SEVERITY, incident_id=ids[0], severity=Severity.CRITICAL)
        cmd(OperatorAction.ACKNOWLEDGE, incident_id="inc-zz-1")  # malformed: a dead letter
    if len(ids) > 2:
        cmd(OperatorAction.MERGE, incident_id=ids[2], merge_into=ids[1])
        cmd(OperatorAction.RESOLVE, incident_id=ids[1])
    silence = Silence(
        silence_id=f"s{number}",
        matchers=[Matcher.parse('severity=~"warning|info"')],
        starts_at=at,
        ends_at=at + timedelta(minutes=3),
        created_by="op",
    )
    cmd(OperatorAction.SILENCE_ADD, silence=silence)
    if number % 2:
        cmd(OperatorAction.SILENCE_EXPIRE, silence_id=f"s{number}")
    return [c.to_bytes() for c in cmds]


def digest_scenario(scenario: str, fmt: str, size: int, seed: int, rules: Any) -> str:
    replay = _Replay(Settings.model_validate({"ingest": {"max_future_ms": NO_WALL_CLOCK_MS}}), rules)
    records = list(generate(scenario, size=size, seed=seed, fmt=fmt))
    half = len(records) // 2
    offset = 0
    for start in range(0, len(records), BATCH):
        chunk = records[start : start + BATCH]
        messages = []
        for record in chunk:
            ts = SIM_EPOCH_MS + record.t_ms
            headers = [(k, v.encode()) for k, v in record.headers.items()] or None
            messages.append(_Message(replay.raw_topic, 0, offset, ts, record.value, headers))
            offset += 1
            replay.clock = ts
        if start <= half < start + BATCH:
            for n, value in enumerate(_operator_commands(replay, replay.clock, start)):
                messages.append(_Message(replay.commands_topic, 0, n, replay.clock, value))
        replay.feed(messages)
        if start <= half < start + BATCH:
            replay.crash_and_restore()
    end = replay.clock
    for step in range(1, 1 + DRAIN_MS // 60_000):
        replay.clock = end + step * 60_000
        replay.feed([], eof=True)
    c = replay.counts
    return (
        f"{scenario:12} {fmt:12} records={len(records):5} events={c['events']:5} "
        f"dlq={c['dead_letters'] + c['ingest_dlq']:3} state={c['state']:6} sha256={replay.digest.hexdigest()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=40, help="alerts per scenario (default 40)")
    parser.add_argument("--seed", type=int, default=7, help="simulation seed (default 7)")
    parser.add_argument("--rules", default="deploy/correlation_rules.yaml", help="correlation rules file")
    args = parser.parse_args(argv)
    rules = load_rules(args.rules)
    for scenario in SCENARIOS:
        for fmt in FORMATS:
            size = max(args.size, MIN_SIZE[scenario])
            print(digest_scenario(scenario, fmt, size, args.seed, rules), flush=True)
            print(f"  done {scenario}/{fmt}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
