"""PagerDuty Events API v2 alert events (``POST /v2/enqueue``), one event or a JSON array of them.

An event is ``{routing_key, event_action, dedup_key, payload: {summary, source, severity,
timestamp, component, group, class, custom_details}, images, links, client, client_url}``.
Mapping (docs/input-formats.md, "PagerDuty"):

- status: ``trigger`` and ``acknowledge`` -> firing (acknowledge adds the annotation
  ``pagerduty_action=acknowledge``), ``resolve`` -> resolved with ``ends_at`` = payload timestamp
  or the record time;
- identity: ``dedup_key`` (required for acknowledge/resolve) -> ``key_fingerprint("pagerduty", key)``
  and ``source_key``; a trigger without one is fingerprinted by its labels;
- labels: ``alertname`` = ``payload.class`` or else ``payload.summary``; ``source``,
  ``component``, ``group``, ``class`` as given; ``severity`` = the normalized level; ``dedup_key``;
- annotations: ``summary``, ``custom_details`` (the string, or compact JSON), ``links`` and
  ``images`` (compact JSON); ``client_url`` -> ``generator_url``; ``client`` -> ``Alert.source``.

``routing_key`` is a credential and is never copied into the alert.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from stormwatch.schemas.adapters.base import (
    NO_ENV,
    AdapterError,
    Env,
    ParseContext,
    R,
    key_str,
    opt_str,
    req_str,
    show,
    type_name,
)
from stormwatch.schemas.alert import AlertStatus
from stormwatch.schemas.common import Severity
from stormwatch.schemas.fingerprint import key_fingerprint, label_fingerprint_trusted
from stormwatch.schemas.severity import normalize_severity

SOURCE = "pagerduty"
ACTIONS = ("trigger", "acknowledge", "resolve")
_LABEL_FIELDS = ("source", "component", "group", "class")


def parse(doc: Any, ctx: ParseContext) -> None:
    if type(doc) is list:
        ctx.check_batch(len(doc), "")
        ctx.run_items(doc, "", build_event)
    elif type(doc) is dict:
        ctx.run_items([doc], "", build_event, indexed=False)
    else:
        raise AdapterError(
            R.INVALID_ALERT, "", f"expected an event object or array of events, got {type_name(doc)}"
        )


def _json_text(value: Any) -> str:
    return value if type(value) is str else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def build_event(item: Any, ctx: ParseContext, env: Env = NO_ENV) -> dict[str, Any]:
    if type(item) is not dict:
        raise AdapterError(R.INVALID_ALERT, "", f"expected event object, got {type_name(item)}")
    action = item.get("event_action")
    if action not in ACTIONS:
        what = (
            "missing" if action is None else f"expected trigger, acknowledge or resolve, got {show(action)}"
        )
        raise AdapterError(R.INVALID_ALERT, "event_action", what)
    key = key_str(item.get("dedup_key"), "dedup_key")
    if key is None and action != "trigger":
        raise AdapterError(R.INVALID_ALERT, "dedup_key", f"missing (required for {action} events)")
    payload = item.get("payload")
    trigger = action == "trigger"
    if payload is None:
        if trigger:
            raise AdapterError(R.INVALID_ALERT, "payload", "missing (required for trigger events)")
        payload = {}
    elif type(payload) is not dict:
        raise AdapterError(R.INVALID_ALERT, "payload", f"expected object, got {type_name(payload)}")

    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    if trigger:
        summary: str | None = req_str(
            payload.get("summary"), "payload.summary", "required for trigger events"
        )
        req_str(payload.get("source"), "payload.source", "required for trigger events")
        raw_severity: str | None = req_str(
            payload.get("severity"), "payload.severity", "required for trigger events"
        )
    else:
        summary = opt_str(payload.get("summary"), "payload.summary")
        raw_severity = opt_str(payload.get("severity"), "payload.severity")
    for name in _LABEL_FIELDS:
        value = opt_str(payload.get(name), f"payload.{name}")
        if value is not None:
            labels[name] = ctx.label_text(name, value, f"payload.{name}")
    if "class" in labels:
        labels["alertname"] = labels["class"]
    elif summary:
        labels["alertname"] = ctx.label_text("alertname", summary, "payload.summary")
    severity = normalize_severity(raw_severity) if raw_severity is not None else Severity.WARNING
    if raw_severity is not None:
        labels["severity"] = severity.value
    if key is not None:
        labels["dedup_key"] = key
    if len(labels) > ctx.limits.max_labels:
        raise AdapterError(
            R.TOO_MANY_LABELS,
            "payload",
            f"{len(labels)} labels, limit {ctx.limits.max_labels} (ingest.max_labels)",
        )

    if summary is not None:
        annotations["summary"] = summary
    for name, source in (("custom_details", payload), ("links", item), ("images", item)):
        value = source.get(name)
        if value is not None:
            annotations[name] = _json_text(value)
    if action == "acknowledge":
        annotations["pagerduty_action"] = "acknowledge"

    when: datetime | None = ctx.timestamp(payload.get("timestamp"), "payload.timestamp", epoch=True)
    received_at = ctx.received_at
    resolved = action == "resolve"
    return {
        "source": env.source or opt_str(item.get("client"), "client") or env.default_source or SOURCE,
        "fingerprint": key_fingerprint(SOURCE, key) if key is not None else label_fingerprint_trusted(labels),
        "status": AlertStatus.RESOLVED if resolved else AlertStatus.FIRING,
        "labels": labels,
        "annotations": annotations,
        "severity": severity,
        "starts_at": when or env.default_time or received_at,
        "ends_at": (when or received_at) if resolved else None,
        "generator_url": opt_str(item.get("client_url"), "client_url"),
        "source_key": key,
    }
