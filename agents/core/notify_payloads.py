"""What a receiver is sent, built from an incident event: pure functions, no I/O.

The receivers (``stormwatch.agents.receivers``) only move bytes; the shapes live here so they can
be tested without a network and read next to the config that shapes them:

- ``webhook_payload``: Alertmanager's webhook v4 JSON, so every existing Alertmanager webhook
  consumer works unchanged. An incident event carries only the alerts that *changed*, so the
  stage keeps the incident's alerts with ``fold_alerts`` and passes them in.
- ``pagerduty_event``: an Events API v2 event with ``dedup_key`` = incident id, so trigger,
  acknowledge and resolve all land on the same PagerDuty alert (and a re-sent trigger is
  absorbed by PagerDuty instead of paging twice).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from stormwatch.agents.core.notify_config import PagerDutyConfig, notification_context, render_header
from stormwatch.schemas.alert import AlertStatus
from stormwatch.schemas.common import rfc3339
from stormwatch.schemas.incident import AlertChangeKind, IncidentEvent, IncidentState

__all__ = [
    "AM_ZERO_TIME",
    "PAGERDUTY_SUMMARY_LIMIT",
    "PayloadAlert",
    "alert_order",
    "event_action",
    "fold_alerts",
    "incident_active",
    "pagerduty_event",
    "webhook_payload",
]

AM_ZERO_TIME = "0001-01-01T00:00:00Z"
"""Alertmanager's ``endsAt`` of an alert with no end (Go's zero time)."""

PAGERDUTY_SUMMARY_LIMIT = 1024
"""PagerDuty refuses a longer ``payload.summary``."""

_ACTIVE = frozenset({IncidentState.OPEN, IncidentState.ACKNOWLEDGED, IncidentState.MITIGATING})
_ENDED = frozenset({AlertChangeKind.RESOLVED, AlertChangeKind.EXPIRED})


@dataclass(frozen=True, slots=True)
class PayloadAlert:
    """One alert of an incident as a receiver shows it (Alertmanager's alert fields)."""

    fingerprint: str
    status: AlertStatus
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime
    ends_at: datetime | None = None
    generator_url: str = ""


def incident_active(event: IncidentEvent) -> bool:
    """Whether the incident is still going on after ``event`` (open, acknowledged or mitigating)."""
    return event.snapshot.state in _ACTIVE


def fold_alerts(known: Mapping[str, PayloadAlert], event: IncidentEvent) -> dict[str, PayloadAlert]:
    """The incident's alerts after ``event``: its alert changes applied to ``known``.

    Labels travel only on ``joined``; an alert first seen in a later change (the notifier started
    mid-incident) gets the incident's group labels, which every alert of the group shares.
    """
    alerts = dict(known)
    for change in event.alerts:
        old = alerts.get(change.fingerprint)
        if old is None:
            old = PayloadAlert(
                fingerprint=change.fingerprint,
                status=change.status,
                labels=dict(change.labels or event.snapshot.group_labels),
                annotations=dict(change.annotations or {}),
                starts_at=change.at,
            )
        labels = dict(change.labels) if change.labels is not None else old.labels
        annotations = dict(change.annotations) if change.annotations is not None else old.annotations
        ended = change.change in _ENDED or change.status is AlertStatus.RESOLVED
        alerts[change.fingerprint] = replace(
            old,
            status=AlertStatus.RESOLVED if ended else change.status,
            labels=labels,
            annotations=annotations,
            ends_at=change.at if ended else None,
            starts_at=change.at if change.change is AlertChangeKind.REFIRED else old.starts_at,
        )
    return alerts


def alert_order(alert: PayloadAlert) -> tuple[bool, datetime, str]:
    """The webhook payload's order: firing alerts first, then by start and fingerprint."""
    return (alert.status is not AlertStatus.FIRING, alert.starts_at, alert.fingerprint)


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """The pairs every map has (Alertmanager's ``commonLabels``/``commonAnnotations``)."""
    if not maps:
        return {}
    first, rest = maps[0], maps[1:]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in rest)}


def _alert_json(alert: PayloadAlert) -> dict[str, Any]:
    return {
        "status": alert.status.value,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": rfc3339(alert.starts_at),
        "endsAt": rfc3339(alert.ends_at) if alert.ends_at is not None else AM_ZERO_TIME,
        "generatorURL": alert.generator_url,
        "fingerprint": alert.fingerprint,
    }


def webhook_payload(
    event: IncidentEvent,
    alerts: Iterable[PayloadAlert],
    *,
    receiver: str,
    external_url: str = "",
    max_alerts: int = 0,
) -> dict[str, Any]:
    """Alertmanager's webhook v4 body for the incident as of ``event``.

    ``status`` follows the incident (firing while it is active), not its alerts, so a receiver
    hears "resolved" exactly when stormwatch says the incident is over. Firing alerts come first,
    so ``max_alerts`` (0: all) cuts resolved ones before firing ones; ``truncatedAlerts`` counts
    what was cut, as in Alertmanager. ``groupKey`` is the correlator's group key.
    """
    ordered = sorted(alerts, key=alert_order)
    shown = ordered[:max_alerts] if max_alerts > 0 else ordered
    snapshot = event.snapshot
    # The notifier keeps a bounded number of an incident's alerts (notify_outbox.STATE_ALERTS_MAX):
    # what it did not keep is counted from the incident's own alert count.
    known = max(len(ordered), snapshot.alert_count)
    return {
        "version": "4",
        "groupKey": snapshot.group_key,
        "truncatedAlerts": known - len(shown),
        "status": "firing" if incident_active(event) else "resolved",
        "receiver": receiver,
        "groupLabels": dict(snapshot.group_labels),
        "commonLabels": _common([a.labels for a in ordered]) if ordered else dict(snapshot.group_labels),
        "commonAnnotations": _common([a.annotations for a in ordered]),
        "externalURL": external_url,
        "alerts": [_alert_json(a) for a in shown],
    }


PagerDutyAction = Literal["trigger", "acknowledge", "resolve"]


def event_action(event: IncidentEvent) -> PagerDutyAction:
    """The PagerDuty action for the incident's state: open is ``trigger`` (a reopen triggers
    again), acknowledged or mitigating is ``acknowledge``, resolved or closed is ``resolve``."""
    state = event.snapshot.state
    if state is IncidentState.OPEN:
        return "trigger"
    if state in _ACTIVE:
        return "acknowledge"
    return "resolve"


def pagerduty_event(
    event: IncidentEvent,
    config: PagerDutyConfig,
    *,
    routing_key: str,
    client_url: str = "",
) -> dict[str, Any]:
    """The Events v2 body for the incident as of ``event``.

    Acknowledge and resolve carry only the key, as PagerDuty ignores a payload on them. Summary
    and source are one-line renders (``render_header``), cut to PagerDuty's limit; label values
    are data, never template text.
    """
    action = event_action(event)
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": event.incident_id,
    }
    if action != "trigger":
        return body
    context = notification_context(event)
    snapshot = event.snapshot
    body["payload"] = {
        "summary": (render_header(config.summary, context) or event.incident_id)[:PAGERDUTY_SUMMARY_LIMIT],
        "source": render_header(config.source, context) or "stormwatch",
        "severity": config.pagerduty_severity(snapshot.severity),
        "timestamp": rfc3339(event.at),
        "group": snapshot.group_key,
        "class": snapshot.rule,
        "custom_details": {
            "incident_id": event.incident_id,
            "state": snapshot.state.value,
            "severity": snapshot.severity.value,
            "event": event.type.value,
            "seq": event.seq,
            "cause": event.cause,
            "alerts": f"{snapshot.firing_count} firing of {snapshot.alert_count}",
            "labels": dict(snapshot.group_labels),
        },
    }
    details = body["payload"]["custom_details"]
    if snapshot.members:  # a primary (issue #12): it speaks for the groups linked into it
        details["members"] = list(snapshot.members)
    if snapshot.root_cause is not None:
        rc = snapshot.root_cause
        details["root_cause"] = {"component": rc.component, "kind": rc.kind, "name": rc.name}
    body["client"] = "stormwatch"
    if client_url:
        body["client_url"] = client_url
    return body
