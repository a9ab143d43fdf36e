"""What the ``stormwatch notify`` stage remembers per incident: the policy state plus an outbox.

The stage keeps one ``NotifyRecord`` per incident in a compacted changelog, written in the same
Kafka transaction as its input offsets and its delivery log records. A decision of
``NotifyPolicy`` becomes one ``OutboxItem`` per integration of the receiver; an item leaves the
outbox only in the transaction that records its outcome (sent, or given up to the dead-letter
topic). So after a crash the restored outbox holds exactly the notifications whose outcome was
not committed: they are sent again (at least once), and nothing recorded as sent is sent again.

Items of one (receiver, integration) of an incident are a lane: only its head is tried, so a
receiver that is down gets the incident's messages in event order once it is back.

Pure: no clock (times are passed in), no I/O; the stage sends and reports each outcome with
``settle``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from stormwatch.agents.core.notify_config import Retry
from stormwatch.agents.core.notify_payloads import PayloadAlert, alert_order, fold_alerts, incident_active
from stormwatch.agents.core.notify_policy import Delivery, IncidentNotifyState
from stormwatch.schemas.alert import AlertStatus
from stormwatch.schemas.commands import OperatorAction, OperatorCommand
from stormwatch.schemas.common import ms_from_dt, rfc3339, utc_from_ms
from stormwatch.schemas.incident import IncidentEvent

__all__ = [
    "NOTIFIER",
    "STATE_ALERTS_MAX",
    "DeliveryOutcome",
    "IntegrationInfo",
    "NotifyRecord",
    "OutboxItem",
    "audit_command",
    "cap_alerts",
    "delivery_log_record",
]

NOTIFIER = "notifier"
"""Who the notifier's audit commands are by (``OperatorCommand.by``, the event's actor)."""

STATE_ALERTS_MAX = 100
"""Alerts of one incident kept in its record (for the webhook payload) when no webhook sets a
smaller ``max_alerts``: a primary with thousands of alerts would otherwise make a record of
megabytes, rewritten on every event. Firing alerts are kept first; the payload's
``truncatedAlerts`` counts the rest (from the incident's ``alert_count``)."""

_RECORD_VERSION = 1

DeliveryOutcome = Literal["sent", "failed", "given_up", "skipped"]
"""What one attempt came to: ``sent`` (accepted by the receiver), ``failed`` (will be retried),
``given_up`` (a final failure or the retry budget spent: the dead-letter topic), ``skipped``
(an integration with ``send_resolved: false`` and a resolved incident; never written)."""


@dataclass(frozen=True, slots=True)
class IntegrationInfo:
    """What the outbox needs to know of one integration of a receiver (its position is its id)."""

    kind: str
    send_resolved: bool


@dataclass(slots=True)
class OutboxItem:
    """One notification to one integration, until its outcome is committed."""

    notification_id: str
    receiver: str
    integration: int  # index in the receiver's integrations (``integrations_for`` order)
    kind: str  # the integration's kind, checked against the configuration after a restart
    seq: int  # the incident event it shows (the latest when it was decided)
    trigger: str | None  # NotifyOn value; None for a repeat
    repeat: int
    decided_ms: int  # when the policy decided it (event time or the timer's time)
    event_ms: int  # the time of the event it shows (a repeat: its timer): delivery latency runs from here
    attempts: int = 0
    first_ms: int | None = None  # first attempt (the retry budget runs from here)
    next_ms: int = 0  # not tried before this

    @property
    def lane(self) -> tuple[str, int]:
        return (self.receiver, self.integration)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.notification_id,
            "r": self.receiver,
            "i": self.integration,
            "k": self.kind,
            "seq": self.seq,
            "t": self.trigger,
            "rp": self.repeat,
            "d": self.decided_ms,
            "e": self.event_ms,
            "n": self.attempts,
            "f": self.first_ms,
            "nx": self.next_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutboxItem:
        return cls(
            notification_id=data["id"],
            receiver=data["r"],
            integration=data["i"],
            kind=data["k"],
            seq=data["seq"],
            trigger=data["t"],
            repeat=data["rp"],
            decided_ms=data["d"],
            event_ms=data["e"],
            attempts=data["n"],
            first_ms=data["f"],
            next_ms=data["nx"],
        )


def _alert_json(a: PayloadAlert) -> dict[str, Any]:
    return {
        "fp": a.fingerprint,
        "st": a.status.value,
        "l": dict(a.labels),
        "a": dict(a.annotations),
        "s": ms_from_dt(a.starts_at),
        "e": ms_from_dt(a.ends_at) if a.ends_at is not None else None,
        "g": a.generator_url,
    }


def _alert_from(data: dict[str, Any]) -> PayloadAlert:
    return PayloadAlert(
        fingerprint=data["fp"],
        status=AlertStatus(data["st"]),
        labels=data["l"],
        annotations=data["a"],
        starts_at=utc_from_ms(data["s"]),
        ends_at=utc_from_ms(data["e"]) if data["e"] is not None else None,
        generator_url=data["g"],
    )


@dataclass(slots=True)
class NotifyRecord:
    """One incident as the notifier keeps it: the policy state, the incident's alerts (for the
    webhook payload), the events outbox items show, and the outbox."""

    state: IncidentNotifyState
    alerts: dict[str, PayloadAlert] = field(default_factory=dict)
    events: dict[int, IncidentEvent] = field(default_factory=dict)  # seq -> event, without its alerts
    outbox: list[OutboxItem] = field(default_factory=list)
    notified: bool = False  # a notification of this incident was delivered (the next is not its first)

    @classmethod
    def new(cls, incident_id: str) -> NotifyRecord:
        return cls(IncidentNotifyState(incident_id))

    @property
    def incident_id(self) -> str:
        return self.state.incident_id

    @property
    def latest(self) -> IncidentEvent | None:
        return self.events[max(self.events)] if self.events else None

    def observe(self, event: IncidentEvent, keep_alerts: int) -> None:
        """Take the incident's next event (before the policy decides on it): its alerts are
        folded in, at most ``keep_alerts`` of them (0: none, when no integration shows them), the
        event kept as the latest."""
        if event.seq <= self.state.last_seq:
            return  # a redelivery: nothing new
        if keep_alerts > 0:
            self.alerts = cap_alerts(fold_alerts(self.alerts, event), keep_alerts)
        self.events[event.seq] = event.model_copy(update={"alerts": []})
        self._prune()

    def plan(
        self,
        deliveries: Sequence[Delivery],
        integrations: Mapping[str, Sequence[IntegrationInfo]],
        now_ms: int,
    ) -> list[OutboxItem]:
        """Put each delivery in the outbox, one item per integration of its receiver; the items
        show the incident as of its latest event. Integrations with ``send_resolved: false`` get
        nothing once the incident is over. Returns the new items."""
        latest = self.latest
        if latest is None:
            return []
        resolved = not incident_active(latest)
        added: list[OutboxItem] = []
        for d in deliveries:
            for index, info in enumerate(integrations.get(d.receiver, ())):
                if resolved and not info.send_resolved:
                    continue
                added.append(
                    OutboxItem(
                        notification_id=d.notification_id,
                        receiver=d.receiver,
                        integration=index,
                        kind=info.kind,
                        seq=latest.seq,
                        trigger=d.trigger.value if d.trigger else None,
                        repeat=d.repeat,
                        decided_ms=d.at_ms,
                        # a repeat is about no new event: its latency runs from its timer
                        event_ms=d.at_ms if d.repeat else ms_from_dt(latest.at),
                        next_ms=now_ms,
                    )
                )
        self.outbox.extend(added)
        return added

    def heads(self) -> Iterator[OutboxItem]:
        """The first item of each lane, in outbox order: the only ones that may be tried."""
        seen: set[tuple[str, int]] = set()
        for item in self.outbox:
            if item.lane not in seen:
                seen.add(item.lane)
                yield item

    def due(self, now_ms: int) -> list[OutboxItem]:
        return [item for item in self.heads() if item.next_ms <= now_ms]

    def next_send_ms(self) -> int | None:
        return min((item.next_ms for item in self.heads()), default=None)

    def settle(
        self, item: OutboxItem, *, ok: bool, retryable: bool, retry: Retry, now_ms: int, jitter: float
    ) -> DeliveryOutcome:
        """Record one attempt's result: ``sent`` and ``given_up`` remove the item (the caller
        writes the outcome in the same transaction); ``failed`` schedules the next attempt
        ``retry.delay_ms`` later, or gives up when the budget is spent."""
        item.attempts += 1
        if item.first_ms is None:
            item.first_ms = now_ms
        if ok:
            self._remove(item)
            return "sent"
        if not retryable or retry.exhausted(item.first_ms, now_ms):
            self._remove(item)
            return "given_up"
        item.next_ms = now_ms + retry.delay_ms(item.attempts, jitter)
        if retry.exhausted(item.first_ms, item.next_ms):
            item.next_ms = item.first_ms + retry.budget_ms  # one last try when the budget ends
        return "failed"

    def drop(self, item: OutboxItem) -> None:
        """Remove an item that can no longer be sent (its integration left the configuration)."""
        self._remove(item)

    def _remove(self, item: OutboxItem) -> None:
        self.outbox = [i for i in self.outbox if i is not item]
        self._prune()

    def _prune(self) -> None:
        """Keep the latest event and those outbox items show."""
        if not self.events:
            return
        keep = {max(self.events)} | {i.seq for i in self.outbox}
        for seq in [s for s in self.events if s not in keep]:
            del self.events[seq]

    @property
    def finished(self) -> bool:
        """Closed, nothing waiting in the policy or the outbox: the key can be deleted."""
        return self.state.finished and not self.outbox

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "v": _RECORD_VERSION,
                "s": orjson.loads(self.state.to_bytes()),
                "a": [_alert_json(a) for _, a in sorted(self.alerts.items())],
                "ev": [orjson.loads(e.to_bytes()) for _, e in sorted(self.events.items())],
                "o": [i.to_json() for i in self.outbox],
                **({"nf": True} if self.notified else {}),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> NotifyRecord:
        raw = orjson.loads(data)
        if not isinstance(raw, dict) or raw.get("v") != _RECORD_VERSION:
            version = raw.get("v") if isinstance(raw, dict) else None
            raise ValueError(f"notifier record version {version!r} is not {_RECORD_VERSION}")
        events = [IncidentEvent.model_validate(e) for e in raw["ev"]]
        return cls(
            state=IncidentNotifyState.from_bytes(orjson.dumps(raw["s"])),
            alerts={a["fp"]: _alert_from(a) for a in raw["a"]},
            events={e.seq: e for e in events},
            outbox=[OutboxItem.from_json(i) for i in raw["o"]],
            notified=bool(raw.get("nf", False)),
        )


def delivery_log_record(
    item: OutboxItem,
    outcome: DeliveryOutcome,
    *,
    incident_id: str,
    status: int | None,
    detail: str,
    latency_s: float,
    at_ms: int,
) -> dict[str, Any]:
    """One record of the notification log (and, for ``given_up``, of the dead-letter topic):
    what was sent to whom, which attempt, and how it went."""
    return {
        "notification_id": item.notification_id,
        "incident_id": incident_id,
        "receiver": item.receiver,
        "integration": item.kind,
        "integration_index": item.integration,
        "seq": item.seq,
        "trigger": item.trigger,
        "repeat": item.repeat,
        "outcome": outcome,
        "attempt": item.attempts,
        "status": status,
        "detail": detail,
        "latency_s": round(latency_s, 6),
        "decided_at": rfc3339(utc_from_ms(item.decided_ms)),
        "at": rfc3339(utc_from_ms(at_ms)),
        "delivery_latency_s": round(max(at_ms - item.event_ms, 0) / 1000, 3),
    }


def cap_alerts(alerts: dict[str, PayloadAlert], limit: int) -> dict[str, PayloadAlert]:
    """At most ``limit`` alerts: the first in the webhook payload's order (firing before
    resolved, then by start), so a capped record still shows what the payload would list first."""
    if len(alerts) <= limit:
        return alerts
    kept = sorted(alerts.values(), key=alert_order)[:limit]
    return {a.fingerprint: a for a in kept}


def audit_command(
    entry: Mapping[str, Any], *, first: bool, integration_index: int, at_ms: int
) -> OperatorCommand:
    """The ``notified`` operator command (by ``notifier``) that records one final outcome on the
    incident's audit log: ``delivered`` or ``given_up``. Its id is derived from the notification
    id, the integration and the outcome, so a copy sent again after a crash is one the correlator
    has seen (it keeps the command ids of each incident) and writes no second event. ``first``
    marks the incident's first delivery: the correlator measures ``mtta_notified`` from it."""
    outcome = "delivered" if entry["outcome"] == "sent" else "given_up"
    nid = entry["notification_id"]
    details: dict[str, Any] = {
        "receiver": entry["receiver"],
        "integration": entry["integration"],
        "notification_id": nid,
        "attempt": entry["attempt"],
        "outcome": outcome,
        "latency_ms": round(float(entry["latency_s"]) * 1000, 1),
        "delivery_latency_ms": round(float(entry["delivery_latency_s"]) * 1000),
        "trigger": entry["trigger"],
        "seq": entry["seq"],
    }
    if outcome == "given_up":
        details["reason"] = entry["detail"] or "given up"
    elif first:
        details["first"] = True
    return OperatorCommand(
        command_id=f"notify:{nid}:{integration_index}:{outcome}",
        action=OperatorAction.NOTIFIED,
        incident_id=entry["incident_id"],
        by=NOTIFIER,
        at=utc_from_ms(at_ms),
        details=details,
    )
