"""Incident events: each state change or update of an incident becomes one numbered audit event.

The only writer of ``IncidentEvent``: it numbers events per incident, folds the pending alert
changes and counters into them and attaches the snapshot, so every event is built the same way
from keyword arguments, whoever decided it (correlator, operator, mitigation agent).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from stormwatch.schemas.alert import AlertStatus
from stormwatch.schemas.common import Severity, utc_from_ms
from stormwatch.schemas.incident import (
    AlertChange,
    AlertChangeKind,
    IncidentEvent,
    IncidentEventType,
    IncidentSnapshot,
    IncidentState,
    RootCauseInfo,
)
from stormwatch.streams.core.groups import NO_CHANGES, AlertState, GroupState, IncidentRuntime
from stormwatch.streams.core.ids import event_id_for
from stormwatch.streams.core.lifecycle import EVENT_TYPES, Action, transition
from stormwatch.streams.core.state import Observation, PartitionState
from stormwatch.streams.core.wire import BoundedMemo

__all__ = [
    "CORRELATOR",
    "Emitter",
    "alert_change",
    "incident_severity",
    "incident_title",
    "severity_of",
]

CORRELATOR = "correlator"
"""The actor of the correlator's own decisions."""

_FULL_CHANGES = frozenset(
    {AlertChangeKind.JOINED, AlertChangeKind.SILENCED, AlertChangeKind.INHIBITED, AlertChangeKind.LATE}
)
# Enum look-ups by value, as dicts: an event of a high-cardinality storm reports hundreds of new
# alerts, and EnumType.__call__ per change cost about 3% of the correlator (py-spy, issue #16).
_CHANGE_KINDS: dict[str, AlertChangeKind] = {k.value: k for k in AlertChangeKind}
_SEVERITIES: dict[str, Severity] = {s.value: s for s in Severity}


def severity_of(value: str) -> Severity:
    """``Severity(value)`` by a dict look-up; an unknown value still raises ValueError."""
    found = _SEVERITIES.get(value)
    return found if found is not None else Severity(value)


class Emitter:
    """Writes the events of the partition's incidents into the pending transaction."""

    def __init__(self, state: PartitionState) -> None:
        self._state = state
        # Called with each event as it is written (the linking gate's group notes), so what it
        # reads of the group is the state right at that event, whatever the transaction holds.
        self.on_event: Callable[[GroupState, IncidentEvent], None] | None = None
        self.utc: Callable[[int], datetime] = BoundedMemo(utc_from_ms)

    def transition(
        self,
        group: GroupState,
        action: Action,
        *,
        t: int,
        actor: str,
        cause: str,
        rule: str | None,
        changes: list[AlertChange] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Move the group's incident by ``action`` (the lifecycle table must allow it) and emit it."""
        inc = _incident(group)
        before = None if action is Action.OPEN else inc.state
        verdict = transition(before, action)
        if not verdict.allowed or verdict.to_state is None:  # internal decisions follow the table too
            raise RuntimeError(f"engine attempted an illegal transition: {verdict.reason}")
        inc.state = verdict.to_state
        if action is Action.REOPEN:
            inc.resolved_ms = None
        self.emit(
            group,
            EVENT_TYPES[action],
            t=t,
            actor=actor,
            cause=cause,
            rule=rule,
            states=(before, verdict.to_state),
            changes=changes,
            details=details,
        )

    def emit(
        self,
        group: GroupState,
        etype: IncidentEventType,
        *,
        t: int,
        actor: str,
        cause: str,
        rule: str | None = None,
        states: tuple[IncidentState | None, IncidentState] | None = None,
        changes: list[AlertChange] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """One event of the group's incident. ``states``: (from, to) of a transition; None for an
        event within the current state. ``changes``: None reports the pending alert changes."""
        inc = _incident(group)
        if changes is None:
            changes = self.collect_changes(group)
        inc.seq += 1
        inc.deduplicated += inc.pending_dedup
        inc.suppressed += inc.pending_suppressed
        dedup, suppressed = inc.pending_dedup, inc.pending_suppressed
        inc.pending_dedup = inc.pending_suppressed = 0
        inc.last_emit_ms = t
        severity = incident_severity(group)
        inc.reported_severity = severity
        from_state, to_state = states if states is not None else (inc.state, inc.state)
        event = IncidentEvent(
            event_id=event_id_for(inc.incident_id, inc.seq),
            incident_id=inc.incident_id,
            seq=inc.seq,
            type=etype,
            from_state=from_state,
            to_state=to_state,
            at=utc_from_ms(t),
            actor=actor,
            cause=cause,
            rule=rule,
            alerts=changes,
            deduplicated=dedup,
            suppressed=suppressed,
            details=details or {},
            snapshot=_snapshot(group, inc, severity),
        )
        self._state.out.events.append(event)
        if self.on_event is not None:
            self.on_event(group, event)
        self._state.dirty_groups.add(group.gkhash)
        self._state.stats["events_" + etype.value] += 1

    def collect_changes(self, group: GroupState) -> list[AlertChange]:
        """The unreported changes of the member alerts, in time order, now reported."""
        pending = [
            (c[1], a.fingerprint, i, a, c)
            for a in group.alerts.values()
            if a.member
            for i, c in enumerate(a.pending)
        ]
        pending.sort(key=lambda p: p[:3])
        utc = self.utc
        changes = [alert_change(a, _CHANGE_KINDS[c[0]], c[1], c[2], utc) for _, _, _, a, c in pending]
        group.has_pending = False
        if pending:
            group.reports += 1  # the group's record says so; its alerts' need not (AlertState.decode)
        for alert in {id(p[3]): p[3] for p in pending}.values():
            alert.pending = NO_CHANGES
        return changes

    def observe(self, name: str, elapsed_ms: int, group: GroupState) -> None:
        """A measurement (``mtta``, ``mttr``, ``mtta_notified``: opened to the first notification
        delivered) labelled with the incident's severity and rule."""
        self._state.out.observations.append(
            Observation(name, max(elapsed_ms, 0) / 1000.0, incident_severity(group), group.rule)
        )


def incident_severity(group: GroupState) -> str:
    """An operator's override, else the most severe firing member, else what was last reported."""
    inc = group.incident
    if inc is not None and inc.severity_override is not None:
        return inc.severity_override
    # the distinct values first: a group can hold thousands of members and a handful of severities
    firing = [
        severity_of(s)
        for s in {a.severity for a in group.alerts.values() if a.member and a.effectively_firing}
    ]
    if not firing:
        return inc.reported_severity if inc is not None and inc.reported_severity else Severity.WARNING.value
    return Severity.most_severe(firing).value


def incident_title(group: GroupState, alerts: list[AlertState]) -> str:
    """The alert name (and how many others) with the group's labels: what an operator reads first."""
    names = sorted({a.labels.get("alertname", "") for a in alerts} - {""})
    head = names[0] if len(names) == 1 else (f"{names[0]} +{len(names) - 1}" if names else group.rule)
    context = ", ".join(f"{k}={v}" for k, v in sorted(group.group_labels.items()) if k != "alertname")
    return f"{head} ({context})" if context else head


def alert_change(
    alert: AlertState,
    kind: AlertChangeKind,
    at: int,
    rule: str | None,
    utc: Callable[[int], datetime] = utc_from_ms,
) -> AlertChange:
    """One alert's change as an event reports it; labels only where the alert is new to the reader."""
    full = kind in _FULL_CHANGES
    return AlertChange.unchecked(  # the alert's state was validated on its way in
        fingerprint=alert.fingerprint,
        change=kind,
        status=AlertStatus.FIRING if alert.firing else AlertStatus.RESOLVED,
        severity=severity_of(alert.severity),
        at=utc(at),
        labels=alert.labels if full else None,
        annotations=alert.annotations if full or kind is AlertChangeKind.UPDATED else None,
        rule=rule,
    )


def _incident(group: GroupState) -> IncidentRuntime:
    inc = group.incident
    assert inc is not None, f"group {group.gkhash} has no incident to write an event for"
    return inc


def _snapshot(group: GroupState, inc: IncidentRuntime, severity: str) -> IncidentSnapshot:
    members = [a for a in group.alerts.values() if a.member]
    return IncidentSnapshot(
        state=inc.state,
        severity=Severity(severity),
        title=inc.title,
        group_key=group.group_key,
        group_labels=group.group_labels,
        rule=group.rule,
        alert_count=len(members),
        firing_count=sum(1 for a in members if a.effectively_firing),
        opened_at=utc_from_ms(inc.opened_ms),
        acknowledged_at=_dt(inc.acknowledged_ms),
        mitigating_at=_dt(inc.mitigating_ms),
        resolved_at=_dt(inc.resolved_ms)
        if inc.state in (IncidentState.RESOLVED, IncidentState.CLOSED)
        else None,
        closed_at=_dt(inc.closed_ms),
        assignee=inc.assignee,
        reopen_count=inc.reopen_count,
        deduplicated=inc.deduplicated,
        suppressed=inc.suppressed,
        linked_into=inc.linked_into,
        members=list(inc.members),
        root_cause=None if inc.root_cause is None else RootCauseInfo.model_validate(inc.root_cause),
        muted=inc.muted,
    )


def _dt(ms: int | None) -> datetime | None:
    return utc_from_ms(ms) if ms is not None else None
