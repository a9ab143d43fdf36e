"""Which incident events become notifications, to whom, and when: the notifier's decisions.

The ``stormwatch notify`` stage (issue #13) feeds every incident event to ``NotifyPolicy.on_event``
and calls ``on_due`` when the earliest ``next_due_ms`` has passed; both return the deliveries to
make now. The state they work on, ``IncidentNotifyState``, is one record per incident (with one
entry per receiver), small and serializable, so the stage can keep it in a compacted changelog
next to its input offsets. Nothing here reads a clock: events carry their time, timers get it
passed in.

Per incident and receiver:

- an event notifies when its meaning (``NotifyOn``) is in the route's ``notify_on``; the first
  event a receiver hears of an active incident is its ``opened``, and it hears ``resolved`` only
  if it was told the incident was active;
- at most one message per ``group_interval``: a notifiable event within the interval since the
  last message waits, later ones replace it, and it goes out when the interval has passed (the
  message shows the incident as it is then);
- once acknowledged, only ``resolved`` (and the ``acknowledged`` event itself) notifies, unless
  the route says ``after_ack: all``; a reopen starts over;
- ``repeat_interval`` re-sends while the incident is active and unacknowledged;
- an incident linked into another (``snapshot.linked_into``, a member) is routed nowhere: people
  hear of the primary, whose ``member_added`` is an update; a member's waiting message is
  dropped, and only its end reaches a receiver that was told it opened (a waiting ``resolved``
  is kept, whatever the member's later events);
- with linking on (``link_wait_ms`` > 0), a receiver's first message about an incident waits
  until ``link_wait`` after the incident opened (event time, like ``group_interval``): linked
  meanwhile, the member never pages; the linker's first word about it (``root_cause_changed``,
  ``member_added``: it is a primary) sends it at once. Resolved within the wait, nobody is told
  (it never paged: Alertmanager's group_wait does the same);
- a muted route (time intervals) holds its message and looks again a ``group_interval`` later
  (at least a minute), as Alertmanager's next flush would.

A notification's id is ``xxh3_128(incident, seq, receiver)`` (a repeat adds its number), so a
replayed event decides the same id, and the stage's notification log can drop what it already
delivered. Events at or below the last seq seen are ignored: a redelivered event never notifies
twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import xxhash

from stormwatch.agents.core.notify_config import AfterAck, NotifierConfig, NotifyOn, RouteNode
from stormwatch.agents.core.notify_routing import muted_by, route, route_labels
from stormwatch.schemas.common import Severity, ms_from_dt
from stormwatch.schemas.incident import IncidentEvent, IncidentEventType, IncidentState

__all__ = [
    "LINK_WAIT_MARGIN_MS",
    "MUTE_RECHECK_MS",
    "Delivery",
    "Held",
    "IncidentNotifyState",
    "NotifyPolicy",
    "Outcome",
    "ReceiverState",
    "classify",
    "default_link_wait_ms",
    "is_notification_outcome",
    "notification_id",
]

MUTE_RECHECK_MS = 60_000
"""A muted message is looked at again after its group_interval, but not sooner than this
(time intervals have minute resolution)."""

_ACTIVE = frozenset({IncidentState.OPEN, IncidentState.ACKNOWLEDGED, IncidentState.MITIGATING})
_AFTER_ACK = frozenset({NotifyOn.RESOLVED, NotifyOn.ACKNOWLEDGED})
_STARTS = frozenset({NotifyOn.OPENED, NotifyOn.REOPENED})
_STATE_VERSION = 1
_LINK_EVENTS = frozenset(
    {
        IncidentEventType.LINKED,
        IncidentEventType.MEMBER_ADDED,
        IncidentEventType.UNLINKED,
        IncidentEventType.ROOT_CAUSE_CHANGED,
    }
)


_LINK_DECIDED = frozenset({IncidentEventType.MEMBER_ADDED, IncidentEventType.ROOT_CAUSE_CHANGED})
"""Events of a primary: the linker has decided about the incident, a held first message goes."""

LINK_WAIT_MARGIN_MS = 5_000
"""Added to the topology's ``link.delay`` for the default ``link_wait``: the ``linked`` event
comes exactly ``delay`` after ``opened`` in event time, and the margin covers the pipeline
writing it later than the notifier's clock passes that time."""


def default_link_wait_ms(link_delay_ms: int | None) -> int:
    """``link_wait`` when the notifier file sets none: ``link.delay`` plus a margin with a
    topology (linking on), 0 without one (nothing is ever linked: nothing to wait for)."""
    return 0 if link_delay_ms is None else link_delay_ms + LINK_WAIT_MARGIN_MS


_NOTIFY_ON_VALUES = frozenset(n.value for n in NotifyOn)
_OUTCOME_EVENTS = frozenset({IncidentEventType.NOTIFIED, IncidentEventType.NOTIFY_FAILED})


def is_notification_outcome(event: IncidentEvent) -> bool:
    """An event the notifier itself caused: a notification's outcome (``notified``,
    ``notify_failed``) or the refusal of one. Never a trigger: no notification about a
    notification. The stage skips these before the policy sees them."""
    if event.type in _OUTCOME_EVENTS:
        return True
    return event.type is IncidentEventType.REFUSED and event.details.get("action") == "notified"


def notification_id(incident_id: str, seq: int, receiver: str, repeat: int = 0) -> str:
    """``xxh3_128`` of (incident, event seq, receiver[, repeat number]) as hex; fields are joined
    by the unit separator, which names cannot contain, so two triples never share a text."""
    parts = [incident_id, str(seq), receiver]
    if repeat:
        parts += ["repeat", str(repeat)]
    return xxhash.xxh3_128_hexdigest("\x1f".join(parts).encode())


def classify(event: IncidentEvent, previous_severity: Severity | None) -> NotifyOn:
    """What the event means to a receiver (``NotifyOn``).

    ``severity_changed`` is raised or lowered against the severity of the previous event (an
    unknown previous severity makes it ``updated``); closing or merging an incident that was still
    active is its ``resolved``.
    """
    kind = event.type
    if kind is IncidentEventType.SEVERITY_CHANGED:
        new = event.snapshot.severity
        if previous_severity is None or new == previous_severity:
            return NotifyOn.UPDATED
        return NotifyOn.SEVERITY_RAISED if new.rank < previous_severity.rank else NotifyOn.SEVERITY_LOWERED
    if kind in (IncidentEventType.CLOSED, IncidentEventType.MERGED) and event.from_state in _ACTIVE:
        return NotifyOn.RESOLVED
    if kind in _LINK_EVENTS:
        return NotifyOn.UPDATED  # the incident's make-up changed: a member joined or left, a root cause
    if kind.value in _NOTIFY_ON_VALUES:
        return NotifyOn(kind.value)
    # An event type with no NotifyOn of its own (``muted``: what the incident's alerts muted by
    # inhibition, and any type added later) changes no state a receiver is told of: ``updated``.
    return NotifyOn.UPDATED


@dataclass(frozen=True, slots=True)
class Delivery:
    """A notification to make now: render the incident as of its latest event, send it to every
    integration of ``receiver`` (integrations with ``send_resolved: false`` skip ``resolved``)."""

    notification_id: str
    incident_id: str
    receiver: str
    seq: int  # the event that decided it (for a repeat: the latest event)
    trigger: NotifyOn | None  # None for a repeat
    repeat: int  # 0, or which reminder for this seq
    at_ms: int  # when it was decided (event time, or the timer's time)
    route: str  # the route's path in the file, for logs


@dataclass(frozen=True, slots=True)
class Held:
    """A notification not sent now, and why: waiting (``until_ms``) or dropped (None)."""

    receiver: str
    seq: int
    reason: str
    until_ms: int | None


@dataclass(frozen=True, slots=True)
class Outcome:
    deliveries: tuple[Delivery, ...] = ()
    held: tuple[Held, ...] = ()
    next_due_ms: int | None = None  # call on_due at this time (None: no timer needed)


@dataclass(slots=True)
class ReceiverState:
    """One receiver's view of one incident, with the route settings it was last routed with (a
    receiver told an incident opened is told it resolved, even if ``resolved`` routes elsewhere)."""

    route: str
    group_interval_ms: int
    repeat_interval_ms: int
    mute: tuple[str, ...] = ()
    active: tuple[str, ...] = ()
    notify_on: frozenset[NotifyOn] = frozenset()
    after_ack: AfterAck = AfterAck.RESOLVE_ONLY
    told: bool = False  # its last message showed the incident active
    sent_ms: int | None = None
    pending_seq: int | None = None
    pending_trigger: NotifyOn | None = None
    pending_due_ms: int | None = None
    repeat_due_ms: int | None = None
    repeat_seq: int = 0
    repeats: int = 0

    @classmethod
    def of(cls, node: RouteNode) -> ReceiverState:
        state = cls(route=node.path, group_interval_ms=0, repeat_interval_ms=0)
        state.adopt(node)
        return state

    def adopt(self, node: RouteNode) -> None:
        """Take the settings of the route the latest event came through."""
        self.route = node.path
        self.group_interval_ms = node.group_interval_ms
        self.repeat_interval_ms = node.repeat_interval_ms
        self.mute = node.mute_time_intervals
        self.active = node.active_time_intervals
        self.notify_on = node.notify_on
        self.after_ack = node.after_ack

    @property
    def due_ms(self) -> int | None:
        """The next timer: a waiting message first (sending it restarts the repeat interval)."""
        return self.pending_due_ms if self.pending_seq is not None else self.repeat_due_ms

    def drop_pending(self) -> None:
        self.pending_seq = self.pending_trigger = self.pending_due_ms = None

    def to_json(self) -> dict[str, Any]:
        """Short keys, defaults left out: one record per incident stays a few hundred bytes."""
        out: dict[str, Any] = {
            "rt": self.route,
            "gi": self.group_interval_ms,
            "ri": self.repeat_interval_ms,
            "on": sorted(n.value for n in self.notify_on),
            "aa": self.after_ack.value,
        }
        optional: dict[str, Any] = {
            "mu": list(self.mute),
            "ac": list(self.active),
            "told": self.told,
            "sent": self.sent_ms,
            "pq": self.pending_seq,
            "pt": self.pending_trigger.value if self.pending_trigger else None,
            "pd": self.pending_due_ms,
            "rd": self.repeat_due_ms,
            "rs": self.repeat_seq,
            "rn": self.repeats,
        }
        out.update({k: v for k, v in optional.items() if v})
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReceiverState:
        return cls(
            route=data["rt"],
            group_interval_ms=data["gi"],
            repeat_interval_ms=data["ri"],
            mute=tuple(data.get("mu", ())),
            active=tuple(data.get("ac", ())),
            notify_on=frozenset(NotifyOn(v) for v in data["on"]),
            after_ack=AfterAck(data["aa"]),
            told=bool(data.get("told", False)),
            sent_ms=data.get("sent"),
            pending_seq=data.get("pq"),
            pending_trigger=NotifyOn(data["pt"]) if data.get("pt") else None,
            pending_due_ms=data.get("pd"),
            repeat_due_ms=data.get("rd"),
            repeat_seq=data.get("rs", 0),
            repeats=data.get("rn", 0),
        )


@dataclass(slots=True)
class IncidentNotifyState:
    """What the notifier remembers of one incident; the changelog record of its key."""

    incident_id: str
    last_seq: int = 0
    severity: Severity | None = None
    active: bool = False
    acked: bool = False
    closed: bool = False
    receivers: dict[str, ReceiverState] = field(default_factory=dict)

    @property
    def next_due_ms(self) -> int | None:
        dues = [d for r in self.receivers.values() if (d := r.due_ms) is not None]
        return min(dues) if dues else None

    @property
    def finished(self) -> bool:
        """Closed with nothing waiting: the stage may delete the record (a tombstone), in the
        same transaction that commits the offset past the closing event."""
        return self.closed and self.next_due_ms is None

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "v": _STATE_VERSION,
                "id": self.incident_id,
                "seq": self.last_seq,
                "sev": self.severity.value if self.severity else None,
                "act": self.active,
                "ack": self.acked,
                "cl": self.closed,
                "r": {name: r.to_json() for name, r in sorted(self.receivers.items())},
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> IncidentNotifyState:
        raw = orjson.loads(data)
        if not isinstance(raw, dict) or raw.get("v") != _STATE_VERSION:
            version = raw.get("v") if isinstance(raw, dict) else None
            raise ValueError(f"notifier state version {version!r} is not {_STATE_VERSION}")
        return cls(
            incident_id=raw["id"],
            last_seq=raw["seq"],
            severity=Severity(raw["sev"]) if raw.get("sev") else None,
            active=raw["act"],
            acked=raw["ack"],
            closed=raw["cl"],
            receivers={name: ReceiverState.from_json(r) for name, r in raw["r"].items()},
        )


@dataclass(slots=True)
class _Step:
    """The outcome being built: deliveries and holds of one call."""

    deliveries: list[Delivery] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)

    def outcome(self, state: IncidentNotifyState) -> Outcome:
        return Outcome(tuple(self.deliveries), tuple(self.held), state.next_due_ms)


class NotifyPolicy:
    """The decisions for one notifier file; stateless itself, it works on the state passed in
    (and changes it in place)."""

    def __init__(self, config: NotifierConfig, link_wait_ms: int | None = None) -> None:
        """``link_wait_ms``: how long a first message waits for the linker (None: the file's
        ``link_wait``, else 0; the stage passes the default it derives from the topology)."""
        self.config = config
        wait = link_wait_ms if link_wait_ms is not None else config.link_wait_ms
        self.link_wait_ms = max(wait or 0, 0)

    def _deliverable(self, receiver: str) -> bool:
        """A receiver with no integration drops what it gets (Alertmanager's null receiver)."""
        known = self.config.receivers.get(receiver)
        return known is not None and known.integrations > 0

    def on_event(self, state: IncidentNotifyState, event: IncidentEvent) -> Outcome:
        """Apply the incident's next event; deliveries to make now, and when to call on_due."""
        if event.incident_id != state.incident_id:
            raise ValueError(f"event of {event.incident_id} given to the state of {state.incident_id}")
        if event.seq <= state.last_seq or is_notification_outcome(event):
            return Outcome(next_due_ms=state.next_due_ms)  # a redelivery, or the notifier's own echo
        at = ms_from_dt(event.at)
        snapshot = event.snapshot
        fresh = state.last_seq == 0
        trigger = classify(event, state.severity)
        state.last_seq = event.seq
        state.severity = snapshot.severity
        state.active = snapshot.state in _ACTIVE
        state.closed = snapshot.state is IncidentState.CLOSED
        state.acked = _acknowledged(state, event, fresh)
        member = snapshot.linked_into
        # A first message waits for the linker until hold_until, unless this event is the
        # linker's word about the incident (it is a primary, or stands alone): then it goes now.
        # Measured from the `opened` event, which is what the linker's note carries (its time is
        # the first alert's plus group_wait): from ``opened_at`` a group_wait would eat the wait.
        opened_ms = at if event.type is IncidentEventType.OPENED else ms_from_dt(snapshot.opened_at)
        hold_until = (
            opened_ms + self.link_wait_ms
            if self.link_wait_ms > 0 and event.type not in _LINK_DECIDED
            else None
        )
        released = event.type in _LINK_DECIDED
        routed = (
            {}
            if member is not None  # a member is told through its primary: routed nowhere itself
            else {
                n.receiver: n
                for n in route(self.config, route_labels(snapshot))
                if self._deliverable(n.receiver)
            }
        )
        for gone in [n for n in state.receivers if not self._deliverable(n)]:
            del state.receivers[gone]  # removed from the file since
        step = _Step()
        for name in [*routed, *sorted(n for n in state.receivers if n not in routed)]:
            node = routed.get(name)
            rs = state.receivers.get(name)
            if rs is None:
                assert node is not None
                rs = state.receivers[name] = ReceiverState.of(node)
            elif node is not None:
                rs.adopt(node)
            if member is not None:
                _quieten(name, rs, member, ended=not state.active, step=step)
            self._apply(state, name, rs, node is not None, trigger, event.seq, at, step, hold_until, released)
        return step.outcome(state)

    def on_due(self, state: IncidentNotifyState, now_ms: int) -> Outcome:
        """Send what is due at ``now_ms``: waiting messages whose interval passed, and repeats."""
        step = _Step()
        for name in sorted(state.receivers):
            rs = state.receivers[name]
            if not self._deliverable(name):
                del state.receivers[name]
                continue
            if rs.pending_seq is not None and rs.pending_due_ms is not None and rs.pending_due_ms <= now_ms:
                reason = self._muted(rs, now_ms)
                if reason is not None:
                    rs.pending_due_ms = now_ms + max(rs.group_interval_ms, MUTE_RECHECK_MS)
                    step.held.append(Held(name, rs.pending_seq, reason, rs.pending_due_ms))
                    continue
                self._send(state, name, rs, rs.pending_seq, rs.pending_trigger, now_ms, step)
            elif rs.pending_seq is None and rs.repeat_due_ms is not None and rs.repeat_due_ms <= now_ms:
                if not state.active or state.acked:
                    rs.repeat_due_ms = None
                    continue
                reason = self._muted(rs, now_ms)
                if reason is not None:
                    rs.repeat_due_ms = now_ms + max(rs.group_interval_ms, MUTE_RECHECK_MS)
                    step.held.append(Held(name, state.last_seq, reason, rs.repeat_due_ms))
                    continue
                rs.repeats = rs.repeats + 1 if rs.repeat_seq == state.last_seq else 1
                rs.repeat_seq = state.last_seq
                self._send(state, name, rs, state.last_seq, None, now_ms, step, repeat=rs.repeats)
        return step.outcome(state)

    # ------------------------------------------------------------------ the decision for one receiver

    def _apply(
        self,
        state: IncidentNotifyState,
        name: str,
        rs: ReceiverState,
        routed: bool,
        trigger: NotifyOn,
        seq: int,
        at: int,
        step: _Step,
        hold_until: int | None = None,
        released: bool = False,
    ) -> None:
        if not state.active or state.acked:
            rs.repeat_due_ms = None
        quiet_after_ack = state.acked and rs.after_ack is AfterAck.RESOLVE_ONLY
        if rs.pending_seq is not None and quiet_after_ack and rs.pending_trigger not in _AFTER_ACK:
            step.held.append(Held(name, rs.pending_seq, "dropped: the incident was acknowledged", None))
            rs.drop_pending()
        if not routed and trigger is not NotifyOn.RESOLVED:
            return  # only the end of an incident follows a receiver it no longer routes to
        first = rs.sent_ms is None and rs.pending_seq is None
        if first and state.active and trigger not in _STARTS:
            trigger = NotifyOn.OPENED  # the first this receiver hears of an active incident
        if trigger is NotifyOn.RESOLVED and not rs.told:
            if rs.pending_seq is not None:
                step.held.append(Held(name, rs.pending_seq, "dropped: resolved before it was told", None))
                rs.drop_pending()
            return
        first_waiting = (
            rs.pending_seq is not None and not rs.told and state.active and rs.pending_trigger in _STARTS
        )
        if first_waiting and released and rs.sent_ms is None:
            assert rs.pending_trigger is not None
            trigger = rs.pending_trigger  # the first message, held for the linker: it goes now
        if trigger not in rs.notify_on:
            return
        if quiet_after_ack and trigger not in _AFTER_ACK:
            step.held.append(Held(name, seq, "acknowledged: after_ack is resolve_only", None))
            return
        if first_waiting:
            assert rs.pending_trigger is not None
            trigger = rs.pending_trigger  # still the receiver's first message about it
        holding = hold_until is not None and rs.sent_ms is None and trigger in _STARTS and at < hold_until
        reason = self._muted(rs, at)
        if reason is not None:
            due = at + max(rs.group_interval_ms, MUTE_RECHECK_MS)
            self._wait(rs, seq, trigger, max(due, hold_until) if holding and hold_until else due)
            step.held.append(Held(name, seq, reason, rs.pending_due_ms))
        elif holding:
            assert hold_until is not None
            self._wait(rs, seq, trigger, hold_until)
            step.held.append(Held(name, seq, "waiting for the linker: link_wait", hold_until))
        elif rs.sent_ms is None or at >= rs.sent_ms + rs.group_interval_ms:
            self._send(state, name, rs, seq, trigger, at, step)
        else:
            self._wait(rs, seq, trigger, rs.sent_ms + rs.group_interval_ms)
            step.held.append(Held(name, seq, "coalesced: one message per group_interval", rs.pending_due_ms))

    @staticmethod
    def _wait(rs: ReceiverState, seq: int, trigger: NotifyOn, due_ms: int) -> None:
        rs.pending_seq, rs.pending_trigger, rs.pending_due_ms = seq, trigger, due_ms

    def _muted(self, rs: ReceiverState, at_ms: int) -> str | None:
        return muted_by(self.config.time_intervals, rs.mute, rs.active, at_ms)

    @staticmethod
    def _send(
        state: IncidentNotifyState,
        name: str,
        rs: ReceiverState,
        seq: int,
        trigger: NotifyOn | None,
        at: int,
        step: _Step,
        repeat: int = 0,
    ) -> None:
        step.deliveries.append(
            Delivery(
                notification_id=notification_id(state.incident_id, seq, name, repeat),
                incident_id=state.incident_id,
                receiver=name,
                seq=seq,
                trigger=trigger,
                repeat=repeat,
                at_ms=at,
                route=rs.route,
            )
        )
        rs.sent_ms = at
        rs.drop_pending()
        rs.told = state.active
        repeats = rs.repeat_interval_ms > 0 and state.active and not state.acked
        rs.repeat_due_ms = at + max(rs.repeat_interval_ms, rs.group_interval_ms) if repeats else None


def _quieten(name: str, rs: ReceiverState, primary: str, *, ended: bool, step: _Step) -> None:
    """A member (linked into ``primary``) sends nothing of its own: a waiting message is dropped
    and repeats stop. Only its end still reaches a receiver that was told it opened (the end
    follows the receiver): a ``resolved`` waiting out the group_interval is kept while the member
    stays ended, whatever comes next (``closed``, ``updated``, ``muted``); unlinked again, it
    routes as any incident."""
    if rs.pending_seq is not None and not (ended and rs.pending_trigger is NotifyOn.RESOLVED):
        step.held.append(Held(name, rs.pending_seq, f"dropped: linked into {primary}", None))
        rs.drop_pending()
    rs.repeat_due_ms = None


def _acknowledged(state: IncidentNotifyState, event: IncidentEvent, fresh: bool) -> bool:
    """Whether someone acknowledged the incident since it last (re)opened.

    The snapshot's ``acknowledged_at`` survives a reopen, so the events decide: acknowledged sets
    it, opened and reopened clear it. A state started mid-incident (the notifier came later)
    infers it from the snapshot, trusting ``acknowledged_at`` only if it never reopened.
    """
    snapshot = event.snapshot
    if snapshot.state not in _ACTIVE or event.type in (IncidentEventType.OPENED, IncidentEventType.REOPENED):
        return False
    if event.type is IncidentEventType.ACKNOWLEDGED or snapshot.state is IncidentState.ACKNOWLEDGED:
        return True
    if fresh:
        return (
            snapshot.state is IncidentState.MITIGATING
            and snapshot.acknowledged_at is not None
            and snapshot.reopen_count == 0
        )
    return state.acked
