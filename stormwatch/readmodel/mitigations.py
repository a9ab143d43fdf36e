"""Mitigation steps as the audit log tells them: each command's latest status, per incident.

The agent's results reach the audit log as ``mitigation`` events (and the ``mitigating``
transition a started command causes), with ``details.command_id``, ``workflow``, ``step``,
``action``, ``status`` and, while a step waits for an operator, ``expires_at``. Folding those gives
the console its steps table and its pending approvals without reading the agent's own state: the
audit log is the one source the read model follows. Pure: the caller passes ``now_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from stormwatch.schemas.commands import CommandStatus
from stormwatch.schemas.common import ms_from_dt
from stormwatch.schemas.incident import IncidentEvent, IncidentEventType

__all__ = ["MitigationLog", "MitigationView"]

_STEP_EVENTS = frozenset({IncidentEventType.MITIGATION, IncidentEventType.MITIGATING})


@dataclass(slots=True)
class MitigationView:
    """One mitigation command of one incident, as of its latest audit event."""

    command_id: str
    incident_id: str
    workflow: str
    step: str
    action: str
    target: str | None
    attempt: int
    status: CommandStatus
    actor: str  # who made the latest change: the agent, an executor, operator:NAME
    reason: str | None
    requested_ms: int  # the event time of its first event
    updated_ms: int  # the event time of its latest event
    expires_ms: int | None  # awaiting approval: when the request expires
    seq: int  # the incident event that last changed it

    def awaiting(self, now_ms: int) -> bool:
        """Waiting for an operator's answer now (an expired request is the agent's to close)."""
        return self.status is CommandStatus.AWAITING_APPROVAL and (
            self.expires_ms is None or now_ms < self.expires_ms
        )


def _text(details: dict[str, Any], key: str) -> str | None:
    value = details.get(key)
    return value if isinstance(value, str) and value else None


def _expires_ms(details: dict[str, Any]) -> int | None:
    text = _text(details, "expires_at")
    if text is None:
        return None
    try:
        return ms_from_dt(datetime.fromisoformat(text))
    except ValueError:
        return None


@dataclass
class MitigationLog:
    """incident id -> command id -> its latest view, in the order the commands first appeared."""

    by_incident: dict[str, dict[str, MitigationView]] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)  # command id -> incident id

    def forget(self, incident_id: str) -> None:
        """Drop an incident's steps (the read model's retention of closed incidents)."""
        for command_id in self.by_incident.pop(incident_id, {}):
            self.owner.pop(command_id, None)

    def apply(self, event: IncidentEvent) -> None:
        if event.type not in _STEP_EVENTS:
            return
        d = event.details
        command_id = _text(d, "command_id")
        status_text = _text(d, "status")
        if command_id is None or status_text is None:
            return
        try:
            status = CommandStatus(status_text)
        except ValueError:
            return
        steps = self.by_incident.setdefault(event.incident_id, {})
        self.owner[command_id] = event.incident_id
        at_ms = ms_from_dt(event.at)
        known = steps.get(command_id)
        if known is not None and known.seq >= event.seq:
            return  # a re-delivery
        attempt = d.get("attempt")
        steps[command_id] = MitigationView(
            command_id=command_id,
            incident_id=event.incident_id,
            workflow=_text(d, "workflow") or "-",
            step=_text(d, "step") or "-",
            action=_text(d, "action") or "-",
            target=_text(d, "target"),
            attempt=attempt if isinstance(attempt, int) else 1,
            status=status,
            actor=event.actor,
            reason=_text(d, "reason"),
            requested_ms=known.requested_ms if known is not None else at_ms,
            updated_ms=at_ms,
            expires_ms=_expires_ms(d) if status is CommandStatus.AWAITING_APPROVAL else None,
            seq=event.seq,
        )

    def of(self, incident_ids: list[str]) -> list[MitigationView]:
        """The steps of these incidents (a primary and its members), oldest request first."""
        found = [v for iid in incident_ids for v in self.by_incident.get(iid, {}).values()]
        return sorted(found, key=lambda v: (v.requested_ms, v.incident_id, v.command_id))

    def awaiting(self, now_ms: int) -> list[MitigationView]:
        """Every step waiting for an operator's answer now, the soonest to expire first."""
        found = [v for steps in self.by_incident.values() for v in steps.values() if v.awaiting(now_ms)]
        return sorted(found, key=lambda v: (v.expires_ms or 0, v.command_id))

    def get(self, command_id: str) -> MitigationView | None:
        incident_id = self.owner.get(command_id)
        return None if incident_id is None else self.by_incident[incident_id].get(command_id)
