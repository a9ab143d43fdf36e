"""Ingest routes operator commands and mitigation results by the incident id inside them (no broker).

The group hash in ``inc-<16 hex>-<opened ms>`` picks the correlator partition that owns the incident; a
record whose id has none cannot be routed anywhere, so it must become a dead letter
(``invalid_command``) that says what is wrong, never an exception or a silently dropped record.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from stormwatch.config import Settings
from stormwatch.kafka.txloop import Output
from stormwatch.schemas.commands import CommandResult, CommandStatus, OperatorAction, OperatorCommand
from stormwatch.schemas.dlq import DeadLetter, DeadLetterReason
from stormwatch.streams.core.rules import parse_rules
from stormwatch.streams.ingest import IngestStage
from tests.kit.messages import FakeMessage

AT = datetime(2027, 1, 1, tzinfo=UTC)
GOOD_ID = "inc-9f86d081884c7d65-1"
MALFORMED_IDS = [
    "inc-zz-1",  # the group hash is not 16 hex digits
    "inc-9f86d081884c7d65",  # no opening time
    "9f86d081884c7d65-1",  # no prefix
    "INC-9f86d081884c7d65-1",  # the prefix is lowercase
    "incident-42",
    "",
]
PARTITION, OFFSET = 2, 41


@pytest.fixture
def settings() -> Settings:
    return Settings.model_validate({})


@pytest.fixture
def stage(settings: Settings) -> IngestStage:
    return IngestStage(settings, parse_rules("{}"), correlator_partitions=3)


def command(incident_id: str | None) -> bytes:
    return OperatorCommand(
        command_id="cmd-1", action=OperatorAction.ACKNOWLEDGE, incident_id=incident_id, by="alice", at=AT
    ).to_bytes()


def result(incident_id: str) -> bytes:
    return CommandResult(
        command_id="cmd-7",
        incident_id=incident_id,
        workflow="restart",
        step="restart",
        action="exec",
        status=CommandStatus.SUCCEEDED,
        at=AT,
        actor="executor:x1",
    ).to_bytes()


def handle(stage: IngestStage, topic: str, value: bytes) -> list[Output]:
    message = FakeMessage(topic, value, partition=PARTITION, offset=OFFSET, timestamp_ms=1_800_000_000_000)
    return stage.handle([message], set()).outputs  # type: ignore[list-item]


def the_dead_letter(outputs: list[Output], settings: Settings, topic: str, value: bytes) -> DeadLetter:
    """The one output, a dead letter of ``value`` read at ``topic``/PARTITION/OFFSET."""
    [out] = outputs
    assert out.topic == settings.topics.dlq
    assert out.key == f"{topic}/{PARTITION}/{OFFSET}"
    assert out.headers == [("stormwatch-reason", b"invalid_command")]
    assert out.value is not None
    dead = DeadLetter.from_bytes(out.value)
    assert dead.reason is DeadLetterReason.INVALID_COMMAND
    assert (dead.source_topic, dead.source_partition, dead.source_offset) == (topic, PARTITION, OFFSET)
    assert base64.b64decode(dead.original) == value and dead.original_size == len(value)
    return dead


@pytest.mark.parametrize("incident_id", [*MALFORMED_IDS, None])
def test_a_command_with_a_malformed_incident_id_is_dead_lettered_with_the_expected_form(
    stage: IngestStage, settings: Settings, incident_id: str | None
) -> None:
    value = command(incident_id)
    dead = the_dead_letter(
        handle(stage, settings.topics.commands, value), settings, settings.topics.commands, value
    )
    assert dead.detail.startswith("acknowledge: incident_id ")
    assert repr(incident_id) in dead.detail
    assert "inc-<16 hex>-<opened ms>" in dead.detail  # how a routable id looks


@pytest.mark.parametrize("incident_id", MALFORMED_IDS)
def test_a_mitigation_result_with_a_malformed_incident_id_is_dead_lettered(
    stage: IngestStage, settings: Settings, incident_id: str
) -> None:
    topic = settings.topics.mitigation_results
    value = result(incident_id)
    dead = the_dead_letter(handle(stage, topic, value), settings, topic, value)
    assert "cmd-7" in dead.detail  # which result
    assert f"bad incident_id {incident_id!r}" in dead.detail


def test_well_formed_ids_are_routed_by_their_group_hash(stage: IngestStage, settings: Settings) -> None:
    """The control: the same records with a good id go to the owning correlator partition."""
    for topic, value in (
        (settings.topics.commands, command(GOOD_ID)),
        (settings.topics.mitigation_results, result(GOOD_ID)),
    ):
        [out] = handle(stage, topic, value)
        assert out.topic == settings.topics.correlator_input
        assert out.key == "9f86d081884c7d65"
