"""The agent tests' vocabulary against a real broker: incident events to publish, the mitigation
commands and results to read back, and an operator's approve/deny decision.

Incident events are built with the schemas and produced straight to the incident topic, so the
agent and executors can be tested without a correlator (tests/integration/test_agent.py in
threads, test_agent_processes.py as SIGKILLed processes).
"""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime

from confluent_kafka import Producer

from stormwatch.agents.core.approvals import Decision
from stormwatch.commands.agent import run_decision
from stormwatch.config import Settings
from stormwatch.kafka.client import read_topic
from stormwatch.schemas.commands import CommandResult, CommandStatus, MitigationCommand
from stormwatch.schemas.common import Severity
from stormwatch.schemas.incident import IncidentEvent, IncidentEventType, IncidentState
from tests.kit.events import build_event


def incident_id() -> str:
    """A unique, well-formed incident id (``inc-<16 hex>-<opened ms>``)."""
    return f"inc-{uuid.uuid4().hex[:16]}-1"


def incident_event(
    iid: str,
    seq: int,
    etype: IncidentEventType,
    state: IncidentState = IncidentState.OPEN,
    *,
    labels: dict[str, str],
    severity: Severity = Severity.CRITICAL,
    title: str = "Checkout is crash-looping",
) -> IncidentEvent:
    return build_event(
        iid,
        seq,
        etype,
        to_state=state,
        at=datetime.now(UTC),
        event_id=uuid.uuid4().hex,
        severity=severity,
        title=title,
        group_key="test:{}",
        group_labels=labels,
        rule="test",
    )


def produce(settings: Settings, topic: str, records: list[tuple[str, bytes]]) -> None:
    """Write keyed records with the settings' client options; fails unless all are delivered."""
    conf = {**settings.kafka.client_config(), "enable.idempotence": True, "linger.ms": 0, "log_level": 3}
    producer = Producer(conf)
    for key, value in records:
        producer.produce(topic, value, key)
    assert producer.flush(15) == 0


def publish_events(settings: Settings, events: list[IncidentEvent]) -> None:
    produce(settings, settings.topics.incidents, [(e.incident_id, e.to_bytes()) for e in events])


def results(settings: Settings) -> list[CommandResult]:
    return [
        CommandResult.from_bytes(m.value() or b"")
        for m in read_topic(settings, settings.topics.mitigation_results)
    ]


def commands(settings: Settings) -> list[MitigationCommand]:
    topic = settings.topics.mitigation_commands
    return [MitigationCommand.from_bytes(m.value() or b"") for m in read_topic(settings, topic)]


def by_status(found: list[CommandResult], status: CommandStatus) -> list[CommandResult]:
    return [r for r in found if r.status is status]


def decide(settings: Settings, command_id: str, decision: Decision, by: str, text: str) -> None:
    """What `stormwatch approve|deny COMMAND_ID --by ...` does; fails unless it exits 0."""
    args = argparse.Namespace(
        command_id=command_id,
        by=by,
        decision=decision,
        note=text if decision is Decision.APPROVE else None,
        reason=text if decision is Decision.DENY else None,
    )
    assert run_decision(args, settings) == 0
