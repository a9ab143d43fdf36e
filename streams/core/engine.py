"""The correlation engine: a pure, deterministic function of one correlator input partition.

No I/O and no wall clock: time only moves when a tick record says so (see streams.wire). The
runner (streams.correlator) feeds records in log order and writes what ``take_output`` returns in
one Kafka transaction: incident events, dead letters, feedback commands and state changes.

Ordering contract: alerts wait in a reorder buffer until ``watermark - allowed_lateness`` passes
their event time; then alerts and timers are applied in event-time order (alerts first on ties),
so any arrival order within the allowed lateness gives the same incidents and the same events.
Alerts are ordered by ``AlertNote.sort_key``; the rare notifications whose keys are equal (the
same alert, content and time, e.g. from two Prometheus replicas) are applied in log order.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import orjson
import xxhash

from stormwatch.schemas.alert import AlertStatus
from stormwatch.schemas.commands import CommandResult, CommandStatus, OperatorAction, OperatorCommand
from stormwatch.schemas.common import Severity, ms_from_dt, utc_from_ms
from stormwatch.schemas.dlq import DeadLetter, DeadLetterReason
from stormwatch.schemas.incident import (
    AlertChange,
    AlertChangeKind,
    IncidentEvent,
    IncidentEventType,
    IncidentSnapshot,
    IncidentState,
)
from stormwatch.schemas.silence import Silence
from stormwatch.streams.core import wire
from stormwatch.streams.core.groups import (
    EXPIRE,
    NO_CHANGES,
    SETTLE,
    AlertState,
    GroupState,
    IncidentRuntime,
    round_up,
)
from stormwatch.streams.core.lifecycle import Action, transition
from stormwatch.streams.core.rules import CorrelationRule, LatePolicy, RulesConfig

PARTITION_KEY = "p"
CORRELATOR = "correlator"


def incident_id_for(gkhash: str, opened_ms: int) -> str:
    return f"inc-{gkhash}-{opened_ms}"


def gkhash_of_incident(incident_id: str) -> str | None:
    parts = incident_id.split("-")
    if len(parts) == 3 and parts[0] == "inc" and len(parts[1]) == 16:
        return parts[1]
    return None


def event_id_for(incident_id: str, seq: int) -> str:
    return xxhash.xxh3_128_hexdigest(f"{incident_id}:{seq}".encode())


@dataclass(slots=True)
class Observation:
    """A measurement for the metrics layer (MTTA, MTTR, decision latency)."""

    name: str
    seconds: float
    severity: str
    rule: str


@dataclass(slots=True)
class EngineOutput:
    events: list[IncidentEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    feedback: list[tuple[str, bytes]] = field(
        default_factory=list
    )  # (key, OperatorCommand) for commands topic
    silences: list[tuple[str, bytes | None]] = field(default_factory=list)  # compacted silences topic
    state: dict[str, bytes | None] = field(default_factory=dict)
    observations: list[Observation] = field(default_factory=list)
    commit_offset: int | None = None  # next input offset to commit for this partition


@dataclass(slots=True, eq=False)
class _Buffered:
    key: tuple[Any, ...]
    offset: int
    kind: str  # "a" alert, "i" inhibitor
    note: wire.AlertNote
    route: tuple[str, str, str, dict[str, str]] | None  # gkhash, group_key, rule, labels
    inhibit_rule: str | None = None


_BUFFER_ORDER = attrgetter("key")


@dataclass(slots=True)
class _Inhibitor:
    labels: dict[str, str]
    firing: bool
    expiry_ms: int


class PartitionEngine:
    """Correlation state and decisions for one partition of the correlator input."""

    def __init__(self, config: RulesConfig, partition: int, source_topic: str = "") -> None:
        self.config = config
        self.partition = partition
        self.source_topic = source_topic
        self.rules: dict[str, CorrelationRule] = {r.name: r for r in config.rules}
        self.default_rule = config.rules[-1]
        self.lateness = config.allowed_lateness_ms
        self.resolution = config.state_time_resolution_ms
        self.watermarks: dict[str, int] = {}
        self.expected_sources = 1
        self.clock: int | None = None  # event time up to which everything has been applied
        self.bound: tuple[Any, ...] | None = None  # sort key of the last released alert
        self.processed: int = -1  # highest input offset fully processed
        self.groups: dict[str, GroupState] = {}
        self.silences: dict[str, Silence] = {}
        self.inhibitors: dict[str, dict[str, _Inhibitor]] = {}  # rule -> fingerprint -> state
        self.keyed_index: dict[str, str] = {}  # fingerprint -> gkhash, for keyed alerts only
        self.stats: Counter[str] = Counter()
        # The reorder buffer: alerts by event time, each list in log order, and a heap of those
        # times. Time advancing takes the due lists and sorts only them by key (stable: equal keys
        # keep log order); a heap of all alerts by key cost twice as much per alert.
        self._waiting: dict[int, list[_Buffered]] = {}
        self._waiting_times: list[int] = []
        self._timers: list[tuple[int, str]] = []
        self._due: dict[str, int] = {}
        self._dirty_groups: set[str] = set()
        self._dirty_alerts: set[tuple[str, str]] = set()
        self._deleted: set[str] = set()
        self._meta_dirty = False
        self._out = EngineOutput()

    # ------------------------------------------------------------------ input

    def process(self, value: bytes, offset: int) -> None:
        """Apply one input record. Records at or below ``processed`` are replays after a restart."""
        replay = offset <= self.processed
        try:
            record = wire.decode(value)
        except (ValueError, orjson.JSONDecodeError) as exc:
            if not replay:
                self._dead_letter(DeadLetterReason.NOT_JSON, f"correlator input: {exc}", value, offset)
            self._done(offset)
            return
        kind = record.get("t")
        if kind in (wire.ALERTS, wire.INHIBITOR, wire.BY_KEY):
            self._on_alerts(record, offset, replay)
        elif replay:
            pass  # ticks, commands and results below `processed` are already reflected in state
        elif kind == wire.TICK:
            self._on_ticks({str(record["src"]): int(record["wm"])}, int(record.get("n", 1)))
        elif kind == wire.TICKS:
            self._on_ticks({str(k): int(v) for k, v in record["wm"].items()}, int(record.get("n", 1)))
        elif kind == wire.COMMAND:
            self._on_command(record["cmd"], value, offset)
        elif kind == wire.RESULT:
            self._on_result(record["res"], value, offset)
        else:
            self._dead_letter(
                DeadLetterReason.UNKNOWN_FORMAT, f"correlator input kind {kind!r}", value, offset
            )
        self._done(offset)

    def _done(self, offset: int) -> None:
        if offset > self.processed:
            self.processed = offset
            self._meta_dirty = True

    def _on_alerts(self, record: dict[str, Any], offset: int, replay: bool) -> None:
        items: list[tuple[wire.AlertNote, tuple[str, str, str, dict[str, str]] | None, str | None]]
        if record["t"] == wire.INHIBITOR:
            items = [(wire.AlertNote.from_wire(record["al"]), None, str(record["rule"]))]
        elif record["t"] == wire.BY_KEY:
            items = [(wire.AlertNote.from_wire(record["al"]), None, None)]
        else:
            route = (str(record["h"]), str(record["gk"]), str(record["r"]), dict(record["gl"]))
            items = [(wire.AlertNote.from_wire(row), route, None) for row in record["al"]]
        for note, route_info, inhibit_rule in items:
            kind = "i" if inhibit_rule else ("a" if route_info is not None else "k")
            key = note.sort_key(kind)
            # Late: behind what has been applied already (the clock, or the last released alert).
            late = (self.clock is not None and note.event_ms < self.clock) or (
                self.bound is not None and key <= self.bound
            )
            if not late:
                item = _Buffered(key, offset, kind, note, route_info, inhibit_rule)
                waiting = self._waiting.get(note.event_ms)
                if waiting is None:
                    self._waiting[note.event_ms] = [item]
                    heapq.heappush(self._waiting_times, note.event_ms)
                else:
                    waiting.append(item)
                continue
            if replay:
                continue
            self.stats["late_alerts"] += 1
            if self.config.late_policy is LatePolicy.DEAD_LETTER and kind != "i":
                self._dead_letter(
                    DeadLetterReason.LATE_ALERT,
                    f"alert {note.fingerprint} at {note.event_ms} is older than the watermark "
                    f"{self.clock} minus allowed lateness {self.lateness} ms",
                    orjson.dumps(note.to_wire()),
                    offset,
                )
                continue
            self._apply(_Buffered(key, offset, kind, note, route_info, inhibit_rule), late=True)

    def _on_ticks(self, marks: dict[str, int], sources: int) -> None:
        """New watermarks of raw partitions. Several at once advance time as they would one by one:
        the intermediate targets only split the same event-time ordered sequence of steps."""
        moved = False
        for source, watermark in marks.items():
            if watermark > self.watermarks.get(source, -1):
                self.watermarks[source] = watermark
                moved = True
        if not moved:
            return
        self._meta_dirty = True
        self.expected_sources = max(self.expected_sources, sources)
        if len(self.watermarks) < self.expected_sources:
            return  # time is the minimum over every raw partition: wait until each has spoken
        target = min(self.watermarks.values()) - self.lateness
        if self.clock is None or target > self.clock:
            self._advance(target)

    def _advance(self, target: int) -> None:
        """Apply buffered alerts and due timers in event-time order up to ``target``."""
        ready: list[_Buffered] = []
        times = self._waiting_times
        while times and times[0] <= target:
            ready += self._waiting.pop(heapq.heappop(times))
        ready.sort(key=_BUFFER_ORDER)
        released = 0
        end = len(ready)
        while True:
            next_alert = ready[released] if released < end else None
            due = self._next_timer(target)
            if next_alert is None and due is None:
                break
            if next_alert is not None and (due is None or next_alert.key[0] <= due[0]):
                released += 1
                self._set_clock(next_alert.key[0])
                self.bound = next_alert.key
                self._apply(next_alert, late=False)
            elif due is not None:
                heapq.heappop(self._timers)
                self._due.pop(due[1], None)
                self._set_clock(due[0])
                group = self.groups.get(due[1])
                if group is not None:
                    self._run_timers(group, due[0])
                    self._reschedule(group)
        self._set_clock(target)
        self._meta_dirty = True

    def _set_clock(self, t: int) -> None:
        if self.clock is None or t > self.clock:
            self.clock = t

    def _next_timer(self, target: int) -> tuple[int, str] | None:
        while self._timers:
            due, gk = self._timers[0]
            if self._due.get(gk) != due:
                heapq.heappop(self._timers)
                continue
            return (due, gk) if due <= target else None
        return None

    # ------------------------------------------------------------------ alerts

    def _now(self, fallback: int) -> int:
        return self.clock if self.clock is not None else fallback

    def _apply(self, item: _Buffered, late: bool) -> None:
        note = item.note
        t = max(note.event_ms, self._now(note.event_ms)) if late else note.event_ms
        if item.kind == "i":
            self._apply_inhibitor(str(item.inhibit_rule), note, t)
            return
        if item.kind == "k":
            self._apply_by_key(note, t, late)
            return
        assert item.route is not None
        gkhash, group_key, rule_name, group_labels = item.route
        group = self.groups.get(gkhash)
        if group is None:
            if not note.firing:
                self.stats["resolved_unknown"] += 1
                return
            group = GroupState(gkhash, group_key, rule_name, group_labels)
            self.groups[gkhash] = group
            self._deleted.discard(gkhash)
            self._dirty_groups.add(gkhash)
        self.stats["alerts_applied"] += 1
        if self._apply_alert(group, note, t, late):
            self._reschedule(group)

    def _apply_by_key(self, note: wire.AlertNote, t: int, late: bool) -> None:
        """A key-only notification: the partition holding the fingerprint applies it, others ignore it."""
        group = self.groups.get(self.keyed_index.get(note.fingerprint, ""))
        alert = group.alerts.get(note.fingerprint) if group is not None else None
        if group is None or alert is None:
            self.stats["by_key_elsewhere"] += 1
            return
        note.labels = alert.labels
        note.severity = alert.severity
        note.annotations = {**alert.annotations, **note.annotations}
        self.stats["alerts_applied"] += 1
        if self._apply_alert(group, note, t, late):
            self._reschedule(group)

    def _rule(self, group: GroupState) -> CorrelationRule:
        return self.rules.get(group.rule, self.default_rule)

    def _apply_alert(self, group: GroupState, note: wire.AlertNote, t: int, late: bool) -> bool:
        """Apply one notification; True when the group's next timer may have moved earlier.

        A plain re-send (same status and content) only moves its alert's expiry, usually later; the
        group's timer then stays where it was, and should it fire before anything is due, the
        timers find nothing to do and reschedule the group (about 10% of the CPU time per alert).
        """
        rule = self._rule(group)
        fp = note.fingerprint
        alert = group.alerts.get(fp)
        suppression = self._suppression(note.labels, t)
        seen = round_up(t, self.resolution)
        ends = round_up(note.ends_ms, self.resolution) if note.firing and note.ends_ms is not None else None
        if alert is None:
            if not note.firing:
                self.stats["resolved_unknown"] += 1
                return True
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
                self.keyed_index[fp] = group.gkhash
            self._touch_alert(group, alert)
            self._count_suppression(group, suppression)
            self._firing_arrived(group, alert, t, rule, new=True)
            return True
        dirty = False
        earlier = False
        if alert.seen_ms != seen or alert.ends_ms != ends:
            before = alert.expiry_ms(rule.resolve_timeout_ms)
            alert.seen_ms, alert.ends_ms = seen, ends
            dirty = True
            if note.firing and alert.firing:
                expiry = alert.expiry_ms(rule.resolve_timeout_ms)
                group.push_timer(expiry, EXPIRE, fp, rule.resolve_timeout_ms, self.config.flap.settle_ms)
                earlier = expiry < before
        if suppression != alert.suppressed:
            alert.suppressed = suppression
            dirty = earlier = True
            if suppression is not None and alert.member:
                kind = (
                    AlertChangeKind.SILENCED
                    if suppression.startswith("silence:")
                    else AlertChangeKind.INHIBITED
                )
                self._mark(group, alert, kind, t, suppression.split(":", 1)[1])
        self._count_suppression(group, suppression)
        if note.firing != alert.firing:
            alert.firing = note.firing
            dirty = earlier = True
            self._track_flip(group, alert, t, rule)
            if alert.flapping:
                self.stats["suppressed_flapping"] += 1
            elif note.firing:
                self._firing_arrived(group, alert, t, rule, new=False)
            else:
                self._alert_resolved(group, alert, t, AlertChangeKind.RESOLVED)
        elif note.severity != alert.severity or not alert.same_annotations(note.annotations):
            alert.severity, alert.annotations = note.severity, note.annotations
            dirty = earlier = True
            if alert.member and not alert.flapping:
                self._mark(group, alert, AlertChangeKind.UPDATED, t)
                self._want_flush(group)
        else:
            self.stats["deduplicated"] += 1
            if group.incident is not None and group.incident.active and alert.member:
                group.incident.pending_dedup += 1
                self._dirty_groups.add(group.gkhash)
        if dirty:
            self._touch_alert(group, alert)
        return earlier

    def _count_suppression(self, group: GroupState, suppression: str | None) -> None:
        if suppression is None:
            return
        self.stats["suppressed_silence" if suppression.startswith("silence:") else "suppressed_inhibit"] += 1
        if group.incident is not None and group.incident.active:
            group.incident.pending_suppressed += 1
            self._dirty_groups.add(group.gkhash)

    def _track_flip(self, group: GroupState, alert: AlertState, t: int, rule: CorrelationRule) -> None:
        policy = self.config.flap
        if not policy.enabled:
            return
        flips = [f for f in alert.flips if f > t - policy.window_ms]
        flips.append(t)
        alert.flips = flips
        if not alert.flapping and len(alert.flips) > policy.max_flips:
            alert.flapping = True
            self.stats["flapping_detected"] += 1
            if alert.member:
                self._mark(group, alert, AlertChangeKind.FLAPPING, t, "flap_detection")
                self._want_flush(group)
        if alert.flapping:
            settle = alert.settle_ms(policy.settle_ms)
            group.push_timer(settle, SETTLE, alert.fingerprint, rule.resolve_timeout_ms, policy.settle_ms)

    def _firing_arrived(
        self, group: GroupState, alert: AlertState, t: int, rule: CorrelationRule, *, new: bool
    ) -> None:
        """A new or re-firing alert: join the open incident, reopen, or start group_wait."""
        expiry = alert.expiry_ms(rule.resolve_timeout_ms)
        group.push_timer(
            expiry, EXPIRE, alert.fingerprint, rule.resolve_timeout_ms, self.config.flap.settle_ms
        )
        inc = group.incident
        if inc is not None and inc.active:
            if not alert.member:
                alert.member = True
                self._mark(
                    group,
                    alert,
                    self._suppressed_kind(alert) or AlertChangeKind.JOINED,
                    t,
                    self._suppressed_rule(alert),
                )
            else:
                self._mark(group, alert, AlertChangeKind.REFIRED, t)
            self._touch_alert(group, alert)
            self._want_flush(group)
            return
        if alert.suppressed is not None:
            return  # a suppressed alert alone never opens or reopens an incident
        if inc is not None and inc.state is IncidentState.RESOLVED:
            assert inc.resolved_ms is not None
            if t <= inc.resolved_ms + rule.reopen_window_ms:
                if not alert.member:
                    alert.member = True
                    self._mark(group, alert, AlertChangeKind.JOINED, t)
                else:
                    self._mark(group, alert, AlertChangeKind.REFIRED, t)
                self._touch_alert(group, alert)
                inc.reopen_count += 1
                self.stats["incidents_reopened"] += 1
                self._transition(
                    group,
                    Action.REOPEN,
                    IncidentEventType.REOPENED,
                    t,
                    CORRELATOR,
                    f"alert {alert.labels.get('alertname', alert.fingerprint)} fired again within the "
                    f"reopen window",
                    rule.name,
                )
                return
            self._close(group, t, "superseded: the group fired again after the reopen window", rule.name)
        if group.pending_since is None:
            group.pending_since = t
            self._dirty_groups.add(group.gkhash)

    def _alert_resolved(self, group: GroupState, alert: AlertState, t: int, kind: AlertChangeKind) -> None:
        alert.firing = False
        self._touch_alert(group, alert)
        inc = group.incident
        if not alert.member:
            self._drop_alert(group, alert.fingerprint)  # never reported: nothing to keep
            return
        self._mark(group, alert, kind, t)
        if inc is None or not inc.active:
            return
        if any(a.member and a.effectively_firing for a in group.alerts.values()):
            self._want_flush(group)
            return
        self.stats["incidents_resolved"] += 1
        inc.resolved_ms = t
        self._observe("mttr", t - inc.opened_ms, group)
        self._transition(
            group,
            Action.AUTO_RESOLVE,
            IncidentEventType.RESOLVED,
            t,
            CORRELATOR,
            "all alerts of the incident are resolved",
            group.rule,
        )

    def _suppression(self, labels: dict[str, str], t: int) -> str | None:
        for silence in self.silences.values():
            if (
                ms_from_dt(silence.starts_at) <= t < ms_from_dt(silence.ends_at)
                and (silence.expired_at is None or t < ms_from_dt(silence.expired_at))
                and all(m.matches(labels) for m in silence.matchers)
            ):
                return f"silence:{silence.silence_id}"
        for rule in self.config.inhibit_rules:
            sources = self.inhibitors.get(rule.name)
            if not sources:
                continue
            for inhibitor in sources.values():
                if inhibitor.firing and inhibitor.expiry_ms > t and rule.inhibits(inhibitor.labels, labels):
                    return f"inhibit:{rule.name}"
        return None

    @staticmethod
    def _suppressed_kind(alert: AlertState) -> AlertChangeKind | None:
        if alert.suppressed is None:
            return None
        return (
            AlertChangeKind.SILENCED if alert.suppressed.startswith("silence:") else AlertChangeKind.INHIBITED
        )

    @staticmethod
    def _suppressed_rule(alert: AlertState) -> str | None:
        return alert.suppressed.split(":", 1)[1] if alert.suppressed else None

    def _apply_inhibitor(self, rule_name: str, note: wire.AlertNote, t: int) -> None:
        sources = self.inhibitors.setdefault(rule_name, {})
        if note.firing:
            expiry = note.ends_ms if note.ends_ms is not None else t + self.default_rule.resolve_timeout_ms
            sources[note.fingerprint] = _Inhibitor(note.labels, True, round_up(expiry, self.resolution))
        else:
            sources.pop(note.fingerprint, None)
        self._meta_dirty = True

    # ------------------------------------------------------------------ timers

    def _want_flush(self, group: GroupState) -> None:
        self._dirty_groups.add(group.gkhash)

    @staticmethod
    def _has_pending(group: GroupState) -> bool:
        return group.has_pending

    def _mark(
        self, group: GroupState, alert: AlertState, kind: AlertChangeKind, t: int, rule: str | None = None
    ) -> None:
        alert.mark(kind, t, rule)
        if alert.member:
            group.has_pending = True

    def _group_due(self, group: GroupState) -> int | None:
        rule = self._rule(group)
        candidates: list[int] = []
        if group.pending_since is not None:
            candidates.append(group.pending_since + rule.group_wait_ms)
        inc = group.incident
        if inc is not None:
            if inc.active:
                candidates.append(inc.opened_ms + rule.max_lifetime_ms)
                if self._has_pending(group):
                    candidates.append(inc.last_emit_ms + rule.group_interval_ms)
            elif inc.state is IncidentState.RESOLVED and inc.resolved_ms is not None:
                candidates.append(inc.resolved_ms + rule.close_delay_ms)
        settle_ms = self.config.flap.settle_ms
        while group.heap:
            if group.timer_live(group.heap[0], rule.resolve_timeout_ms, settle_ms):
                candidates.append(group.heap[0][0])
                break
            heapq.heappop(group.heap)
        return min(candidates) if candidates else None

    def _reschedule(self, group: GroupState) -> None:
        if group.gkhash not in self.groups:
            self._due.pop(group.gkhash, None)
            return
        due = self._group_due(group)
        if due is None:
            self._due.pop(group.gkhash, None)
            if self._collectable(group):
                self._drop_group(group)
            return
        if self.clock is not None and due < self.clock:
            due = self.clock
        if self._due.get(group.gkhash) != due:
            self._due[group.gkhash] = due
            heapq.heappush(self._timers, (due, group.gkhash))

    def _run_timers(self, group: GroupState, t: int) -> None:
        rule = self._rule(group)
        # Alert expiries and flap settling first: they can resolve the incident.
        settle_ms = self.config.flap.settle_ms
        while group.heap and group.heap[0][0] <= t:
            entry = heapq.heappop(group.heap)
            if not group.timer_live(entry, rule.resolve_timeout_ms, settle_ms):
                continue
            due, kind, fp = entry
            alert = group.alerts[fp]
            if kind == EXPIRE:
                if alert.flapping:
                    alert.firing = False
                    self._touch_alert(group, alert)
                else:
                    self._alert_resolved(group, alert, due, AlertChangeKind.EXPIRED)
            else:
                alert.flapping = False
                self._touch_alert(group, alert)
                if alert.member:
                    self._mark(group, alert, AlertChangeKind.SETTLED, due)
                    self._want_flush(group)
                if not alert.firing:
                    self._alert_resolved(group, alert, due, AlertChangeKind.RESOLVED)
        inc = group.incident
        if group.pending_since is not None and t >= group.pending_since + rule.group_wait_ms:
            self._open(group, t, rule)
            inc = group.incident
        if inc is None:
            return
        if inc.active and t >= inc.opened_ms + rule.max_lifetime_ms:
            self._close(group, t, f"maximum incident lifetime ({rule.max_lifetime_ms} ms) reached", rule.name)
            if any(a.firing and a.suppressed is None for a in group.alerts.values()):
                group.pending_since = t
                self._dirty_groups.add(group.gkhash)
            return
        if inc.active and self._has_pending(group) and t >= inc.last_emit_ms + rule.group_interval_ms:
            self._flush(group, t, rule)
        elif (
            inc.state is IncidentState.RESOLVED
            and inc.resolved_ms is not None
            and t >= inc.resolved_ms + rule.close_delay_ms
        ):
            self._close(group, t, "quiet period after resolution passed", rule.name)

    def _open(self, group: GroupState, t: int, rule: CorrelationRule) -> None:
        assert group.pending_since is not None
        candidates = [a for a in group.alerts.values() if a.firing and not a.member]
        opened_ms = group.pending_since
        group.pending_since = None
        self._dirty_groups.add(group.gkhash)
        if not any(a.suppressed is None for a in candidates):
            self.stats["groups_expired_before_open"] += 1
            return
        inc = IncidentRuntime(incident_id_for(group.gkhash, opened_ms), IncidentState.OPEN, opened_ms)
        inc.title = self._title(group, candidates)
        group.incident = inc
        group.has_pending = False
        for alert in candidates:
            alert.member = True
            alert.pending = NO_CHANGES
            self._touch_alert(group, alert)
        changes = [
            self._change(
                a, self._suppressed_kind(a) or AlertChangeKind.JOINED, a.starts_ms, self._suppressed_rule(a)
            )
            for a in sorted(candidates, key=lambda a: a.fingerprint)
        ]
        self.stats["incidents_opened"] += 1
        self._observe("open_delay", t - opened_ms, group)
        self._transition(
            group,
            Action.OPEN,
            IncidentEventType.OPENED,
            t,
            CORRELATOR,
            f"{len(candidates)} alert(s) matched rule {rule.name} within group_wait",
            rule.name,
            changes=changes,
        )

    def _flush(self, group: GroupState, t: int, rule: CorrelationRule) -> None:
        inc = group.incident
        assert inc is not None
        severity = self._severity(group)
        kind = IncidentEventType.UPDATED
        cause = "alert changes coalesced over group_interval"
        if inc.reported_severity is not None and severity != inc.reported_severity:
            kind = IncidentEventType.SEVERITY_CHANGED
            cause = f"severity changed from {inc.reported_severity} to {severity}"
        self._emit(group, kind, inc.state, inc.state, t, CORRELATOR, cause, rule.name)

    def _close(
        self,
        group: GroupState,
        t: int,
        cause: str,
        rule: str | None,
        *,
        merge_into: str | None = None,
        actor: str = CORRELATOR,
    ) -> None:
        inc = group.incident
        assert inc is not None
        action = Action.MERGE if merge_into else Action.CLOSE
        inc.closed_ms = t
        self.stats["incidents_closed"] += 1
        details = {"merged_into": merge_into} if merge_into else {}
        etype = IncidentEventType.MERGED if merge_into else IncidentEventType.CLOSED
        self._transition(group, action, etype, t, actor, cause, rule, details=details)
        group.has_pending = False
        for alert in list(group.alerts.values()):
            alert.member = False
            alert.pending = NO_CHANGES
            if alert.firing:
                self._touch_alert(group, alert)
            else:
                self._drop_alert(group, alert.fingerprint)

    def _collectable(self, group: GroupState) -> bool:
        inc = group.incident
        return (
            not group.alerts
            and group.pending_since is None
            and (inc is None or inc.state is IncidentState.CLOSED)
        )

    # ------------------------------------------------------------------ commands

    def _on_command(self, payload: Any, raw: bytes, offset: int) -> None:
        try:
            cmd = OperatorCommand.model_validate(payload)
        except ValueError as exc:
            self._dead_letter(DeadLetterReason.INVALID_COMMAND, f"operator command: {exc}", raw, offset)
            return
        t = self._now(ms_from_dt(cmd.at))
        if cmd.action is OperatorAction.SILENCE_ADD:
            if cmd.silence is not None:
                self.silences[cmd.silence.silence_id] = cmd.silence
                self._meta_dirty = True
                if self.partition == 0:
                    self._out.silences.append((cmd.silence.silence_id, cmd.silence.to_bytes()))
            return
        if cmd.action is OperatorAction.SILENCE_EXPIRE:
            silence = self.silences.get(cmd.silence_id or "")
            if silence is None:
                if self.partition == 0:
                    self._dead_letter(
                        DeadLetterReason.INVALID_COMMAND, f"unknown silence {cmd.silence_id}", raw, offset
                    )
                return
            if silence.expired_at is None:
                silence.expired_at = utc_from_ms(t)
                self._meta_dirty = True
                if self.partition == 0:
                    self._out.silences.append((silence.silence_id, silence.to_bytes()))
            return
        group, inc = self._incident_for(cmd.incident_id or "")
        if group is None or inc is None:
            self._dead_letter(
                DeadLetterReason.UNKNOWN_INCIDENT,
                f"{cmd.action.value} for incident {cmd.incident_id}, which this correlator does not hold "
                "(unknown, or closed and collected)",
                raw,
                offset,
            )
            return
        if cmd.command_id in inc.seen_commands:
            self.stats["commands_duplicate"] += 1
            return
        inc.remember_command(cmd.command_id)
        self._dirty_groups.add(group.gkhash)
        actor = f"operator:{cmd.by}" if cmd.action is not OperatorAction.ABSORB else CORRELATOR
        self._apply_command(group, inc, cmd, t, actor)
        self._reschedule(group)

    def _apply_command(
        self, group: GroupState, inc: IncidentRuntime, cmd: OperatorCommand, t: int, actor: str
    ) -> None:
        details: dict[str, Any] = {"command_id": cmd.command_id}
        if cmd.note:
            details["note"] = cmd.note
        state_actions = {
            OperatorAction.ACKNOWLEDGE: (Action.ACKNOWLEDGE, IncidentEventType.ACKNOWLEDGED),
            OperatorAction.RESOLVE: (Action.RESOLVE, IncidentEventType.RESOLVED),
            OperatorAction.MERGE: (Action.MERGE, IncidentEventType.MERGED),
        }
        if cmd.action in state_actions:
            action, etype = state_actions[cmd.action]
            if cmd.action is OperatorAction.MERGE:
                target = cmd.merge_into or ""
                if gkhash_of_incident(target) is None or target == inc.incident_id:
                    self._refuse(
                        group, t, actor, cmd, f"cannot merge into {target!r}: give another incident id"
                    )
                    return
            verdict = transition(inc.state, action)
            if not verdict.allowed:
                self._refuse(group, t, actor, cmd, verdict.reason)
                return
            if cmd.action is OperatorAction.ACKNOWLEDGE:
                inc.acknowledged_ms = t
                self._observe("mtta", t - inc.opened_ms, group)
                self.stats["incidents_acknowledged"] += 1
                self._transition(
                    group, action, etype, t, actor, f"acknowledged by {cmd.by}", None, details=details
                )
            elif cmd.action is OperatorAction.RESOLVE:
                inc.resolved_ms = t
                self._observe("mttr", t - inc.opened_ms, group)
                self.stats["incidents_resolved"] += 1
                self._transition(
                    group, action, etype, t, actor, f"resolved by {cmd.by}", None, details=details
                )
            else:
                target = cmd.merge_into or ""
                fingerprints = sorted(a.fingerprint for a in group.alerts.values() if a.member)
                source_id = inc.incident_id
                self._close(
                    group, t, f"merged into {target} by {cmd.by}", None, merge_into=target, actor=actor
                )
                absorb = OperatorCommand(
                    command_id=f"absorb:{source_id}",
                    action=OperatorAction.ABSORB,
                    incident_id=target,
                    by=cmd.by,
                    at=utc_from_ms(t),
                    details={"from": source_id, "fingerprints": fingerprints},
                )
                self._out.feedback.append((target, absorb.to_bytes()))
            return
        if inc.state is IncidentState.CLOSED and cmd.action is not OperatorAction.ANNOTATE:
            self._refuse(
                group, t, actor, cmd, f"incident {inc.incident_id} is closed; only annotate is allowed"
            )
            return
        if cmd.action is OperatorAction.ASSIGN:
            if not cmd.assignee:
                self._refuse(group, t, actor, cmd, "assign needs an assignee")
                return
            inc.assignee = cmd.assignee
            details["assignee"] = cmd.assignee
            self._emit(
                group,
                IncidentEventType.ASSIGNED,
                inc.state,
                inc.state,
                t,
                actor,
                f"assigned to {cmd.assignee}",
                None,
                details=details,
            )
        elif cmd.action is OperatorAction.ANNOTATE:
            if not cmd.note:
                self._refuse(group, t, actor, cmd, "annotate needs a note")
                return
            self._emit(
                group,
                IncidentEventType.ANNOTATED,
                inc.state,
                inc.state,
                t,
                actor,
                f"note by {cmd.by}",
                None,
                details=details,
            )
        elif cmd.action is OperatorAction.SET_SEVERITY:
            if cmd.severity is None:
                self._refuse(group, t, actor, cmd, "set_severity needs a severity")
                return
            before = self._severity(group)
            inc.severity_override = cmd.severity.value
            details["severity"] = cmd.severity.value
            self._emit(
                group,
                IncidentEventType.SEVERITY_CHANGED,
                inc.state,
                inc.state,
                t,
                actor,
                f"severity set from {before} to {cmd.severity.value} by {cmd.by}",
                None,
                details=details,
            )
        elif cmd.action is OperatorAction.ABSORB:
            details.update(cmd.details)
            self._emit(
                group,
                IncidentEventType.ABSORBED,
                inc.state,
                inc.state,
                t,
                CORRELATOR,
                f"absorbed incident {cmd.details.get('from')}",
                None,
                details=details,
            )
        else:
            self._refuse(group, t, actor, cmd, f"{cmd.action.value} does not apply to an incident")

    def _refuse(self, group: GroupState, t: int, actor: str, cmd: OperatorCommand, reason: str) -> None:
        inc = group.incident
        assert inc is not None
        self.stats["commands_refused"] += 1
        self._emit(
            group,
            IncidentEventType.REFUSED,
            inc.state,
            inc.state,
            t,
            actor,
            reason,
            None,
            details={"command_id": cmd.command_id, "action": cmd.action.value, "reason": reason},
        )

    def _on_result(self, payload: Any, raw: bytes, offset: int) -> None:
        try:
            result = CommandResult.model_validate(payload)
        except ValueError as exc:
            self._dead_letter(DeadLetterReason.INVALID_COMMAND, f"command result: {exc}", raw, offset)
            return
        group, inc = self._incident_for(result.incident_id)
        if group is None or inc is None:
            self._dead_letter(
                DeadLetterReason.UNKNOWN_INCIDENT,
                f"result of {result.command_id} for unknown incident",
                raw,
                offset,
            )
            return
        key = f"{result.command_id}:{result.status.value}"
        if key in inc.seen_commands:
            return
        inc.remember_command(key)
        self._dirty_groups.add(group.gkhash)
        t = self._now(ms_from_dt(result.at))
        actor = result.actor or f"agent:{result.workflow}"
        details: dict[str, Any] = {
            "command_id": result.command_id,
            "workflow": result.workflow,
            "step": result.step,
            "action": result.action,
            "status": result.status.value,
        }
        if result.reason:
            details["reason"] = result.reason
        if result.target is not None:
            details["target"] = result.target
        if result.attempt != 1:
            details["attempt"] = result.attempt
        if result.expires_at is not None:
            details["expires_at"] = result.expires_at.isoformat()
        cause = f"{result.workflow}/{result.step}: {result.action} {result.status.value}"
        self.stats[f"mitigation_{result.status.value}"] += 1
        if result.status is CommandStatus.STARTED and inc.state in (
            IncidentState.OPEN,
            IncidentState.ACKNOWLEDGED,
        ):
            inc.mitigating_ms = t
            self._transition(
                group, Action.MITIGATE, IncidentEventType.MITIGATING, t, actor, cause, None, details=details
            )
        else:
            self._emit(
                group,
                IncidentEventType.MITIGATION,
                inc.state,
                inc.state,
                t,
                actor,
                cause,
                None,
                details=details,
            )
        self._reschedule(group)

    def _incident_for(self, incident_id: str) -> tuple[GroupState | None, IncidentRuntime | None]:
        gkhash = gkhash_of_incident(incident_id)
        group = self.groups.get(gkhash) if gkhash else None
        if group is None or group.incident is None or group.incident.incident_id != incident_id:
            return group, None
        return group, group.incident

    # ------------------------------------------------------------------ events

    def _transition(
        self,
        group: GroupState,
        action: Action,
        etype: IncidentEventType,
        t: int,
        actor: str,
        cause: str,
        rule: str | None,
        *,
        changes: list[AlertChange] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        inc = group.incident
        assert inc is not None
        before = None if etype is IncidentEventType.OPENED else inc.state
        verdict = transition(before, action)
        if not verdict.allowed or verdict.to_state is None:  # internal decisions follow the table too
            raise RuntimeError(f"engine attempted an illegal transition: {verdict.reason}")
        inc.state = verdict.to_state
        if action is Action.REOPEN:
            inc.resolved_ms = None
        self._emit(
            group, etype, before, verdict.to_state, t, actor, cause, rule, changes=changes, details=details
        )

    def _emit(
        self,
        group: GroupState,
        etype: IncidentEventType,
        from_state: IncidentState | None,
        to_state: IncidentState,
        t: int,
        actor: str,
        cause: str,
        rule: str | None,
        *,
        changes: list[AlertChange] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        inc = group.incident
        assert inc is not None
        if changes is None:
            changes = self._collect_changes(group)
        inc.seq += 1
        inc.deduplicated += inc.pending_dedup
        inc.suppressed += inc.pending_suppressed
        dedup, suppressed = inc.pending_dedup, inc.pending_suppressed
        inc.pending_dedup = inc.pending_suppressed = 0
        inc.last_emit_ms = t
        severity = self._severity(group)
        inc.reported_severity = severity
        members = [a for a in group.alerts.values() if a.member]
        snapshot = IncidentSnapshot(
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
        )
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
            snapshot=snapshot,
        )
        self._out.events.append(event)
        self._dirty_groups.add(group.gkhash)
        inc_count_key = "events_" + etype.value
        self.stats[inc_count_key] += 1

    def _collect_changes(self, group: GroupState) -> list[AlertChange]:
        pending = [
            (c[1], a.fingerprint, i, a, c)
            for a in group.alerts.values()
            if a.member
            for i, c in enumerate(a.pending)
        ]
        pending.sort(key=lambda p: p[:3])
        changes = [self._change(a, AlertChangeKind(c[0]), c[1], c[2]) for _, _, _, a, c in pending]
        group.has_pending = False
        for alert in {id(p[3]): p[3] for p in pending}.values():
            alert.pending = NO_CHANGES
            self._touch_alert(group, alert)
        return changes

    @staticmethod
    def _change(alert: AlertState, kind: AlertChangeKind, at: int, rule: str | None) -> AlertChange:
        full = kind in (
            AlertChangeKind.JOINED,
            AlertChangeKind.SILENCED,
            AlertChangeKind.INHIBITED,
            AlertChangeKind.LATE,
        )
        return AlertChange(
            fingerprint=alert.fingerprint,
            change=kind,
            status=AlertStatus.FIRING if alert.firing else AlertStatus.RESOLVED,
            severity=Severity(alert.severity),
            at=utc_from_ms(at),
            labels=alert.labels if full else None,
            annotations=alert.annotations if full or kind is AlertChangeKind.UPDATED else None,
            rule=rule,
        )

    def _severity(self, group: GroupState) -> str:
        inc = group.incident
        if inc is not None and inc.severity_override is not None:
            return inc.severity_override
        firing = [Severity(a.severity) for a in group.alerts.values() if a.member and a.effectively_firing]
        if not firing:
            return (
                inc.reported_severity if inc is not None and inc.reported_severity else Severity.WARNING.value
            )
        return Severity.most_severe(firing).value

    @staticmethod
    def _title(group: GroupState, alerts: list[AlertState]) -> str:
        names = sorted({a.labels.get("alertname", "") for a in alerts} - {""})
        head = names[0] if len(names) == 1 else (f"{names[0]} +{len(names) - 1}" if names else group.rule)
        context = ", ".join(f"{k}={v}" for k, v in sorted(group.group_labels.items()) if k != "alertname")
        return f"{head} ({context})" if context else head

    def _observe(self, name: str, elapsed_ms: int, group: GroupState) -> None:
        self._out.observations.append(
            Observation(name, max(elapsed_ms, 0) / 1000.0, self._severity(group), group.rule)
        )

    def _dead_letter(self, reason: DeadLetterReason, detail: str, raw: bytes, offset: int) -> None:
        import base64

        self.stats["dead_letters"] += 1
        self._out.dead_letters.append(
            DeadLetter(
                reason=reason,
                detail=detail,
                original=base64.b64encode(raw).decode(),
                original_size=len(raw),
                source_topic=self.source_topic,
                source_partition=self.partition,
                source_offset=offset,
                at=utc_from_ms(self._now(0)),
            )
        )

    # ------------------------------------------------------------------ state

    def _touch_alert(self, group: GroupState, alert: AlertState) -> None:
        self._dirty_alerts.add((group.gkhash, alert.fingerprint))

    def _drop_alert(self, group: GroupState, fingerprint: str) -> None:
        alert = group.alerts.pop(fingerprint, None)
        if alert is not None:
            self._dirty_alerts.add((group.gkhash, fingerprint))
            if alert.keyed and self.keyed_index.get(fingerprint) == group.gkhash:
                del self.keyed_index[fingerprint]

    def _drop_group(self, group: GroupState) -> None:
        self.groups.pop(group.gkhash, None)
        self._due.pop(group.gkhash, None)
        self._deleted.add(group.gkhash)
        self._dirty_groups.discard(group.gkhash)

    def take_output(self) -> EngineOutput:
        """Everything to write in this transaction; resets the pending output."""
        out = self._out
        for gkhash in self._dirty_groups:
            group = self.groups.get(gkhash)
            if group is not None:
                out.state[f"g/{gkhash}"] = group.encode_meta()
        for gkhash in self._deleted:
            if gkhash not in self.groups:
                out.state[f"g/{gkhash}"] = None
        for gkhash, fp in self._dirty_alerts:
            group = self.groups.get(gkhash)
            alert = group.alerts.get(fp) if group is not None else None
            out.state[f"a/{gkhash}/{fp}"] = alert.encode() if alert is not None else None
        if self._meta_dirty or out.state:
            out.state[PARTITION_KEY] = self._encode_meta()
        # each waiting list is in log order: its first alert came from its oldest record
        out.commit_offset = min(
            (waiting[0].offset for waiting in self._waiting.values()), default=self.processed + 1
        )
        self._dirty_groups = set()
        self._dirty_alerts = set()
        self._deleted = set()
        self._meta_dirty = False
        self._out = EngineOutput()
        return out

    def _encode_meta(self) -> bytes:
        bound = None if self.bound is None else [_plain(b) for b in self.bound]
        return orjson.dumps(
            {
                "wm": self.watermarks,
                "n": self.expected_sources,
                "clock": self.clock,
                "bound": bound,
                "processed": self.processed,
                "silences": {k: s.model_dump(mode="json") for k, s in self.silences.items()},
                "inh": {
                    rule: {fp: [i.labels, i.firing, i.expiry_ms] for fp, i in sources.items()}
                    for rule, sources in self.inhibitors.items()
                },
            }
        )

    def restore(self, items: dict[str, bytes]) -> None:
        """Rebuild state from the latest value of every key of this partition's changelog."""
        meta = items.get(PARTITION_KEY)
        if meta is not None:
            obj = orjson.loads(meta)
            self.watermarks = {str(k): int(v) for k, v in obj["wm"].items()}
            self.expected_sources = int(obj.get("n", 1))
            self.clock = obj["clock"]
            raw_bound = obj["bound"]
            if raw_bound is not None:  # (event_ms, fingerprint, firing, severity, tiebreak bytes, kind)
                self.bound = (*raw_bound[:4], raw_bound[4].encode(), raw_bound[5])
            self.processed = obj["processed"]
            self.silences = {k: Silence.model_validate(v) for k, v in obj["silences"].items()}
            self.inhibitors = {
                rule: {fp: _Inhibitor(v[0], v[1], v[2]) for fp, v in sources.items()}
                for rule, sources in obj["inh"].items()
            }
        for key, value in items.items():
            if key.startswith("g/"):
                gkhash = key[2:]
                self.groups[gkhash] = GroupState.decode_meta(gkhash, value)
        for key, value in items.items():
            if key.startswith("a/"):
                _, gkhash, _fp = key.split("/", 2)
                group = self.groups.get(gkhash)
                if group is not None:
                    alert = AlertState.decode(value)
                    group.alerts[alert.fingerprint] = alert
                    if alert.keyed:
                        self.keyed_index[alert.fingerprint] = gkhash
        settle = self.config.flap.settle_ms
        for group in self.groups.values():
            rule = self._rule(group)
            alerts = group.alerts.values()
            group.has_pending = any(a.pending for a in alerts if a.member)
            # The timers push_timer would add one by one (at most two per alert, so it would never
            # compact them), built at once: the same heap contents for a fraction of the cost.
            group.heap = [
                (a.expiry_ms(rule.resolve_timeout_ms), EXPIRE, a.fingerprint) for a in alerts if a.firing
            ]
            group.heap += [(a.settle_ms(settle), SETTLE, a.fingerprint) for a in alerts if a.flapping]
            heapq.heapify(group.heap)
            self._reschedule(group)

    # ------------------------------------------------------------------ views

    def snapshot_counts(self) -> dict[str, int]:
        open_incidents = sum(1 for g in self.groups.values() if g.incident is not None and g.incident.active)
        return {
            "groups": len(self.groups),
            "alerts": sum(len(g.alerts) for g in self.groups.values()),
            "open_incidents": open_incidents,
            "buffered": sum(len(waiting) for waiting in self._waiting.values()),
        }


def _dt(ms: int | None) -> Any:
    return utc_from_ms(ms) if ms is not None else None


def _plain(part: Any) -> Any:
    """A release-bound element as JSON: the tiebreak is a Tiebreak while running, bytes once restored."""
    if isinstance(part, wire.Tiebreak):
        return part.value.decode()
    if isinstance(part, bytes):
        return part.decode()
    return part
