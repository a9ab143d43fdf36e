"""The correlation engine: a pure, deterministic function of one correlator input partition.

No I/O and no wall clock: time only moves when a tick record says so (see streams.wire). The
runner (streams.correlator) feeds records in log order and writes what ``take_output`` returns in
one Kafka transaction: incident events, dead letters, feedback commands and state changes.

Ordering contract: alerts wait in a reorder buffer until ``watermark - allowed_lateness`` passes
their event time; then alerts and timers are applied in event-time order (alerts first on ties),
so any arrival order within the allowed lateness gives the same incidents and the same events.
Alerts are ordered by ``AlertNote.sort_key``; the rare notifications whose keys are equal (the
same alert, content and time, e.g. from two Prometheus replicas) are applied in log order.

``PartitionEngine`` reads the input and keeps that order; the concepts are modules of their own,
as Alertmanager splits dispatch, inhibit, silence and notify:

- reorder: watermarks, the reorder buffer and the event-time clock;
- alerts: one notification applied to its alert (dedup, mutes, flips, expiry);
- muting, silencing, inhibition, flapping: why an alert is muted, as a typed reason;
- incidents: the correlator's decisions (open, join, reopen, resolve, flush, close);
- timers: when each group is next due, and the heaps behind it;
- commands: operator commands and mitigation results, one handler per action;
- emission: the audit events; state: the groups and the pending transaction; codec: its records.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson

from stormwatch.schemas.commands import OperatorAction, OperatorCommand
from stormwatch.schemas.common import utc_from_ms
from stormwatch.schemas.dlq import DeadLetterReason
from stormwatch.schemas.incident import AlertChangeKind, IncidentEvent
from stormwatch.streams.core import codec, wire
from stormwatch.streams.core.alerts import AlertIntake
from stormwatch.streams.core.codec import PARTITION_KEY
from stormwatch.streams.core.commands import Commands
from stormwatch.streams.core.emission import CORRELATOR, Emitter
from stormwatch.streams.core.flapping import FlapDetector
from stormwatch.streams.core.groups import GroupState
from stormwatch.streams.core.ids import event_id_for, gkhash_of_incident, incident_id_for
from stormwatch.streams.core.incidents import Incidents
from stormwatch.streams.core.inhibition import Inhibitions
from stormwatch.streams.core.linkgate import LinkGate, LinkSetup
from stormwatch.streams.core.linkwire import LINK_COMMAND, LINK_MARK, LINK_SKIP, encode_link_command
from stormwatch.streams.core.mutetally import MuteTally
from stormwatch.streams.core.muting import Mute
from stormwatch.streams.core.reorder import Buffered, Notification, ReorderBuffer, Watermarks, WireRoute
from stormwatch.streams.core.rules import LatePolicy, RulesConfig
from stormwatch.streams.core.silencing import Silences
from stormwatch.streams.core.state import EngineOutput, Observation, PartitionState
from stormwatch.streams.core.timed import TimedCommand, TimedCommands
from stormwatch.streams.core.timers import GroupSchedule, group_due, rebuild_alert_timers

__all__ = [
    "CORRELATOR",
    "PARTITION_KEY",
    "EngineOutput",
    "Observation",
    "PartitionEngine",
    "event_id_for",
    "gkhash_of_incident",
    "incident_id_for",
]


FORWARDED = "fw:"
"""The id prefix of a held forwarded command or result (its TimedCommand holds the input record)."""
QUIET_AFTER_MS = 5_000
"""Event time with nothing but ticks after which a partition starts holding its records back: the
first seconds after activity still commit every batch, so a caught-up correlator's committed
offset follows its input's end (what `stormwatch bench` and lag tools watch) while work settles."""
QUIET_PERSIST_MS = 10_000
"""Event time a partition's clock may move by ticks alone before its partition record is written."""
QUIET_PERSIST_RECORDS = 2_000
"""Input records (ticks) a restart may have to re-read because a quiet batch was not committed."""


class PartitionEngine:
    """Correlation state and decisions for one partition of the correlator input."""

    def __init__(
        self, config: RulesConfig, partition: int, source_topic: str = "", linking: LinkSetup | None = None
    ) -> None:
        self.config = config
        self.partition = partition
        self.source_topic = source_topic
        self.lateness = config.allowed_lateness_ms
        self.processed: int = -1  # highest input offset fully processed
        # (clock, processed) as of the partition record last written: see take_output
        self._persisted: tuple[int | None, int] = (None, -1)
        self._active: int | None = None  # the clock when a batch last had something to write
        self.state = PartitionState(config, partition, source_topic)
        self.watermarks = Watermarks()
        self.buffer = ReorderBuffer()
        self.schedule = GroupSchedule()
        self.silences = Silences()
        self.inhibitions = Inhibitions(
            config.inhibit_rules, self.state.default_rule.resolve_timeout_ms, config.state_time_resolution_ms
        )
        mutes: list[Mute] = [self.silences]  # silences first: the reason an alert shows is the first
        if config.inhibit_rules:  # with no inhibit rules it never mutes: not asked for every alert
            mutes.append(self.inhibitions)
        emitter = Emitter(self.state)
        self.incidents = Incidents(self.state, emitter, config.flap.settle_ms)
        self.alerts = AlertIntake(
            self.state, self.incidents, mutes, FlapDetector(config.flap), config.state_time_resolution_ms
        )
        self.commands = Commands(self.state, emitter, self.incidents, self.silences)
        self.timed = TimedCommands()
        self.muted = MuteTally(self.state.default_rule.group_interval_ms)
        if config.inhibit_rules:
            self.alerts.on_inhibited = self._count_muted
        # With a topology: group notes to the linker, and its decisions applied at fixed times.
        self.links = LinkGate(linking, partition, self.state.stats) if linking is not None else None
        if self.links is not None:
            links = self.links
            emitter.on_event = links.note
            self.commands.forward = lambda c: links.request(c.inc, c.cmd, c.t)

    @property
    def groups(self) -> dict[str, GroupState]:
        return self.state.groups

    @property
    def stats(self) -> Counter[str]:
        return self.state.stats

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
            self._on_alerts(record, value, offset, replay)
        elif replay:
            pass  # ticks, commands and results below `processed` are already reflected in state
        elif kind == wire.TICK:
            self._on_ticks({str(record["src"]): int(record["wm"])}, int(record.get("n", 1)))
        elif kind == wire.TICKS:
            self._on_ticks({str(k): int(v) for k, v in record["wm"].items()}, int(record.get("n", 1)))
        elif kind in (wire.COMMAND, wire.RESULT):
            forwarded = record.get("fw")
            clock = self.buffer.clock
            if forwarded is not None and (clock is None or int(forwarded) - self.lateness > clock):
                # The partition's clock is behind the forwarding worker's (it was idle, so nobody
                # ticked it): hold the command until event time gets there (ingest ticks it on the
                # demand this makes), so its events carry the time it was asked, not a stale one.
                apply_at = int(forwarded) - self.lateness
                self.timed.hold(TimedCommand(apply_at, f"{FORWARDED}{offset:020d}", value, offset))
                self.state.meta_dirty = True
            else:
                self._dispatch(record, value, offset, clock)
        elif kind == LINK_COMMAND:
            self._on_timed_command(record, offset)
        elif kind in (LINK_MARK, LINK_SKIP) and self.links is not None:
            moved = (
                self.links.mark(int(record["src"]), int(record["wm"]))
                if kind == LINK_MARK
                else self.links.skip(int(record["wm"]))
            )
            if moved:
                self.state.meta_dirty = True
                self._catch_up()
        else:
            self._dead_letter(
                DeadLetterReason.UNKNOWN_FORMAT, f"correlator input kind {kind!r}", value, offset
            )
        self._done(offset)

    def _done(self, offset: int) -> None:
        if offset > self.processed:
            self.processed = offset
            self.state.meta_dirty = True

    def _on_alerts(self, record: dict[str, Any], value: bytes, offset: int, replay: bool) -> None:
        late = self.buffer.admit(_notifications(record), offset, (value, _decode_notifications))
        if replay:
            return
        for item in late:
            self.state.stats["late_alerts"] += 1
            if self.config.late_policy is LatePolicy.DEAD_LETTER and item.kind != "i":
                note = item.note
                self._dead_letter(
                    DeadLetterReason.LATE_ALERT,
                    f"alert {note.fingerprint} at {note.event_ms} is older than the watermark "
                    f"{self.buffer.clock} minus allowed lateness {self.lateness} ms",
                    orjson.dumps(note.to_wire()),
                    offset,
                )
                continue
            self._apply(item, late=True)

    def _on_ticks(self, marks: dict[str, int], sources: int) -> None:
        """New watermarks of raw partitions. Several at once advance time as they would one by one:
        the intermediate targets only split the same event-time ordered sequence of steps."""
        if not self.watermarks.update(marks, sources):
            return
        self.state.meta_dirty = True
        self._catch_up()

    def _catch_up(self) -> None:
        """Advance event time as far as the watermarks (and, linking, the linker's marks) allow."""
        low = self.watermarks.low()
        if low is None:
            return  # time is the minimum over every raw partition: wait until each has spoken
        target = low - self.lateness
        if self.links is not None:
            if self.buffer.clock is None:
                # Time starts just before the first thing to apply, so the first promise to the
                # linker is true and the first advance already waits for its marks.
                self.buffer.set_clock(min(self.buffer.earliest(default=target), target) - 1)
                self.state.meta_dirty = True
            allowed = self.links.gate(target)
            if allowed is None:
                return
            target = allowed
        if self.buffer.clock is None or target > self.buffer.clock:
            self._advance(target)

    def _on_timed_command(self, record: dict[str, Any], offset: int) -> None:
        """A linker decision or a muted summary: held until event time reaches its instant, or
        applied now if that has passed (late)."""
        payload = record["cmd"]
        command = TimedCommand(
            int(record["at"]), str(payload.get("command_id", "")), orjson.dumps(payload), offset
        )
        clock = self.buffer.clock
        if clock is not None and command.apply_at <= clock:
            self.state.stats["link_late_commands" if payload.get("by") != CORRELATOR else "muted_late"] += 1
            self._apply_timed(command, clock)
            return
        self.timed.hold(command)
        self.state.meta_dirty = True

    def _apply_timed(self, command: TimedCommand, t: int) -> None:
        if command.command_id.startswith(FORWARDED):  # a held operator command or result: its record
            self._dispatch(orjson.loads(command.command), command.command, command.offset, t)
            return
        self._rescheduled(
            self.commands.on_command(orjson.loads(command.command), command.command, command.offset, t)
        )

    def _dispatch(self, record: dict[str, Any], value: bytes, offset: int, t: int | None) -> None:
        """An operator command or a mitigation result, applied at event time ``t``."""
        if record.get("t") == wire.COMMAND:
            self._rescheduled(self.commands.on_command(record["cmd"], value, offset, t))
        else:
            self._rescheduled(self.commands.on_result(record["res"], value, offset, t))

    def _advance(self, target: int) -> None:
        """Apply buffered alerts and due timers in event-time order up to ``target``."""
        ready = self.buffer.due(target)
        released = 0
        end = len(ready)
        timed = self.timed
        while True:
            next_alert = ready[released] if released < end else None
            due = self.schedule.next_due(target)
            command = timed.next_due(target)
            if (
                command is not None
                and (next_alert is None or command.apply_at < next_alert.key[0])
                and (due is None or command.apply_at < due[0])
            ):  # after the alerts and timers of its instant: it was decided about the past
                timed.pop()
                self.buffer.set_clock(command.apply_at)
                self._apply_timed(command, command.apply_at)
                self.state.meta_dirty = True
                continue
            if next_alert is None and due is None:
                break
            if next_alert is not None and (due is None or next_alert.key[0] <= due[0]):
                released += 1
                self.buffer.released(next_alert)
                self._apply(next_alert, late=False)
            elif due is not None:
                self.schedule.take(due)
                self.buffer.set_clock(due[0])
                group = self.state.groups.get(due[1])
                if group is not None:
                    self.incidents.run_timers(group, due[0], self.state.rule(group))
                    self._reschedule(group)
        self.buffer.set_clock(target)
        self.state.meta_dirty = True
        if self.muted.windows:
            self._send_muted(target)

    # ------------------------------------------------------------------ muted alerts

    def _count_muted(self, labels: dict[str, str], t: int, newly: bool) -> None:
        last = self.inhibitions.last
        if last is not None:
            rule, inhibitor = last
            self.muted.count(inhibitor.gkhash, rule, labels, t, newly)
            self.state.meta_dirty = True

    def _send_muted(self, clock: int) -> None:
        """Each muted window that ended, to the partition of its source's group: applied there one
        interval after the window's end (streams.core.mutetally)."""
        interval = self.muted.interval_ms
        for source, start, end, window in self.muted.due(clock):
            command = OperatorCommand(
                command_id=f"muted:{self.partition}:{source}:{start}",
                action=OperatorAction.MUTED,
                by=CORRELATOR,
                at=utc_from_ms(end),
                details={
                    "gkhash": source,
                    "rule": window.rule,
                    "alerts": window.alerts,
                    "notifications": window.notifications,
                    "sample": window.sample,
                    "window_start": utc_from_ms(start).isoformat(),
                    "window_end": utc_from_ms(end).isoformat(),
                },
            )
            self.state.out.cross.append((source, encode_link_command(end + interval, command.to_bytes())))

    # ------------------------------------------------------------------ alerts

    def _now(self, fallback: int) -> int:
        clock = self.buffer.clock
        return clock if clock is not None else fallback

    def _apply(self, item: Buffered, late: bool) -> None:
        note = item.note
        t = max(note.event_ms, self._now(note.event_ms)) if late else note.event_ms
        if item.kind == "i":
            self.inhibitions.apply(str(item.inhibit_rule), note, t, item.route[0] if item.route else "")
            self.state.meta_dirty = True
            return
        if item.kind == "k":
            self._apply_by_key(note, t)
            return
        assert item.route is not None
        gkhash, group_key, rule_name, group_labels = item.route
        state = self.state
        group = state.groups.get(gkhash)
        known = None if group is None else group.alerts.get(note.fingerprint)
        if known is None and late and note.ends_ms is not None and note.ends_ms <= t:
            # Judged at the time it is applied, as the adapters judge an alert at its arrival: its
            # endsAt has passed, so it is a resolved notification of an alert nobody knew.
            state.stats["resolved_unknown"] += 1
            return
        if group is None:
            if not note.firing:
                state.stats["resolved_unknown"] += 1
                return
            group = GroupState(gkhash, group_key, rule_name, group_labels)
            state.add_group(group)
        state.stats["alerts_applied"] += 1
        was_firing = None if known is None else known.firing
        moved = self.alerts.apply(group, note, t)
        if late:
            moved = self._mark_late(group, note.fingerprint, was_firing, t) or moved
        if moved:
            self._reschedule(group)

    def _mark_late(self, group: GroupState, fingerprint: str, was_firing: bool | None, t: int) -> bool:
        """A late notification that added its alert or flipped it is marked ``late`` in the audit
        log, beside the change it made (a late plain re-send is only counted): True if marked."""
        alert = group.alerts.get(fingerprint)
        if alert is None or alert.firing == was_firing:
            return False
        group.mark(alert, AlertChangeKind.LATE, t)
        return True

    def _apply_by_key(self, note: wire.AlertNote, t: int) -> None:
        """A key-only notification: the partition holding the fingerprint applies it, others ignore it."""
        state = self.state
        group = state.groups.get(state.keyed_index.get(note.fingerprint, ""))
        alert = group.alerts.get(note.fingerprint) if group is not None else None
        if group is None or alert is None:
            state.stats["by_key_elsewhere"] += 1
            return
        note.labels = alert.labels
        note.severity = alert.severity
        note.annotations = {**alert.annotations, **note.annotations}
        state.stats["alerts_applied"] += 1
        if self.alerts.apply(group, note, t):
            self._reschedule(group)

    # ------------------------------------------------------------------ timers

    def _rescheduled(self, group: GroupState | None) -> None:
        if group is not None:
            self._reschedule(group)

    def _reschedule(self, group: GroupState) -> None:
        """Put the group at its next due time, or collect it when it has nothing left to do."""
        gkhash = group.gkhash
        if gkhash not in self.state.groups:
            self.schedule.cancel(gkhash)
            return
        due = group_due(group, self.state.rule(group), self.config.flap.settle_ms)
        if due is None:
            self.schedule.cancel(gkhash)
            if Incidents.collectable(group):
                self.state.drop_group(group)
            return
        clock = self.buffer.clock
        self.schedule.set(gkhash, clock if clock is not None and due < clock else due)

    # ------------------------------------------------------------------ state

    def take_events(self) -> list[IncidentEvent]:
        """The incident events so far, for the caller to encode now rather than at the end of the
        transaction: a whole transaction's events alive at once, among the few objects each new
        alert keeps, fragments the allocator's arenas so a worker's memory stays ~60% above what
        its state needs (issue #16). State records still wait for ``take_output``, so a group
        changed many times in one transaction is still written once."""
        events = self.state.out.events
        self.state.out.events = []
        return events

    def take_output(self) -> EngineOutput:
        """Everything to write in this transaction; resets the pending output.

        A batch that only moved the clock (ticks while nothing is due: no event, no record for
        another topic, no group or alert changed) writes nothing and commits nothing, until
        ``QUIET_PERSIST_MS`` of event time or ``QUIET_PERSIST_RECORDS`` input records went by
        that way (and only once ``QUIET_AFTER_MS`` of it passed since the last real output): the partition record and the committed offset stay an older consistent pair,
        and a restart re-reads those ticks to the same state. An idle correlator then writes a
        partition record every few seconds instead of one per tick (issue #16).
        """
        state = self.state
        out = state.out
        out.state.update(codec.changed_records(state))
        if self.links is not None:
            self.links.promise(self.buffer.clock)
            out.links = self.links.take()
        quiet = not out.state and _only_time_moved(out)
        if not quiet:
            self._active = self.buffer.clock
        elif state.meta_dirty and self._may_hold_back():
            out.commit_offset = None
            return state.start_transaction(keep_meta=True)
        if state.meta_dirty or out.state:
            out.state[PARTITION_KEY] = codec.encode_meta(
                watermarks=self.watermarks,
                buffer=self.buffer,
                processed=self.processed,
                silences=self.silences,
                inhibitions=self.inhibitions,
                links=self.links,
                timed=self.timed,
                muted=self.muted,
            )
            self._persisted = (self.buffer.clock, self.processed)
        out.commit_offset = self.buffer.oldest_offset(default=self.processed + 1)
        return state.start_transaction()

    def wanted_watermark(self) -> int | None:
        """The watermark at which this partition next has something to do with no new input: the
        earliest waiting alert, group timer, held command or muted window, or (linking) the
        linker's answer to what it was sent, plus ``allowed_lateness``. None: nothing, ever.

        The ingest stage ticks a partition only while this has come (issue #16): an idle
        partition gets no ticks, yet every timer still fires at its time. Pure: a function of the
        state, so the same after a restart.
        """
        candidates = [
            t
            for t in (
                self.buffer.earliest_or_none(),
                self.schedule.earliest(),
                self.timed.earliest(),
                self.muted.earliest_end(),
                self.links.answer_due() if self.links is not None else None,
            )
            if t is not None
        ]
        return min(candidates) + self.lateness if candidates else None

    def _may_hold_back(self) -> bool:
        """Whether the partition record written last is recent enough to stay the committed one."""
        clock, processed = self._persisted
        now, active = self.buffer.clock, self._active
        if clock is None or now is None or (active is not None and now - active < QUIET_AFTER_MS):
            return False
        return now - clock < QUIET_PERSIST_MS and self.processed - processed < QUIET_PERSIST_RECORDS

    def restore(self, items: dict[str, bytes]) -> None:
        """Rebuild state from the latest value of every key of this partition's changelog."""
        meta = items.get(PARTITION_KEY)
        if meta is not None:
            self.processed = codec.restore_meta(
                meta,
                watermarks=self.watermarks,
                buffer=self.buffer,
                silences=self.silences,
                inhibitions=self.inhibitions,
                links=self.links,
                timed=self.timed,
                muted=self.muted,
            )
        self._persisted = (self.buffer.clock, self.processed)
        codec.restore_groups(items, self.state)
        settle_ms = self.config.flap.settle_ms
        for group in self.state.groups.values():
            rebuild_alert_timers(group, self.state.rule(group).resolve_timeout_ms, settle_ms)
            self._reschedule(group)

    # ------------------------------------------------------------------ views

    def snapshot_counts(self) -> dict[str, int]:
        groups = self.state.groups.values()
        return {
            "groups": len(groups),
            "alerts": sum(len(g.alerts) for g in groups),
            "open_incidents": sum(1 for g in groups if g.incident is not None and g.incident.active),
            "buffered": len(self.buffer),
        }

    def _dead_letter(self, reason: DeadLetterReason, detail: str, raw: bytes, offset: int) -> None:
        self.state.dead_letter(reason, detail, raw, offset, self._now(0))


def _only_time_moved(out: EngineOutput) -> bool:
    """Nothing to write but the partition record (observations are metrics, not records)."""
    return not (out.events or out.dead_letters or out.feedback or out.silences or out.cross or out.links)


def _decode_notifications(value: bytes) -> list[Notification]:
    """A packed record's notifications, decoded again when the first of them is due."""
    return _notifications(wire.decode(value))


def _notifications(record: dict[str, Any]) -> list[Notification]:
    """The notifications of an alerts, inhibitor or key-only record, with their route or rule."""
    if record["t"] == wire.INHIBITOR:  # its route only names the source's group (``h``)
        source: WireRoute = (str(record.get("h", "")), "", "", {})
        return [(wire.AlertNote.from_wire(record["al"]), source, str(record["rule"]))]
    if record["t"] == wire.BY_KEY:
        return [(wire.AlertNote.from_wire(record["al"]), None, None)]
    route = (str(record["h"]), str(record["gk"]), str(record["r"]), dict(record["gl"]))
    return [(wire.AlertNote.from_wire(row), route, None) for row in record["al"]]
