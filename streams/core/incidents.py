"""The correlator's incident decisions for a group: open, join, reopen, resolve, update, close.

Alert changes (streams.core.alerts) and due timers (streams.core.timers) call in here; every
decision that changes an incident's state goes through the lifecycle table by way of the emitter.
"""

from __future__ import annotations

from stormwatch.schemas.incident import AlertChangeKind, IncidentEventType, IncidentState
from stormwatch.streams.core.emission import (
    CORRELATOR,
    Emitter,
    alert_change,
    incident_severity,
    incident_title,
)
from stormwatch.streams.core.groups import NO_CHANGES, AlertState, GroupState, IncidentRuntime
from stormwatch.streams.core.ids import incident_id_for
from stormwatch.streams.core.lifecycle import Action
from stormwatch.streams.core.rules import CorrelationRule
from stormwatch.streams.core.state import PartitionState
from stormwatch.streams.core.timers import EXPIRE, due_alert_timers

__all__ = ["Incidents"]


class Incidents:
    """Decides what happens to a group's incident when its alerts change or its timers fire."""

    def __init__(self, state: PartitionState, emitter: Emitter, settle_ms: int) -> None:
        self._state = state
        self._emitter = emitter
        self._settle_ms = settle_ms

    # ------------------------------------------------------------------ alert changes

    def firing_arrived(self, group: GroupState, alert: AlertState, t: int, rule: CorrelationRule) -> None:
        """A new or re-firing alert: join the open incident, reopen, or start group_wait."""
        group.push_timer(
            alert.expiry_ms(rule.resolve_timeout_ms),
            EXPIRE,
            alert.fingerprint,
            rule.resolve_timeout_ms,
            self._settle_ms,
        )
        inc = group.incident
        if inc is not None and inc.active:
            if not alert.member:
                alert.member = True
                reason = alert.suppressed
                if reason is None:
                    group.mark(alert, AlertChangeKind.JOINED, t)
                else:
                    group.mark(alert, reason.change_kind, t, reason.id)
            else:
                group.mark(alert, AlertChangeKind.REFIRED, t)
            # The change waits on the alert; the group's record is as it was (not re-written).
            self._state.touch_alert(group, alert)
            return
        if alert.suppressed is not None:
            return  # a suppressed alert alone never opens or reopens an incident
        if inc is not None and inc.state is IncidentState.RESOLVED:
            assert inc.resolved_ms is not None
            if t <= inc.resolved_ms + rule.reopen_window_ms:
                self._reopen(group, inc, alert, t, rule)
                return
            self.close(group, t, "superseded: the group fired again after the reopen window", rule.name)
        if group.pending_since is None:
            group.pending_since = t
            self._state.touch_group(group)

    def _reopen(
        self, group: GroupState, inc: IncidentRuntime, alert: AlertState, t: int, rule: CorrelationRule
    ) -> None:
        if not alert.member:
            alert.member = True
            group.mark(alert, AlertChangeKind.JOINED, t)
        else:
            group.mark(alert, AlertChangeKind.REFIRED, t)
        self._state.touch_alert(group, alert)
        inc.reopen_count += 1
        self._state.stats["incidents_reopened"] += 1
        self._emitter.transition(
            group,
            Action.REOPEN,
            t=t,
            actor=CORRELATOR,
            cause=f"alert {alert.labels.get('alertname', alert.fingerprint)} fired again within the "
            f"reopen window",
            rule=rule.name,
        )

    def alert_resolved(self, group: GroupState, alert: AlertState, t: int, kind: AlertChangeKind) -> None:
        """An alert stopped firing (resolved or expired); the last firing member resolves the incident."""
        alert.firing = False
        self._state.touch_alert(group, alert)
        inc = group.incident
        if not alert.member:
            self._state.drop_alert(group, alert.fingerprint)  # never reported: nothing to keep
            return
        group.mark(alert, kind, t)
        if inc is None or not inc.active:
            return
        if any(a.member and a.effectively_firing for a in group.alerts.values()):
            return
        self._state.stats["incidents_resolved"] += 1
        inc.resolved_ms = t
        self._emitter.observe("mttr", t - inc.opened_ms, group)
        self._emitter.transition(
            group,
            Action.AUTO_RESOLVE,
            t=t,
            actor=CORRELATOR,
            cause="all alerts of the incident are resolved",
            rule=group.rule,
        )

    # ------------------------------------------------------------------ timers

    def run_timers(self, group: GroupState, t: int, rule: CorrelationRule) -> None:
        """Everything due at ``t``: alert expiries and settling first (they can resolve the
        incident), then opening after group_wait, the lifetime cap, a flush or the final close."""
        self._run_alert_timers(group, t, rule)
        inc = group.incident
        if group.pending_since is not None and t >= group.pending_since + rule.group_wait_ms:
            self.open(group, t, rule)
            inc = group.incident
        if inc is None:
            return
        if inc.active and t >= inc.opened_ms + rule.max_lifetime_ms:
            self.close(group, t, f"maximum incident lifetime ({rule.max_lifetime_ms} ms) reached", rule.name)
            if any(a.firing and a.suppressed is None for a in group.alerts.values()):
                group.pending_since = t
                self._state.touch_group(group)
            return
        if inc.active and group.has_pending and t >= inc.last_emit_ms + rule.group_interval_ms:
            self.flush(group, t, rule)
        elif (
            inc.state is IncidentState.RESOLVED
            and inc.resolved_ms is not None
            and t >= inc.resolved_ms + rule.close_delay_ms
        ):
            self.close(group, t, "quiet period after resolution passed", rule.name)

    def _run_alert_timers(self, group: GroupState, t: int, rule: CorrelationRule) -> None:
        for due, kind, fp in due_alert_timers(group, t, rule.resolve_timeout_ms, self._settle_ms):
            alert = group.alerts[fp]
            if kind == EXPIRE:
                if alert.flapping:
                    alert.firing = False
                    self._state.touch_alert(group, alert)
                else:
                    self.alert_resolved(group, alert, due, AlertChangeKind.EXPIRED)
            else:
                alert.flapping = False
                self._state.touch_alert(group, alert)
                if alert.member:
                    group.mark(alert, AlertChangeKind.SETTLED, due)
                if not alert.firing:
                    self.alert_resolved(group, alert, due, AlertChangeKind.RESOLVED)

    def open(self, group: GroupState, t: int, rule: CorrelationRule) -> None:
        """group_wait is over: open an incident of the firing alerts, unless every one is muted."""
        assert group.pending_since is not None
        candidates = [a for a in group.alerts.values() if a.firing and not a.member]
        opened_ms = group.pending_since
        group.pending_since = None
        self._state.touch_group(group)
        if not any(a.suppressed is None for a in candidates):
            self._state.stats["groups_expired_before_open"] += 1
            return
        inc = IncidentRuntime(incident_id_for(group.gkhash, opened_ms), IncidentState.OPEN, opened_ms)
        inc.title = incident_title(group, candidates)
        group.incident = inc
        group.has_pending = False
        # An alert that arrived late while the group waited keeps its ``late`` mark: reported here.
        late = {a.fingerprint: c[1] for a in candidates for c in a.pending if c[0] == AlertChangeKind.LATE}
        for alert in candidates:
            alert.member = True
            alert.pending = NO_CHANGES
            self._state.touch_alert(group, alert)
        changes = []
        utc = self._emitter.utc
        for a in sorted(candidates, key=lambda a: a.fingerprint):
            reason = a.suppressed
            if reason is None:
                changes.append(alert_change(a, AlertChangeKind.JOINED, a.starts_ms, None, utc))
            else:
                changes.append(alert_change(a, reason.change_kind, a.starts_ms, reason.id, utc))
            if a.fingerprint in late:
                changes.append(alert_change(a, AlertChangeKind.LATE, late[a.fingerprint], None, utc))
        self._state.stats["incidents_opened"] += 1
        self._emitter.observe("open_delay", t - opened_ms, group)
        self._emitter.transition(
            group,
            Action.OPEN,
            t=t,
            actor=CORRELATOR,
            cause=f"{len(candidates)} alert(s) matched rule {rule.name} within group_wait",
            rule=rule.name,
            changes=changes,
        )

    def flush(self, group: GroupState, t: int, rule: CorrelationRule) -> None:
        """group_interval is over: report the coalesced alert changes (or the new severity)."""
        inc = group.incident
        assert inc is not None
        severity = incident_severity(group)
        kind = IncidentEventType.UPDATED
        cause = "alert changes coalesced over group_interval"
        if inc.reported_severity is not None and severity != inc.reported_severity:
            kind = IncidentEventType.SEVERITY_CHANGED
            cause = f"severity changed from {inc.reported_severity} to {severity}"
        self._emitter.emit(group, kind, t=t, actor=CORRELATOR, cause=cause, rule=rule.name)

    def close(
        self,
        group: GroupState,
        t: int,
        cause: str,
        rule: str | None,
        *,
        merge_into: str | None = None,
        actor: str = CORRELATOR,
    ) -> None:
        """Close the incident (or merge it into ``merge_into``); firing alerts stay for the next one."""
        inc = group.incident
        assert inc is not None
        inc.closed_ms = t
        self._state.stats["incidents_closed"] += 1
        self._emitter.transition(
            group,
            Action.MERGE if merge_into else Action.CLOSE,
            t=t,
            actor=actor,
            cause=cause,
            rule=rule,
            details={"merged_into": merge_into} if merge_into else {},
        )
        group.has_pending = False
        for alert in list(group.alerts.values()):
            alert.member = False
            alert.pending = NO_CHANGES
            if alert.firing:
                self._state.touch_alert(group, alert)
            else:
                self._state.drop_alert(group, alert.fingerprint)

    @staticmethod
    def collectable(group: GroupState) -> bool:
        """Nothing left to remember: no alerts, no group_wait running, no incident that is not closed."""
        inc = group.incident
        return (
            not group.alerts
            and group.pending_since is None
            and (inc is None or inc.state is IncidentState.CLOSED)
        )
