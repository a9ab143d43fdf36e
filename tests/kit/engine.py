"""Drive a PartitionEngine with hand-made input records (no broker).

Shared by the engine unit tests, the property tests and the hot-path benchmark tests; it plays the
role of the ingest stage (routing alerts, writing ticks) and of the correlator runner (collecting
outputs and state).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stormwatch.schemas.commands import OperatorAction, OperatorCommand
from stormwatch.schemas.common import utc_from_ms
from stormwatch.schemas.fingerprint import key_fingerprint, label_fingerprint
from stormwatch.schemas.incident import IncidentEvent
from stormwatch.streams.core import wire
from stormwatch.streams.core.engine import EngineOutput, PartitionEngine
from stormwatch.streams.core.routing import Router
from stormwatch.streams.core.rules import RulesConfig, parse_rules

T0 = 1_800_000_000_000  # a fixed epoch-ms origin for tests

SOURCE = "alerts.raw/0"


def config(yaml_text: str = "") -> RulesConfig:
    return parse_rules(yaml_text or "{}")


def note(
    labels: dict[str, str],
    at: int,
    *,
    firing: bool = True,
    severity: str = "warning",
    annotations: dict[str, str] | None = None,
    ends: int | None = None,
    key: str | None = None,
) -> wire.AlertNote:
    return wire.AlertNote(
        fingerprint=key_fingerprint("pagerduty", key) if key else label_fingerprint(labels),
        firing=firing,
        severity=severity,
        labels=labels,
        annotations=annotations or {},
        starts_ms=at,
        ends_ms=ends,
        event_ms=at,
        source="test",
        keyed=key is not None,
    )


@dataclass
class Driver:
    """Feeds one engine and keeps everything it wrote, like the correlator runner does."""

    rules: RulesConfig
    partition: int = 0
    engine: PartitionEngine = field(init=False)
    router: Router = field(init=False)
    log: list[bytes] = field(default_factory=list)  # the input log written so far
    events: list[IncidentEvent] = field(default_factory=list)
    outputs: list[EngineOutput] = field(default_factory=list)
    state: dict[str, bytes] = field(default_factory=dict)
    committed: int = 0

    def __post_init__(self) -> None:
        self.engine = PartitionEngine(self.rules, self.partition, "test.input")
        self.router = Router(self.rules)

    # -- writing input (the ingest role)

    def alerts(self, notes: list[wire.AlertNote]) -> None:
        buckets: dict[str, tuple[Any, list[wire.AlertNote]]] = {}
        for n in notes:
            route = self.router.route(n.labels, n.fingerprint)
            buckets.setdefault(route.gkhash, (route, []))[1].append(n)
            for rule in self.rules.inhibit_rules:
                if all(m.matches(n.labels) for m in rule.source_match):
                    self.write(wire.encode_inhibitor(rule.name, n, route.gkhash))
        for gkhash, (route, group_notes) in buckets.items():
            self.write(
                wire.encode_alert_batch(
                    gkhash, route.group_key, route.rule.name, route.group_labels, group_notes
                )
            )

    def by_key(self, n: wire.AlertNote) -> None:
        self.write(wire.encode_by_key(n))

    def tick(self, at: int, source: str = SOURCE, sources: int = 1) -> None:
        self.write(wire.encode_tick(source, at, sources))

    def command(self, action: OperatorAction, incident_id: str | None = None, **kwargs: Any) -> None:
        cmd = OperatorCommand(
            command_id=kwargs.pop("command_id", f"cmd-{len(self.log)}"),
            action=action,
            incident_id=incident_id,
            by=kwargs.pop("by", "alice"),
            at=kwargs.pop("at", datetime(2027, 1, 1, tzinfo=UTC)),
            **kwargs,
        )
        self.write(wire.encode_command(cmd.to_bytes()))

    def write(self, value: bytes) -> None:
        self.log.append(value)
        self.engine.process(value, len(self.log) - 1)

    # -- the runner role

    def commit(self) -> EngineOutput:
        out = self.engine.take_output()
        self.outputs.append(out)
        for _gkhash, value in out.cross:  # one partition: what it sends another group comes back
            self.write(value)
        self.events.extend(out.events)
        for key, value in out.state.items():
            if value is None:
                self.state.pop(key, None)
            else:
                self.state[key] = value
        if out.commit_offset is not None:
            self.committed = out.commit_offset
        return out

    def restart(self) -> None:
        """Simulate a crash after the last commit: rebuild from state, replay from the committed offset."""
        engine = PartitionEngine(self.rules, self.partition, "test.input")
        engine.restore(dict(self.state))
        self.engine = engine
        for offset in range(self.committed, len(self.log)):
            engine.process(self.log[offset], offset)

    def of_type(self, kind: str) -> list[IncidentEvent]:
        return [e for e in self.events if e.type.value == kind]


def at(seconds: float) -> int:
    return T0 + int(seconds * 1000)


def iso(ms: int) -> datetime:
    return utc_from_ms(ms)


__all__ = ["T0", "Driver", "at", "config", "iso", "note"]
