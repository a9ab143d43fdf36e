"""Incident events built by hand, for the tests that fold, score or read an audit log.

One builder with the defaults of an incident just opened by the correlator; a test names only the
fields it is about (the snapshot's among them), so a field added to the schema is added here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from stormwatch.schemas.common import Severity
from stormwatch.schemas.incident import (
    AlertChange,
    IncidentEvent,
    IncidentEventType,
    IncidentSnapshot,
    IncidentState,
)


def build_event(
    incident_id: str,
    seq: int = 1,
    etype: IncidentEventType = IncidentEventType.OPENED,
    from_state: IncidentState | None = None,
    to_state: IncidentState = IncidentState.OPEN,
    *,
    at: datetime,
    event_id: str | None = None,
    actor: str = "correlator",
    cause: str = "test",
    alerts: Sequence[AlertChange] = (),
    details: dict[str, Any] | None = None,
    **snapshot: Any,
) -> IncidentEvent:
    """The event ``seq`` of ``incident_id`` (id ``{incident_id}-{seq}`` unless ``event_id``) at
    ``at``. Its snapshot is the incident right after it, in ``to_state``, opened at ``at``, one
    firing alert, unless ``snapshot`` says otherwise (any IncidentSnapshot field)."""
    fields: dict[str, Any] = {
        "state": to_state,
        "severity": Severity.CRITICAL,
        "title": "t",
        "group_key": "g",
        "group_labels": {},
        "rule": "default",
        "alert_count": 1,
        "firing_count": 1,
        "opened_at": at,
        **snapshot,
    }
    return IncidentEvent(
        event_id=event_id or f"{incident_id}-{seq}",
        incident_id=incident_id,
        seq=seq,
        type=etype,
        from_state=from_state,
        to_state=to_state,
        at=at,
        actor=actor,
        cause=cause,
        alerts=list(alerts),
        details=details or {},
        snapshot=IncidentSnapshot(**fields),
    )
