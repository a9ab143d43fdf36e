"""The notifier stage's ``handle`` without a broker: incident events in (FakeMessage), a real
webhook receiver on loopback, and what one transaction would write (state, delivery log, DLQ)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from stormwatch.agents.core.notify_config import parse_notifier_config
from stormwatch.agents.core.notify_policy import LINK_WAIT_MARGIN_MS
from stormwatch.agents.notifier import NotifierStage, link_wait_ms
from stormwatch.agents.receivers import integrations_for
from stormwatch.config import Settings, load_settings
from stormwatch.kafka.txloop import BatchResult
from stormwatch.schemas.incident import IncidentEventType as E
from tests.kit.messages import FakeMessage
from tests.kit.notify import IncidentWriter, RecordingReceiver, recording_webhook, webhook_notifier_file

pytestmark = pytest.mark.timeout(30)

T0 = 1_764_700_000_000
RETRY = "    retry: {initial: 1s, max: 2s, budget: 5s}\n"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def hook() -> Iterator[tuple[str, RecordingReceiver]]:
    with recording_webhook() as served:
        yield served


def settings() -> Settings:
    return load_settings(notify={"send_timeout_ms": 2000})


def stage_for(text: str, clock: Clock) -> NotifierStage:
    config = parse_notifier_config(textwrap.dedent(text), "notify.yaml")
    integrations = {name: integrations_for(r) for name, r in config.receivers.items()}
    stage = NotifierStage(settings(), config, integrations, clock=clock, jitter=lambda: 0.0)
    stage.restore(0, {})
    return stage


def feed(stage: NotifierStage, *events: object, offset: int = 0) -> BatchResult:
    topic = stage.topics.incidents
    messages = [
        FakeMessage(topic, e.to_bytes(), offset=offset + n)  # type: ignore[attr-defined]
        for n, e in enumerate(events)
    ]
    return stage.handle(messages, {(topic, 0)})  # type: ignore[arg-type]


def log_records(
    stage: NotifierStage, result: BatchResult, topic: str | None = None
) -> list[dict[str, object]]:
    wanted = topic or stage.topics.notifications
    return [orjson.loads(o.value) for o in result.outputs if o.topic == wanted and o.value is not None]


def test_an_opened_incident_is_sent_once_and_recorded_in_the_same_batch(
    hook: tuple[str, RecordingReceiver],
) -> None:
    url, received = hook
    clock = Clock()
    stage = stage_for(webhook_notifier_file(url), clock)
    inc = IncidentWriter("inc-1")
    opened = inc.event(E.OPENED, T0)
    result = feed(stage, opened)
    (got,) = received.bodies()
    assert got.incident_id == "inc-1" and got.body["status"] == "firing" and got.body["version"] == "4"
    assert got.body["alerts"][0]["labels"]["alertname"] == "HighLatency"
    (entry,) = log_records(stage, result)
    assert entry["outcome"] == "sent" and entry["notification_id"] == got.notification_id
    assert result.offsets == {(stage.topics.incidents, 0): 1}
    (state,) = [o for o in result.outputs if o.topic == stage.topics.notify_state]
    assert state.key == "inc-1" and state.partition == 0 and state.value is not None
    # the same event again (a redelivery after a crash) sends nothing
    assert log_records(stage, feed(stage, opened)) == [] and len(received.bodies()) == 1
    # the end: resolved is sent, then closed removes the record (a tombstone)
    feed(stage, inc.event(E.RESOLVED, T0 + 1000), offset=1)
    closed = feed(stage, inc.event(E.CLOSED, T0 + 2000), offset=2)
    assert [b.body["status"] for b in received.bodies()] == ["firing", "resolved"]
    tombstones = [o for o in closed.outputs if o.topic == stage.topics.notify_state]
    assert [(o.key, o.value) for o in tombstones] == [("inc-1", None)]
    assert stage.records[0] == {}


def test_a_receiver_that_is_down_gets_the_messages_in_order_once_back(
    hook: tuple[str, RecordingReceiver],
) -> None:
    url, received = hook
    clock = Clock()
    stage = stage_for(webhook_notifier_file(url, retry=RETRY), clock)
    inc = IncidentWriter("inc-1")
    received.status = 503
    first = feed(stage, inc.event(E.OPENED, T0), inc.event(E.RESOLVED, T0 + 100))
    (failed,) = log_records(stage, first)
    assert failed["outcome"] == "failed" and failed["status"] == 503 and failed["attempt"] == 1
    assert stage.waiting == 2 and not stage.idle_work_due()
    clock.now += 500  # the first retry is due after initial/2 .. initial
    assert stage.idle_work_due()
    assert [e["outcome"] for e in log_records(stage, stage.handle([], set()))] == ["failed"]
    received.status = 200
    clock.now += 1000
    assert [e["outcome"] for e in log_records(stage, stage.handle([], set()))] == ["sent"]
    assert [e["outcome"] for e in log_records(stage, stage.handle([], set()))] == ["sent"]
    assert [b.body["status"] for b in received.bodies()] == ["firing", "resolved"]
    assert stage.waiting == 0


def test_a_notification_that_fails_past_its_budget_goes_to_the_dead_letter_topic(
    hook: tuple[str, RecordingReceiver],
) -> None:
    url, received = hook
    clock = Clock()
    stage = stage_for(webhook_notifier_file(url, retry=RETRY), clock)
    received.status = 503
    feed(stage, IncidentWriter("inc-1").event(E.OPENED, T0))
    dead: list[dict[str, object]] = []
    for _ in range(20):
        clock.now += 1000
        dead += log_records(stage, stage.handle([], set()), stage.topics.notifications_dlq)
    (letter,) = dead
    assert letter["outcome"] == "given_up" and letter["receiver"] == "hook" and letter["status"] == 503
    assert stage.waiting == 0 and received.bodies() == []


def test_a_final_failure_is_dead_lettered_at_once(hook: tuple[str, RecordingReceiver]) -> None:
    url, received = hook
    clock = Clock()
    stage = stage_for(webhook_notifier_file(url), clock)
    received.status = 400
    result = feed(stage, IncidentWriter("inc-1").event(E.OPENED, T0))
    assert [e["outcome"] for e in log_records(stage, result)] == ["given_up"]
    assert len(log_records(stage, result, stage.topics.notifications_dlq)) == 1


def test_the_outbox_survives_a_restart_and_is_sent_by_the_next_owner(
    hook: tuple[str, RecordingReceiver],
) -> None:
    url, received = hook
    clock = Clock()
    text = webhook_notifier_file(url, retry=RETRY)
    stage = stage_for(text, clock)
    received.status = 503
    result = feed(stage, IncidentWriter("inc-1").event(E.OPENED, T0))
    changelog = {o.key: o.value for o in result.outputs if o.topic == stage.topics.notify_state}
    received.status = 200
    again = stage_for(text, clock)
    again.restore(0, changelog)  # type: ignore[arg-type]
    assert again.waiting == 1
    clock.now += 2000
    assert [e["outcome"] for e in log_records(again, again.handle([], set()))] == ["sent"]
    assert len(received.bodies()) == 1


def test_a_rate_limited_receiver_sends_within_its_budget(hook: tuple[str, RecordingReceiver]) -> None:
    url, received = hook
    clock = Clock()
    limited = webhook_notifier_file(url, retry="    rate_limit: {per_second: 1, burst: 2}\n")
    stage = stage_for(limited, clock)
    events = [IncidentWriter(f"inc-{n}").event(E.OPENED, T0) for n in range(4)]
    feed(stage, *events)
    assert len(received.bodies()) == 2 and stage.waiting == 2
    clock.now += 1000
    stage.handle([], set())
    assert len(received.bodies()) == 3


def test_a_member_linked_before_its_first_message_notifies_nobody(
    hook: tuple[str, RecordingReceiver],
) -> None:
    url, received = hook
    clock = Clock()
    stage = stage_for(webhook_notifier_file(url), clock)
    member = IncidentWriter("inc-member", linked_into="inc-primary")
    primary = IncidentWriter("inc-primary")
    feed(stage, member.event(E.OPENED, T0), primary.event(E.OPENED, T0))
    assert [b.incident_id for b in received.bodies()] == ["inc-primary"]


def test_items_of_integrations_gone_from_the_file_are_dropped_on_restore(
    hook: tuple[str, RecordingReceiver],
) -> None:
    url, received = hook
    clock = Clock()
    stage = stage_for(webhook_notifier_file(url, retry=RETRY), clock)
    received.status = 503
    result = feed(stage, IncidentWriter("inc-1").event(E.OPENED, T0))
    changelog = {o.key: o.value for o in result.outputs if o.topic == stage.topics.notify_state}
    other = (
        webhook_notifier_file(url)
        .replace("name: hook", "name: other")
        .replace("receiver: hook", "receiver: other")
    )
    again = stage_for(other, clock)
    again.restore(0, changelog)  # type: ignore[arg-type]
    assert again.waiting == 0
    rewritten = [o for o in again.handle([], set()).outputs if o.topic == again.topics.notify_state]
    assert [o.key for o in rewritten] == ["inc-1"]


def test_deliveries_are_counted_by_receiver_integration_and_outcome(
    hook: tuple[str, RecordingReceiver],
) -> None:
    from prometheus_client import REGISTRY

    from stormwatch.agents.metrics import notifier_metrics

    url, received = hook
    clock = Clock()
    config = parse_notifier_config(
        webhook_notifier_file(url, retry=RETRY).replace("hook\n", "metered\n"), "n.yaml"
    )
    integrations = {name: integrations_for(r) for name, r in config.receivers.items()}
    stage = NotifierStage(
        settings(), config, integrations, notifier_metrics(), clock=clock, jitter=lambda: 0.0
    )
    stage.restore(0, {})

    def count(outcome: str) -> float:
        labels = {"receiver": "metered", "integration": "webhook", "outcome": outcome}
        return REGISTRY.get_sample_value("stormwatch_notifications_total", labels) or 0.0

    received.status = 503
    feed(stage, IncidentWriter("inc-1").event(E.OPENED, T0 - 1500))
    assert count("failed") == 1 and REGISTRY.get_sample_value("stormwatch_notification_queue_depth") == 1
    received.status = 200
    clock.now += 1000
    stage.handle([], set())
    assert count("sent") == 1 and REGISTRY.get_sample_value("stormwatch_notification_queue_depth") == 0
    latency = REGISTRY.get_sample_value(
        "stormwatch_notification_delivery_seconds_sum", {"receiver": "metered", "integration": "webhook"}
    )
    assert latency == pytest.approx(2.5)  # from the event's time to the accepted retry


def test_each_final_outcome_is_a_notified_command_and_the_echo_notifies_nobody(
    hook: tuple[str, RecordingReceiver],
) -> None:
    from stormwatch.schemas.commands import OperatorCommand

    url, received = hook
    clock = Clock()
    stage = stage_for(webhook_notifier_file(url), clock)
    inc = IncidentWriter("inc-1")
    result = feed(stage, inc.event(E.OPENED, T0), inc.event(E.RESOLVED, T0 + 100))
    result2 = stage.handle([], set())  # the resolved message: next in the incident's lane
    commands = [
        OperatorCommand.from_bytes(o.value)
        for r in (result, result2)
        for o in r.outputs
        if o.topic == stage.topics.commands and o.value is not None
    ]
    assert [(c.action.value, c.by, c.incident_id) for c in commands] == [
        ("notified", "notifier", "inc-1")
    ] * 2
    first, second = (c.details for c in commands)
    assert first["outcome"] == "delivered" and first["first"] is True and "first" not in second
    assert first["receiver"] == "hook" and first["integration"] == "webhook" and first["trigger"] == "opened"
    assert commands[0].command_id == f"notify:{received.ids()[0]}:0:delivered"
    # the correlator's `notified` event comes back on the input: no message about it
    echo = inc.event(E.NOTIFIED, T0 + 200, receiver="hook", outcome="delivered")
    after = feed(stage, echo, offset=2)
    assert len(received.bodies()) == 2 and log_records(stage, after) == []
    assert after.offsets == {(stage.topics.incidents, 0): 3}


def test_a_linked_member_told_it_opened_gets_its_resolve_after_the_group_interval(
    hook: tuple[str, RecordingReceiver],
) -> None:
    # The demo's sequence: opened 08:33:03 and notified, linked :13, resolved :27 within the 1m
    # group_interval, closed 08:35:27, read in the batch whose timer is due: "resolved" goes out.
    url, received = hook
    clock = Clock()
    stage = stage_for(webhook_notifier_file(url, group_interval="1m"), clock)
    inc = IncidentWriter("inc-1")
    clock.now = T0 + 3_000
    feed(stage, inc.event(E.OPENED, clock.now))
    assert [b.body["status"] for b in received.bodies()] == ["firing"]
    inc.linked_into = "inc-primary"
    clock.now = T0 + 13_000
    feed(stage, inc.event(E.LINKED, clock.now, link_into="inc-primary"), offset=1)
    clock.now = T0 + 27_000
    feed(stage, inc.event(E.RESOLVED, clock.now), offset=2)
    assert len(received.bodies()) == 1 and stage.records[0]["inc-1"].state.next_due_ms == T0 + 63_000
    clock.now = T0 + 147_000
    closed = feed(stage, inc.event(E.CLOSED, clock.now), offset=3)
    assert [b.body["status"] for b in received.bodies()] == ["firing", "resolved"]
    assert [e["trigger"] for e in log_records(stage, closed)] == ["resolved"]
    tombstones = [o for o in closed.outputs if o.topic == stage.topics.notify_state]
    assert [(o.key, o.value) for o in tombstones] == [("inc-1", None)]


def test_with_a_topology_a_member_linked_at_opening_never_pages_and_its_primary_does_once(
    hook: tuple[str, RecordingReceiver], tmp_path: Path
) -> None:
    url, received = hook
    topology = tmp_path / "topology.yaml"
    topology.write_text("link: {delay: 8s}\n", encoding="utf-8")
    config = parse_notifier_config(textwrap.dedent(webhook_notifier_file(url, group_interval="1m")))
    integrations = {name: integrations_for(r) for name, r in config.receivers.items()}
    clock = Clock()
    with_topology = load_settings(
        notify={"send_timeout_ms": 2000}, correlator={"topology_file": str(topology)}
    )
    assert link_wait_ms(with_topology, config) == 8_000 + LINK_WAIT_MARGIN_MS
    assert link_wait_ms(settings(), config) == 0
    stage = NotifierStage(with_topology, config, integrations, clock=clock, jitter=lambda: 0.0)
    stage.restore(0, {})
    primary, member, alone = (
        IncidentWriter("inc-p"),
        IncidentWriter("inc-m", service="db"),
        IncidentWriter("inc-a"),
    )
    feed(stage, primary.event(E.OPENED, T0), member.event(E.OPENED, T0 + 1_000), alone.event(E.OPENED, T0))
    assert received.bodies() == [] and stage.policy.link_wait_ms == 13_000
    clock.now = T0 + 8_000  # the linker's decisions, link.delay after each opening
    feed(stage, primary.event(E.ROOT_CAUSE_CHANGED, T0 + 8_000), offset=3)
    assert [b.incident_id for b in received.bodies()] == ["inc-p"]  # not held longer than needed
    member.linked_into = "inc-p"
    feed(stage, member.event(E.LINKED, T0 + 9_000, link_into="inc-p"), offset=4)
    clock.now = T0 + 20_000
    assert stage.idle_work_due()
    stage.handle([], set())  # the wait ends: the group the linker said nothing of goes
    assert sorted(b.incident_id for b in received.bodies()) == ["inc-a", "inc-p"]
    clock.now = T0 + 10 * 60_000
    stage.handle([], set())
    assert sorted(b.incident_id for b in received.bodies()) == ["inc-a", "inc-p"]  # the member: never
