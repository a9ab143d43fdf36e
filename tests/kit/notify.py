"""For the notifier's tests: incident events written as the correlator writes them, and a webhook
receiver on loopback that records what arrives and can be told to fail."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson

from stormwatch.schemas.alert import AlertStatus
from stormwatch.schemas.common import Severity, utc_from_ms
from stormwatch.schemas.incident import (
    AlertChange,
    AlertChangeKind,
    IncidentEvent,
    IncidentEventType,
    IncidentSnapshot,
    IncidentState,
)
from tests.kit.http import QuietHandler, serve_http

_STATES = {
    IncidentEventType.OPENED: IncidentState.OPEN,
    IncidentEventType.ACKNOWLEDGED: IncidentState.ACKNOWLEDGED,
    IncidentEventType.RESOLVED: IncidentState.RESOLVED,
    IncidentEventType.REOPENED: IncidentState.OPEN,
    IncidentEventType.CLOSED: IncidentState.CLOSED,
}


@dataclass
class IncidentWriter:
    """An incident's events with contiguous seqs, states and snapshots."""

    incident_id: str
    service: str = "api"
    severity: Severity = Severity.CRITICAL
    seq: int = 0
    state: IncidentState | None = None
    linked_into: str | None = None
    opened_ms: int | None = None  # the snapshot's opened_at: the time of its first event

    def event(self, kind: IncidentEventType, at_ms: int, **details: Any) -> IncidentEvent:
        before = self.state
        if self.opened_ms is None or kind is IncidentEventType.OPENED:
            self.opened_ms = at_ms
        after = _STATES.get(kind, before or IncidentState.OPEN)
        self.seq += 1
        self.state = after
        changes = []
        if kind is IncidentEventType.OPENED:
            changes = [
                AlertChange(
                    fingerprint=f"{self.incident_id}-fp",
                    change=AlertChangeKind.JOINED,
                    status=AlertStatus.FIRING,
                    severity=self.severity,
                    at=utc_from_ms(at_ms),
                    labels={"alertname": "HighLatency", "service": self.service},
                    annotations={"summary": "p99 over 2s"},
                )
            ]
        return IncidentEvent(
            event_id=f"{self.incident_id}:{self.seq}",
            incident_id=self.incident_id,
            seq=self.seq,
            type=kind,
            from_state=before,
            to_state=after,
            at=utc_from_ms(at_ms),
            actor="correlator",
            cause=kind.value,
            alerts=changes,
            details=details,
            snapshot=IncidentSnapshot(
                state=after,
                severity=self.severity,
                title=f"HighLatency on {self.service}",
                group_key=f'{{service="{self.service}"}}',
                group_labels={"service": self.service},
                rule="by-service",
                alert_count=1,
                firing_count=1 if after is IncidentState.OPEN else 0,
                opened_at=utc_from_ms(self.opened_ms),
                linked_into=self.linked_into,
            ),
        )


@dataclass
class Received:
    notification_id: str
    incident_id: str
    body: dict[str, Any]


@dataclass
class RecordingReceiver:
    """What a webhook receiver got, and the HTTP status it answers (503: down)."""

    status: int = 200
    delay_s: float = 0.0  # each answer waits this long (a slow receiver: sends in flight)
    received: list[Received] = field(default_factory=list)
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ids(self) -> list[str]:
        with self.lock:
            return [r.notification_id for r in self.received]

    def bodies(self) -> list[Received]:
        with self.lock:
            return list(self.received)


@contextmanager
def recording_webhook() -> Iterator[tuple[str, RecordingReceiver]]:
    """A webhook receiver on 127.0.0.1: yields (url, its record)."""
    state = RecordingReceiver()

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if state.delay_s:
                time.sleep(state.delay_s)
            with state.lock:
                status = state.status
                if status == 200:
                    state.received.append(
                        Received(
                            self.headers.get("X-Stormwatch-Notification-Id", ""),
                            self.headers.get("X-Stormwatch-Incident-Id", ""),
                            orjson.loads(body),
                        )
                    )
                else:
                    state.refused += 1
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serve_http(Handler) as base:
        yield f"{base}/hook", state


def webhook_notifier_file(url: str, *, group_interval: str = "0s", retry: str = "") -> str:
    """A notifier file with one webhook receiver that hears opened and resolved at once."""
    return (
        "route:\n"
        "  receiver: hook\n"
        f"  group_interval: {group_interval}\n"
        "  repeat_interval: 0s\n"
        "receivers:\n"
        "  - name: hook\n"
        f"    webhook_configs: [{{url: '{url}'}}]\n"
        f"{retry}"
    )


# Alertmanager's webhook payload, version 4, as its documentation lists the fields
# (prometheus.io/docs/alerting/latest/configuration/#webhook_config): field -> JSON type.
_AM_V4_FIELDS: dict[str, type | tuple[type, ...]] = {
    "version": str,
    "groupKey": str,
    "truncatedAlerts": int,
    "status": str,
    "receiver": str,
    "groupLabels": dict,
    "commonLabels": dict,
    "commonAnnotations": dict,
    "externalURL": str,
    "alerts": list,
}
_AM_V4_ALERT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "status": str,
    "labels": dict,
    "annotations": dict,
    "startsAt": str,
    "endsAt": str,
    "generatorURL": str,
    "fingerprint": str,
}
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def alertmanager_v4_problems(body: Any) -> list[str]:
    """What makes ``body`` not an Alertmanager webhook v4 payload (empty: it is one): every
    documented field present with its type, no other field, ``version`` "4", statuses firing or
    resolved, label and annotation maps of strings, RFC 3339 times."""
    problems: list[str] = []

    def check(obj: dict[str, Any], fields: dict[str, Any], where: str) -> None:
        for name, kind in fields.items():
            if name not in obj:
                problems.append(f"{where}{name}: missing")
            elif not isinstance(obj[name], kind) or isinstance(obj[name], bool):
                problems.append(f"{where}{name}: {type(obj[name]).__name__}, not {kind}")
        problems.extend(f"{where}{name}: not an Alertmanager field" for name in obj.keys() - fields.keys())

    def strings(obj: Any, where: str) -> None:
        if isinstance(obj, dict) and not all(
            isinstance(k, str) and isinstance(v, str) for k, v in obj.items()
        ):
            problems.append(f"{where}: not a map of strings")

    if not isinstance(body, dict):
        return [f"the body is a {type(body).__name__}, not an object"]
    check(body, _AM_V4_FIELDS, "")
    if body.get("version") != "4":
        problems.append(f"version: {body.get('version')!r}, not '4'")
    if body.get("status") not in ("firing", "resolved"):
        problems.append(f"status: {body.get('status')!r}")
    for name in ("groupLabels", "commonLabels", "commonAnnotations"):
        strings(body.get(name), name)
    for n, alert in enumerate(body.get("alerts") or []):
        where = f"alerts[{n}]."
        if not isinstance(alert, dict):
            problems.append(f"{where}: not an object")
            continue
        check(alert, _AM_V4_ALERT_FIELDS, where)
        if alert.get("status") not in ("firing", "resolved"):
            problems.append(f"{where}status: {alert.get('status')!r}")
        strings(alert.get("labels"), f"{where}labels")
        strings(alert.get("annotations"), f"{where}annotations")
        for name in ("startsAt", "endsAt"):
            if isinstance(alert.get(name), str) and not _RFC3339.match(alert[name]):
                problems.append(f"{where}{name}: {alert[name]!r} is not RFC 3339")
    return problems
