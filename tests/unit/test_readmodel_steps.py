"""The read model's mitigation steps and storm-suppression overview: pure folds of audit events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from stormwatch.readmodel.mitigations import MitigationLog
from stormwatch.readmodel.model import ReadModel
from stormwatch.readmodel.overview import overview
from stormwatch.schemas.commands import CommandStatus
from stormwatch.schemas.common import ms_from_dt
from stormwatch.schemas.incident import Incident, IncidentEvent, IncidentEventType, IncidentState
from tests.kit.events import build_event

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
MS0 = ms_from_dt(T0)
CMD = "c" * 32


def step(seq: int, status: str, minutes: float = 0, iid: str = "inc-1", **details: Any) -> IncidentEvent:
    return build_event(
        iid,
        seq,
        IncidentEventType.MITIGATION,
        IncidentState.OPEN,
        at=T0 + timedelta(minutes=minutes),
        actor=details.pop("actor", "agent:restart"),
        details={
            "command_id": CMD,
            "status": status,
            "workflow": "wf",
            "step": "s",
            "action": "exec",
            **details,
        },
    )


def test_a_step_keeps_its_latest_status_and_first_request_time() -> None:
    log = MitigationLog()
    expires = (T0 + timedelta(minutes=10)).isoformat()
    log.apply(step(2, "awaiting_approval", 0, expires_at=expires, target="db-1"))
    [view] = log.awaiting(MS0)
    assert (view.status, view.target, view.expires_ms) == (
        CommandStatus.AWAITING_APPROVAL,
        "db-1",
        MS0 + 600_000,
    )
    assert log.awaiting(MS0 + 600_000) == []  # expired: no longer an operator's to answer
    log.apply(step(3, "approved", 1, actor="operator:alice"))
    log.apply(step(2, "awaiting_approval", 0, expires_at=expires))  # a re-delivery changes nothing
    [view] = log.of(["inc-1"])
    assert (view.status, view.actor, view.requested_ms, view.updated_ms) == (
        CommandStatus.APPROVED,
        "operator:alice",
        MS0,
        MS0 + 60_000,
    )
    assert view.expires_ms is None and log.awaiting(MS0) == []
    assert log.get(CMD) is view and log.get("d" * 32) is None


def test_events_that_are_not_steps_are_ignored() -> None:
    log = MitigationLog()
    log.apply(build_event("inc-1", 1, at=T0))
    log.apply(step(2, "no-such-status"))
    ack = build_event("inc-1", 3, IncidentEventType.ACKNOWLEDGED, to_state=IncidentState.ACKNOWLEDGED, at=T0)
    log.apply(ack)
    assert log.by_incident == {}


def test_read_model_folds_steps_of_a_primary_and_its_members() -> None:
    model = ReadModel()
    for iid in ("inc-1", "inc-2"):
        model.apply_incident(build_event(iid, 1, at=T0).to_bytes())
    model.apply_incident(step(2, "requested", 1, iid="inc-2").to_bytes())
    assert [v.incident_id for v in model.steps(["inc-1", "inc-2"])] == ["inc-2"]
    assert model.steps(["inc-1"]) == []


def incident(minutes: float, **fields: Any) -> Incident:
    opened = T0 + timedelta(minutes=minutes)
    base: dict[str, Any] = {
        "incident_id": f"inc-{minutes}",
        "state": IncidentState.OPEN,
        "severity": "critical",
        "title": "t",
        "group_key": "g",
        "group_labels": {},
        "rule": "default",
        "alert_count": 10,
        "firing_count": 10,
        "opened_at": opened,
        "last_seq": 1,
        "last_event_at": opened,
    }
    return Incident.model_validate({**base, **fields})


def test_overview_counts_the_incidents_opened_in_the_window() -> None:
    at = T0 + timedelta(minutes=1)
    incidents = [
        incident(-120),  # before the window
        incident(0, deduplicated=80, suppressed=10, acknowledged_at=at, state=IncidentState.ACKNOWLEDGED),
        incident(
            5, alert_count=4, linked_into="inc-0", resolved_at=T0 + timedelta(minutes=15), state="resolved"
        ),
        incident(10, merged_into="inc-0", alert_count=7),  # its alerts moved to the survivor
    ]
    now = MS0 + 30 * 60_000
    view = overview(incidents, now, 60 * 60_000)
    assert (view.incidents, view.after_linking, view.distinct_alerts) == (3, 1, 14)
    assert view.notifications == 10 + 80 + 10 + 4
    assert view.ratio == 104.0
    assert view.open_now == 1
    assert (view.acknowledged, view.mtta_ms, view.mtta_p50_ms) == (1, 60_000, 60_000)
    assert (view.resolved, view.mttr_ms) == (1, 600_000)
    empty = overview(incidents, MS0 - 200 * 60_000, 15 * 60_000)
    assert empty.incidents == 0 and empty.ratio is None and empty.mtta_ms is None


def test_the_model_notes_where_each_incident_starts_in_the_log() -> None:
    model = ReadModel()
    model.apply_incident(build_event("inc-1", 1, at=T0).to_bytes(), 2, 40)
    model.apply_incident(step(2, "requested").to_bytes(), 2, 41)
    model.apply_incident(build_event("inc-2", 1, at=T0).to_bytes())  # where unknown: none noted
    assert model.origins == {"inc-1": (2, 40)}
