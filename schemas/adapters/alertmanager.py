"""Alertmanager's webhook payload (``webhook_config``, payload ``version`` "4").

One webhook carries one notification group: ``groupKey``, ``status``, ``receiver``, the group's
common labels and annotations, and ``alerts`` with each alert's own ``status``, ``labels``,
``annotations``, ``startsAt``, ``endsAt`` (Go's zero time ``0001-01-01T00:00:00Z`` while firing),
``generatorURL`` and ``fingerprint``. Alertmanager's fingerprint is kept as ``Alert.source_key``;
``Alert.fingerprint`` is the label fingerprint, so one alert seen both as a Prometheus push and
through a webhook is the same alert. Grafana's webhook (``version`` "1" with ``orgId``) has the same
alert objects and is read the same way.
"""

from __future__ import annotations

from typing import Any

from stormwatch.schemas.adapters.base import (
    NO_ENV,
    AdapterError,
    Env,
    ParseContext,
    R,
    join_path,
    opt_str,
    show,
    start_default,
    type_name,
)
from stormwatch.schemas.alert import AlertStatus
from stormwatch.schemas.fingerprint import label_fingerprint_trusted
from stormwatch.schemas.severity import normalize_severity

SOURCE = "alertmanager"
GRAFANA_SOURCE = "grafana"

_STATUSES = {"firing": AlertStatus.FIRING, "resolved": AlertStatus.RESOLVED}


def parse(doc: Any, ctx: ParseContext) -> None:
    if type(doc) is not dict:
        raise AdapterError(
            R.INVALID_ALERT, "", f"expected an Alertmanager webhook object, got {type_name(doc)}"
        )
    parse_webhook(doc, ctx, "", NO_ENV)


def parse_webhook(doc: dict[str, Any], ctx: ParseContext, path: str, env: Env) -> None:
    """Checks the envelope first (raising before any alert is made), then each alert."""
    version = doc.get("version")
    if version is None or version == "4":
        source = SOURCE
    elif version == "1" and "orgId" in doc:
        source = GRAFANA_SOURCE
    else:
        raise AdapterError(
            R.UNSUPPORTED_VERSION,
            join_path(path, "version"),
            f'webhook payload version {show(version)} is not supported (expected "4")',
        )
    alerts = doc.get("alerts")
    alerts_path = join_path(path, "alerts")
    if type(alerts) is not list:
        what = "missing" if alerts is None else f"expected array, got {type_name(alerts)}"
        raise AdapterError(R.INVALID_ALERT, alerts_path, what)
    if not alerts:
        raise AdapterError(R.EMPTY, alerts_path, "empty: the webhook carries no alerts")
    truncated = doc.get("truncatedAlerts")
    if type(truncated) is int and truncated > 0:
        ctx.truncated_alerts += truncated
    ctx.check_batch(len(alerts), alerts_path)
    ctx.run_items(alerts, alerts_path, build_alert, Env(env.source, source, env.default_time))


def build_alert(item: Any, ctx: ParseContext, env: Env = NO_ENV) -> dict[str, Any]:
    if type(item) is not dict:
        raise AdapterError(R.INVALID_ALERT, "", f"expected alert object, got {type_name(item)}")
    labels = ctx.labels(item.get("labels"))
    annotations = item.get("annotations")
    if annotations is not None:
        annotations = ctx.string_map(annotations, "annotations")
    received_at = ctx.received_at
    starts_at = ctx.timestamp(item.get("startsAt"), "startsAt")
    ends_at = ctx.timestamp(item.get("endsAt"), "endsAt")
    raw_status = item.get("status")
    if raw_status is None:
        resolved = ends_at is not None and ends_at <= received_at
        status = AlertStatus.RESOLVED if resolved else AlertStatus.FIRING
    else:
        found = _STATUSES.get(raw_status) if type(raw_status) is str else None
        if found is None:
            raise AdapterError(
                R.INVALID_ALERT, "status", f'expected "firing" or "resolved", got {show(raw_status)}'
            )
        status = found
    return {
        "source": env.source or env.default_source or SOURCE,
        "fingerprint": label_fingerprint_trusted(labels),
        "status": status,
        "labels": labels,
        "annotations": annotations or {},
        "severity": normalize_severity(labels.get("severity")),
        "starts_at": starts_at or start_default(env, received_at, ends_at),
        "ends_at": ends_at,
        "generator_url": opt_str(item.get("generatorURL"), "generatorURL"),
        "source_key": opt_str(item.get("fingerprint"), "fingerprint"),
    }
