"""A notification's outcome on the incident's own audit log (issue #13): the notifier's
``notified`` command, recorded by the correlator as a ``notified`` or ``notify_failed`` event,
idempotent by command id, allowed after close, and the first delivery's ``mtta_notified``."""

from __future__ import annotations

from datetime import UTC, datetime

from stormwatch.agents.core.notify_config import parse_notifier_config
from stormwatch.agents.core.notify_outbox import NotifyRecord, OutboxItem, audit_command, delivery_log_record
from stormwatch.agents.core.notify_policy import NotifyPolicy, is_notification_outcome
from stormwatch.commands.incidents import render_timeline
from stormwatch.schemas.commands import OperatorAction, OperatorCommand
from stormwatch.schemas.common import ms_from_dt
from stormwatch.schemas.incident import IncidentEventType, IncidentState
from stormwatch.streams.core import wire
from stormwatch.streams.core.projection import IncidentProjection
from tests.kit.engine import Driver, at, config, note
from tests.kit.notify import IncidentWriter

FAST = """
defaults: {group_wait: 30s, group_interval: 5m, resolve_timeout: 5m, reopen_window: 10m, close_after: 15m}
allowed_lateness: 1s
state_time_resolution: 1s
"""


def opened(d: Driver, *names: str) -> list[str]:
    d.alerts([note({"alertname": name, "service": "db"}, at(0)) for name in names])
    d.tick(at(40))
    d.commit()
    return [e.incident_id for e in sorted(d.of_type("opened"), key=lambda e: e.snapshot.title)]


def outcome_command(
    incident_id: str, outcome: str, *, first: bool, at_ms: int, attempt: int = 1, detail: str = "HTTP 200"
) -> OperatorCommand:
    """The command the stage writes, built from a notification log record as the stage builds it."""
    item = OutboxItem(
        notification_id="n-1",
        receiver="oncall",
        integration=0,
        kind="webhook",
        seq=1,
        trigger="opened",
        repeat=0,
        decided_ms=at_ms - 40,
        event_ms=at_ms - 50,
        attempts=attempt,
    )
    entry = delivery_log_record(
        item, outcome, incident_id=incident_id, status=200, detail=detail, latency_s=0.012, at_ms=at_ms
    )  # type: ignore[arg-type]
    return audit_command(entry, first=first, integration_index=0, at_ms=at_ms)


def write(d: Driver, cmd: OperatorCommand) -> None:
    d.write(wire.encode_command(cmd.to_bytes()))


def test_a_delivery_is_a_notified_event_that_leaves_the_state_and_measures_mtta_once() -> None:
    d = Driver(config(FAST))
    (a,) = opened(d, "A")
    opened_at = ms_from_dt(d.of_type("opened")[0].snapshot.opened_at)
    delivered = outcome_command(a, "sent", first=True, at_ms=opened_at + 4_000)
    assert delivered.command_id == "notify:n-1:0:delivered" and delivered.by == "notifier"
    write(d, delivered)
    write(d, delivered)  # sent again after a crash: the correlator has seen its id
    write(
        d,
        outcome_command(a, "sent", first=False, at_ms=opened_at + 9_000).model_copy(
            update={"command_id": "notify:n-2:0:delivered"}
        ),
    )
    out = d.commit()
    notified = d.of_type("notified")
    assert len(notified) == 2
    first = notified[0]
    assert first.actor == "notifier" and first.from_state is first.to_state is IncidentState.OPEN
    assert first.cause == "notified oncall (webhook), attempt 1"
    assert {k: first.details[k] for k in ("receiver", "integration", "notification_id", "outcome")} == {
        "receiver": "oncall",
        "integration": "webhook",
        "notification_id": "n-1",
        "outcome": "delivered",
    }
    assert first.details["latency_ms"] == 12.0 and first.details["attempt"] == 1
    assert [(o.name, o.seconds) for o in out.observations if o.name == "mtta_notified"] == [
        ("mtta_notified", 4.0)
    ]
    assert d.engine.stats["commands_duplicate"] == 1


def test_a_notification_given_up_is_a_notify_failed_event_with_the_reason() -> None:
    d = Driver(config(FAST))
    (a,) = opened(d, "A")
    write(d, outcome_command(a, "given_up", first=False, at_ms=at(60), attempt=7, detail="HTTP 503: down"))
    out = d.commit()
    (failed,) = d.of_type("notify_failed")
    assert failed.details["reason"] == "HTTP 503: down" and failed.details["attempt"] == 7
    assert failed.cause == "notification to oncall (webhook) given up: HTTP 503: down"
    assert not [o for o in out.observations if o.name == "mtta_notified"]


def test_a_notification_is_recorded_on_a_closed_incident_and_dropped_for_a_collected_one() -> None:
    d = Driver(config(FAST))
    a, b = opened(d, "A", "B")
    d.command(OperatorAction.MERGE, a, merge_into=b, command_id="m1")  # closes a
    write(d, outcome_command(a, "sent", first=False, at_ms=at(70)))
    unknown = "inc-00000000000000aa-1800000000000"
    write(d, outcome_command(unknown, "sent", first=False, at_ms=at(70)))
    out = d.commit()
    events = [e.type.value for e in d.events if e.incident_id == a]
    assert events == ["opened", "merged", "notified"]
    assert d.events[-1].to_state is IncidentState.CLOSED
    assert out.dead_letters == [] and d.engine.stats["notified_unknown_incident"] == 1


def test_a_notified_command_without_a_receiver_is_refused() -> None:
    d = Driver(config(FAST))
    (a,) = opened(d, "A")
    d.command(OperatorAction.NOTIFIED, a, by="notifier", command_id="x")
    d.commit()
    (refused,) = d.of_type("refused")
    assert refused.cause == "notified needs details.receiver"


def test_the_notifier_ignores_its_own_outcomes_and_the_timeline_shows_them_readably() -> None:
    d = Driver(config(FAST))
    (a,) = opened(d, "A")
    write(d, outcome_command(a, "sent", first=True, at_ms=at(45)))
    write(d, outcome_command(a, "given_up", first=False, at_ms=at(46), detail="HTTP 400: bad"))
    d.commit()
    projection = IncidentProjection()
    for event in d.events:
        projection.apply(event)
    assert not projection.issues()
    events = projection.timeline(a)
    assert [e.type for e in events] == [
        IncidentEventType.OPENED,
        IncidentEventType.NOTIFIED,
        IncidentEventType.NOTIFY_FAILED,
    ]
    incident = projection.get(a)
    assert incident is not None and incident.state is IncidentState.OPEN
    text = render_timeline(incident, events, datetime(2027, 1, 1, tzinfo=UTC), max_width=400)
    assert "notified oncall (webhook), attempt 1 [receiver=oncall, integration=webhook, attempt=1" in text
    assert "latency_ms=12.0" in text and "command_id" not in text.split("notified oncall")[1]
    assert "given up: HTTP 400: bad [" in text
    # ... and the notifier reads them back without deciding anything
    assert all(is_notification_outcome(e) for e in events[1:])
    policy = NotifyPolicy(
        parse_notifier_config("route: {receiver: r, group_interval: 0s}\nreceivers: [{name: r}]\n", "n.yaml")
    )
    record = NotifyRecord.new(a)
    assert policy.on_event(record.state, events[1]).deliveries == ()
    assert record.state.last_seq == 0


def test_the_first_delivery_flag_survives_the_record_round_trip() -> None:
    record = NotifyRecord.new("inc-1")
    record.observe(IncidentWriter("inc-1").event(IncidentEventType.OPENED, 1_000), keep_alerts=10)
    assert NotifyRecord.from_bytes(record.to_bytes()).notified is False
    record.notified = True
    assert NotifyRecord.from_bytes(record.to_bytes()).notified is True


def test_an_event_type_without_a_notify_on_of_its_own_means_updated() -> None:
    from stormwatch.agents.core.notify_config import NotifyOn
    from stormwatch.agents.core.notify_policy import classify

    inc = IncidentWriter("inc-1")
    inc.event(IncidentEventType.OPENED, 1_000)
    for kind in IncidentEventType:
        if is_notification_outcome(inc.event(kind, 2_000)):
            continue
        assert isinstance(classify(inc.event(kind, 3_000), None), NotifyOn)  # never raises
    if hasattr(IncidentEventType, "MUTED"):
        assert classify(inc.event(IncidentEventType("muted"), 4_000), None) is NotifyOn.UPDATED
