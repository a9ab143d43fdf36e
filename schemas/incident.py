"""Incidents and their audit events.

The incident topic carries only ``IncidentEvent`` records; an ``Incident`` is what replaying them
produces (see streams.projection).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field, create_model

from stormwatch.schemas.alert import AlertStatus
from stormwatch.schemas.common import Contract, Severity


class IncidentState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    MITIGATING = "mitigating"
    RESOLVED = "resolved"
    CLOSED = "closed"


class IncidentEventType(StrEnum):
    OPENED = "opened"  # group_wait elapsed: a new incident with its first alerts
    UPDATED = "updated"  # coalesced alert changes (at most one per group_interval)
    SEVERITY_CHANGED = "severity_changed"
    ACKNOWLEDGED = "acknowledged"
    MITIGATING = "mitigating"
    RESOLVED = "resolved"
    REOPENED = "reopened"
    CLOSED = "closed"
    ASSIGNED = "assigned"
    ANNOTATED = "annotated"
    MERGED = "merged"  # this incident was merged into details.merged_into
    ABSORBED = "absorbed"  # another incident was merged into this one
    MITIGATION = "mitigation"  # a mitigation command changed status (details.command_id, details.status)
    REFUSED = "refused"  # an operator or agent request was refused; details.reason says why
    # Linking (issue #12): written by the partition that owns the incident, on the linker's or an
    # operator's command. The member gets LINKED/UNLINKED; the primary MEMBER_ADDED, UNLINKED
    # (details.member) and ROOT_CAUSE_CHANGED.
    LINKED = "linked"  # this incident is now a member of details.link_into (its primary)
    MEMBER_ADDED = "member_added"  # details.member joined this primary's incident
    UNLINKED = "unlinked"  # left details.linked_from; on a primary: details.member left it
    ROOT_CAUSE_CHANGED = "root_cause_changed"  # details.root_cause, details.previous, details.paths
    # The notifier (issue #13), through an operator command by "notifier": a notification was
    # delivered (details: receiver, integration, notification_id, attempt, latency_ms) or given up
    # after its retry budget (details.reason). The incident's state is left as it is.
    NOTIFIED = "notified"
    # What this incident's alerts muted by inhibition in one group_interval window (details: rule,
    # alerts, notifications, sample of label sets, window_start, window_end); snapshot.muted adds up.
    MUTED = "muted"
    NOTIFY_FAILED = "notify_failed"  # the notifier: a notification given up (see NOTIFIED above)


class AlertChangeKind(StrEnum):
    JOINED = "joined"  # first notification of a fingerprint in this incident
    UPDATED = "updated"  # severity or annotations changed
    RESOLVED = "resolved"  # explicitly resolved by the source
    EXPIRED = "expired"  # endsAt passed or not re-sent within resolve_timeout
    REFIRED = "refired"  # firing again after resolving
    SILENCED = "silenced"
    INHIBITED = "inhibited"
    FLAPPING = "flapping"  # updates for it are held back until it settles
    SETTLED = "settled"  # stopped flapping
    LATE = "late"  # arrived after the allowed lateness; applied at the current watermark


class AlertChange(Contract):
    """Why one alert's relation to the incident changed, and which rule decided it."""

    plain_json = True

    fingerprint: str
    change: AlertChangeKind
    status: AlertStatus
    severity: Severity
    at: datetime
    labels: dict[str, str] | None = None  # full label set, on JOINED only
    annotations: dict[str, str] | None = None  # on JOINED and UPDATED
    rule: str | None = None  # the silence id, inhibition rule or policy behind the change


class RootCauseInfo(Contract):
    """The root cause of a linked incident as the linker named it: kept on the primary only."""

    plain_json = True

    component: str = Field(description='Text id, as topology keys are written: {cluster="a"}database/orders')
    kind: str
    name: str
    first_firing_at: datetime
    decided_by: str = Field(
        description="What chose it among the candidates (only_candidate, first_firing, "
        "direct_dependents, id), or operator:NAME"
    )


class IncidentSnapshot(Contract):
    """The incident as it stands right after the event: lets notifiers act on one record."""

    plain_json = True

    state: IncidentState
    severity: Severity
    title: str
    group_key: str
    group_labels: dict[str, str]
    rule: str
    alert_count: int  # distinct fingerprints ever in the incident
    firing_count: int
    opened_at: datetime
    acknowledged_at: datetime | None = None
    mitigating_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    assignee: str | None = None
    reopen_count: int = 0
    deduplicated: int = 0  # re-sent notifications folded into this incident so far
    suppressed: int = 0  # silenced, inhibited or flapping notifications held back so far
    # Linking (issue #12); the defaults are what an unlinked incident (and every older record) has.
    linked_into: str | None = None  # the primary this incident is a member of
    members: list[str] = Field(default_factory=list)  # on a primary: every member, in joining order
    root_cause: RootCauseInfo | None = None  # on a primary: the root cause last decided
    muted: int = 0  # alerts its alerts muted by inhibition, as its `muted` events reported them


class IncidentEvent(Contract):
    """One immutable state change of one incident; the incident topic is the audit log."""

    plain_json = True

    event_id: str
    incident_id: str
    seq: int = Field(ge=1, description="Contiguous per incident, starting at 1")
    type: IncidentEventType
    from_state: IncidentState | None
    to_state: IncidentState
    at: datetime = Field(description="Event time (the correlator's watermark) of the decision")
    actor: str = Field(description="'correlator', 'operator:NAME', 'agent:WORKFLOW' ...")
    cause: str = Field(description="Why, in words")
    rule: str | None = Field(
        default=None, description="The correlation rule, silence, or policy that decided it"
    )
    alerts: list[AlertChange] = Field(default_factory=list)
    deduplicated: int = 0  # re-sends folded since the previous event
    suppressed: int = 0
    details: dict[str, Any] = Field(default_factory=dict)
    snapshot: IncidentSnapshot

    @classmethod
    def from_bytes_without_alerts(cls, data: bytes | str) -> IncidentEvent:
        """The event with ``alerts`` empty, its alert changes skipped unread (never validated).

        For readers that never look at them, such as the console's read model, which reads every
        event of the audit log: an event of 500 joined alerts (183 KB) took 1.8 ms and 1.2 MB of
        Python objects that only lived for the call to read whole, 0.33 ms and 8 KB this way.
        """
        head = _IncidentEventHead.model_validate_json(data)
        return cls.unchecked(**head.__dict__, alerts=[])


class _SkipsUnknownFields(Contract):
    model_config = ConfigDict(extra="ignore")


_HEAD_FIELDS: dict[str, Any] = {
    name: (f.annotation, f) for name, f in IncidentEvent.model_fields.items() if name != "alerts"
}
_IncidentEventHead = create_model(  # IncidentEvent's fields, its alert changes left out
    "_IncidentEventHead", __base__=_SkipsUnknownFields, **_HEAD_FIELDS
)


class _IncidentIdentity(Contract):
    """``incident_id`` on its own, so that ``Incident`` lists it first (see there)."""

    incident_id: str


class Incident(IncidentSnapshot, _IncidentIdentity):
    """An incident rebuilt from its events."""

    # The snapshot of its latest event plus what only the history tells. The identity base comes
    # last among the bases so its field comes first: the JSON keeps its order (schema_version,
    # incident_id, the snapshot's fields, then these) and schemas/json/incident.json its text.

    last_seq: int
    last_event_at: datetime
    fingerprints: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    merged_into: str | None = None
