"""Prometheus' alert push: the JSON array Prometheus POSTs to Alertmanager's ``/api/v2/alerts``.

Each element is an Alertmanager API v2 ``postableAlert``: ``labels`` (required), ``annotations``,
``startsAt``, ``endsAt``, ``generatorURL``. There is no status field: Prometheus re-sends firing
alerts with ``endsAt`` a few evaluation intervals ahead, and resolved ones with ``endsAt`` in the
past, so an alert is resolved iff ``endsAt`` is set and not after the record's timestamp.
"""

from __future__ import annotations

from typing import Any

from stormwatch.schemas.adapters.base import (
    NO_ENV,
    AdapterError,
    Env,
    ParseContext,
    R,
    opt_str,
    start_default,
    type_name,
)
from stormwatch.schemas.alert import AlertStatus
from stormwatch.schemas.fingerprint import label_fingerprint_trusted
from stormwatch.schemas.severity import normalize_severity

SOURCE = "prometheus"
CAMEL_KEYS = frozenset({"startsAt", "endsAt", "generatorURL"})

_FIRING = AlertStatus.FIRING
_RESOLVED = AlertStatus.RESOLVED


def parse(doc: Any, ctx: ParseContext) -> None:
    """A push (array of alerts); a lone alert object is accepted as a batch of one."""
    if type(doc) is list:
        ctx.check_batch(len(doc), "")
        ctx.run_items(doc, "", build_alert)
    elif type(doc) is dict:
        ctx.run_items([doc], "", build_alert, indexed=False)
    else:
        raise AdapterError(R.INVALID_ALERT, "", f"expected a JSON array of alerts, got {type_name(doc)}")


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
    return {
        "source": env.source or env.default_source or SOURCE,
        "fingerprint": label_fingerprint_trusted(labels),
        "status": _RESOLVED if ends_at is not None and ends_at <= received_at else _FIRING,
        "labels": labels,
        "annotations": annotations or {},
        "severity": normalize_severity(labels.get("severity")),
        "starts_at": starts_at or start_default(env, received_at, ends_at),
        "ends_at": ends_at,
        "generator_url": opt_str(item.get("generatorURL"), "generatorURL"),
    }
