"""One notification applied to its group's alert: dedup, mutes, flips, expiry and content changes.

This is the hot path (every alert of a storm passes here, most as plain re-sends): it allocates
nothing for a re-send and leaves incident decisions to streams.core.incidents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from stormwatch.schemas.incident import AlertChangeKind
from stormwatch.streams.core import wire
from stormwatch.streams.core.flapping import FlapDetector
from stormwatch.streams.core.groups import AlertState, GroupState, round_up
from stormwatch.streams.core.incidents import Incidents
from stormwatch.streams.core.muting import Mute, Suppression, SuppressionKind
from stormwatch.streams.core.rules import CorrelationRule
from stormwatch.streams.core.state import PartitionState
from stormwatch.streams.core.timers import EXPIRE, SETTLE

__all__ = ["AlertIntake"]


class AlertIntake:
    """Applies notifications to alert state; mutes are asked in order, the first reason wins."""

    def __init__(
        self,
        state: PartitionState,
        incidents: Incidents,
        mutes: Sequence[Mute],
        flap: FlapDetector,
        resolution_ms: int,
    ) -> None:
        self._state = state
        self._incidents = incidents
        self._mutes = tuple(mutes)
        self._flap = flap
        self._resolution = resolution_ms
        # Told of each inhibited notification (labels, t, whether its alert is newly muted).
        self.on_inhibited: Callable[[dict[str, str], int, bool], None] | None = None

    def apply(self, group: GroupState, note: wire.AlertNote, t: int) -> bool:
        """Apply one notification; True when the group's next timer may have moved earlier.

        A plain re-send (same status and content) only moves its alert's expiry, usually later; the
        group's timer then stays where it was, and should it fire before anything is due, the
        timers find nothing to do and reschedule the group (about 10% of the CPU time per alert).
        """
        rule = self._state.rule(group)
        fp = note.fingerprint
        alert = group.alerts.get(fp)
        suppression: Suppression | None = None
        for mute in self._mutes:
            suppression = mute.muted(note.labels, t)
            if suppression is not None:
                if suppression.kind is SuppressionKind.INHIBIT and self.on_inhibited is not None:
                    newly = note.firing and (alert is None or alert.suppressed != suppression)
                    self.on_inhibited(note.labels, t, newly)
                break
        seen = round_up(t, self._resolution)
        ends = round_up(note.ends_ms, self._resolution) if note.firing and note.ends_ms is not None else None
        if alert is None:
            return self._new_alert(group, note, t, rule, suppression, seen, ends)
        dirty = False
        earlier = False
        if alert.seen_ms != seen or alert.ends_ms != ends:
            before = alert.expiry_ms(rule.resolve_timeout_ms)
            alert.seen_ms, alert.ends_ms = seen, ends
            dirty = True
            if note.firing and alert.firing:
                expiry = alert.expiry_ms(rule.resolve_timeout_ms)
                group.push_timer(expiry, EXPIRE, fp, rule.resolve_timeout_ms, self._flap.settle_ms)
                earlier = expiry < before
        if suppression is not alert.suppressed and suppression != alert.suppressed:
            alert.suppressed = suppression
            dirty = earlier = True
            if suppression is not None and alert.member:
                group.mark(alert, suppression.change_kind, t, suppression.id)
        self._count_suppression(group, suppression)
        if note.firing != alert.firing:
            dirty = earlier = True
            self._flipped(group, alert, note.firing, t, rule)
        elif note.severity != alert.severity or not alert.same_annotations(note.annotations):
            alert.severity, alert.annotations = note.severity, note.annotations
            dirty = earlier = True
            if alert.member and not alert.flapping:
                group.mark(alert, AlertChangeKind.UPDATED, t)
        else:
            self._state.stats["deduplicated"] += 1
            if group.incident is not None and group.incident.active and alert.member:
                group.incident.pending_dedup += 1
                self._state.dirty_groups.add(group.gkhash)
        if dirty:
            self._state.touch_alert(group, alert)
        return earlier

    def _new_alert(
        self,
        group: GroupState,
        note: wire.AlertNote,
        t: int,
        rule: CorrelationRule,
        suppression: Suppression | None,
        seen: int,
        ends: int | None,
    ) -> bool:
        if not note.firing:
            self._state.stats["resolved_unknown"] += 1
            return True
        fp = note.fingerprint
        alert = AlertState(
            fp,
            note.labels,
            note.annotations,
            note.severity,
            True,
            note.starts_ms,
            seen,
            ends,
            suppressed=suppression,
            keyed=note.keyed,
        )
        group.alerts[fp] = alert
        if note.keyed:
            self._state.keyed_index[fp] = group.gkhash
        self._state.touch_alert(group, alert)
        self._count_suppression(group, suppression)
        self._incidents.firing_arrived(group, alert, t, rule)
        return True

    def _count_suppression(self, group: GroupState, suppression: Suppression | None) -> None:
        if suppression is None:
            return
        self._state.stats[suppression.stat] += 1
        if group.incident is not None and group.incident.active:
            group.incident.pending_suppressed += 1
            self._state.dirty_groups.add(group.gkhash)

    def _flipped(
        self, group: GroupState, alert: AlertState, firing: bool, t: int, rule: CorrelationRule
    ) -> None:
        """The alert changed between firing and resolved; while it flaps, the flip is held back."""
        alert.firing = firing
        flap = self._flap
        if flap.enabled:
            started = flap.record_flip(alert, t)
            if started is not None:
                self._state.stats["flapping_detected"] += 1
                if alert.member:
                    group.mark(alert, started.change_kind, t, started.id)
            if alert.flapping:
                group.push_timer(
                    alert.settle_ms(flap.settle_ms),
                    SETTLE,
                    alert.fingerprint,
                    rule.resolve_timeout_ms,
                    flap.settle_ms,
                )
        held = flap.muted(alert)
        if held is not None:
            self._state.stats[held.stat] += 1
        elif firing:
            self._incidents.firing_arrived(group, alert, t, rule)
        else:
            self._incidents.alert_resolved(group, alert, t, AlertChangeKind.RESOLVED)
