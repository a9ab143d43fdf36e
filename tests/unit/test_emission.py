"""Incident events: numbered per incident, carrying the pending alert changes once, state by the table."""

from __future__ import annotations

import pytest

from stormwatch.schemas.incident import AlertChangeKind, IncidentEventType, IncidentState
from stormwatch.streams.core.emission import Emitter, incident_title
from stormwatch.streams.core.groups import AlertState, GroupState, IncidentRuntime
from stormwatch.streams.core.lifecycle import Action
from stormwatch.streams.core.state import PartitionState
from tests.kit.engine import at, config


def setup() -> tuple[PartitionState, Emitter, GroupState, AlertState]:
    state = PartitionState(config(), 0, "test.input")
    group = GroupState("0123456789abcdef", "{}", "default", {"service": "db"})
    alert = AlertState("fp", {"alertname": "DBDown"}, {}, "error", True, at(0), at(0), None, member=True)
    group.alerts["fp"] = alert
    group.incident = IncidentRuntime("inc-0123456789abcdef-0", IncidentState.OPEN, at(0), seq=1)
    state.add_group(group)
    return state, Emitter(state), group, alert


def test_an_event_within_the_state_reports_the_pending_changes_once() -> None:
    state, emitter, group, alert = setup()
    group.mark(alert, AlertChangeKind.UPDATED, at(5))
    assert group.has_pending
    emitter.emit(group, IncidentEventType.UPDATED, t=at(10), actor="correlator", cause="coalesced")
    emitter.emit(group, IncidentEventType.ANNOTATED, t=at(11), actor="operator:alice", cause="note")
    first, second = state.out.events
    assert (first.seq, second.seq) == (2, 3)
    assert first.from_state is first.to_state is IncidentState.OPEN
    assert [c.change for c in first.alerts] == [AlertChangeKind.UPDATED] and second.alerts == []
    assert not group.has_pending and group.reports == 1
    # Reported: the group's record (written with every event) says so, the alert's is not re-written.
    assert "0123456789abcdef" in state.dirty_groups and not state.dirty_alerts
    assert first.snapshot.severity.value == "error" and state.stats["events_updated"] == 1


def test_a_transition_follows_the_lifecycle_table() -> None:
    state, emitter, group, _ = setup()
    emitter.transition(group, Action.ACKNOWLEDGE, t=at(10), actor="operator:alice", cause="ack", rule=None)
    (event,) = state.out.events
    assert (event.type, event.from_state, event.to_state) == (
        IncidentEventType.ACKNOWLEDGED,
        IncidentState.OPEN,
        IncidentState.ACKNOWLEDGED,
    )
    with pytest.raises(RuntimeError, match="illegal transition"):
        emitter.transition(group, Action.REOPEN, t=at(11), actor="correlator", cause="?", rule=None)


def test_the_title_names_the_alert_and_the_group_labels() -> None:
    _, _, group, alert = setup()
    other = AlertState("fp2", {"alertname": "DBSlow"}, {}, "error", True, 0, 0, None)
    assert incident_title(group, [alert]) == "DBDown (service=db)"
    assert incident_title(group, [alert, other]) == "DBDown +1 (service=db)"
