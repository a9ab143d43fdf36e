"""CloudEvents 1.0 in the structured JSON format (one event) or the JSON batch format (an array).

Required attributes ``specversion`` ("1.0"), ``id``, ``source``, ``type``; ``time`` (RFC 3339) is the
default ``starts_at`` of the alerts inside; ``datacontenttype``, when present, must be JSON.
The alert travels in ``data`` (or base64 JSON in ``data_base64``) as:

- a native alert object, or an array of them (Prometheus-style objects, recognised by ``startsAt``,
  ``endsAt`` or ``generatorURL``, are read as Prometheus alerts);
- a native document ``{"stormwatch": 1, ...}``;
- an Alertmanager webhook or a PagerDuty event.

The event's ``source`` becomes ``Alert.source`` of every alert inside. A bad envelope dead-letters
that event only; the other events of a batch go on.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from stormwatch.schemas.adapters import alertmanager, native, pagerduty, prometheus
from stormwatch.schemas.adapters.base import (
    NO_ENV,
    AdapterError,
    Env,
    ParseContext,
    R,
    RecordError,
    join_path,
    req_str,
    show,
    type_name,
)
from stormwatch.schemas.adapters.depth import depth_exceeds
from stormwatch.schemas.adapters.detect import looks_like_alertmanager

SPECVERSION = "1.0"


def parse(doc: Any, ctx: ParseContext) -> None:
    if type(doc) is list:
        ctx.check_batch(len(doc), "")
        for i, event in enumerate(doc):
            _event(event, f"[{i}]", ctx)
    elif type(doc) is dict:
        _event(doc, "", ctx)
    else:
        raise AdapterError(
            R.INVALID_ALERT, "", f"expected a CloudEvent object or array of them, got {type_name(doc)}"
        )


def _event(event: Any, path: str, ctx: ParseContext) -> None:
    """One event: a bad envelope or data document dead-letters this event, not the record."""
    try:
        data, data_path, env = _envelope(event, ctx)
        _dispatch(data, join_path(path, data_path), ctx, env)  # its errors carry full paths
    except RecordError:
        raise
    except _EnvelopeError as exc:
        ctx.reject(event, exc.under(path), ctx.take_index())
    except AdapterError as exc:
        ctx.reject(event, exc, ctx.take_index())
    except Exception as exc:  # a bug must cost one dead letter, never the stream
        ctx.reject_internal(event, path, ctx.take_index(), exc)


class _EnvelopeError(AdapterError):
    """An envelope problem; its path is relative to the event."""


def _is_json_content_type(value: str) -> bool:
    media = value.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def _envelope(event: Any, ctx: ParseContext) -> tuple[Any, str, Env]:
    """Check the context attributes; return the decoded data, its path and the alerts' defaults."""
    try:
        return _check_envelope(event, ctx)
    except RecordError:
        raise
    except AdapterError as exc:
        raise _EnvelopeError(exc.reason, exc.path, exc.message) from None


def _check_envelope(event: Any, ctx: ParseContext) -> tuple[Any, str, Env]:
    if type(event) is not dict:
        raise AdapterError(R.INVALID_ALERT, "", f"expected CloudEvent object, got {type_name(event)}")
    version = event.get("specversion")
    if version != SPECVERSION:
        if version is None:
            raise AdapterError(R.INVALID_ALERT, "specversion", 'missing (expected "1.0")')
        raise AdapterError(
            R.UNSUPPORTED_VERSION, "specversion", f'{show(version)} is not supported (expected "1.0")'
        )
    req_str(event.get("id"), "id", "required CloudEvents attribute")
    source = req_str(event.get("source"), "source", "required CloudEvents attribute")
    req_str(event.get("type"), "type", "required CloudEvents attribute")
    time = ctx.timestamp(event.get("time"), "time")
    content_type = event.get("datacontenttype")
    if content_type is not None:
        if type(content_type) is not str:
            raise AdapterError(
                R.INVALID_ALERT, "datacontenttype", f"expected string, got {type_name(content_type)}"
            )
        if not _is_json_content_type(content_type):
            raise AdapterError(
                R.INVALID_ALERT,
                "datacontenttype",
                f"{show(content_type)} is not JSON; alerts travel as JSON data",
            )
    env = Env(source, None, time)
    data = event.get("data")
    encoded = event.get("data_base64")
    if encoded is None:
        if data is None:
            raise AdapterError(R.INVALID_ALERT, "data", "missing (the alert travels in data)")
        return data, "data", env
    if data is not None:
        raise AdapterError(R.INVALID_ALERT, "data_base64", "data and data_base64 are mutually exclusive")
    if type(encoded) is not str:
        raise AdapterError(R.INVALID_ALERT, "data_base64", f"expected string, got {type_name(encoded)}")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AdapterError(R.INVALID_ALERT, "data_base64", f"not valid base64 ({exc})") from None
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise AdapterError(R.NOT_JSON, "data_base64", f"decoded bytes are not JSON ({exc})") from None
    if depth_exceeds(decoded, ctx.limits.max_json_depth):
        raise AdapterError(
            R.TOO_DEEP,
            "data_base64",
            f"nesting deeper than {ctx.limits.max_json_depth} (ingest.max_json_depth)",
        )
    return decoded, "data_base64", env


def _dispatch(data: Any, path: str, ctx: ParseContext, env: Env) -> None:
    if type(data) is dict:
        if "stormwatch" in data:
            native.parse_document(data, ctx, path, env)
        elif looks_like_alertmanager(data):
            alertmanager.parse_webhook(data, ctx, path, env)
        elif "event_action" in data:
            ctx.run_items([data], path, pagerduty.build_event, env, indexed=False)
        else:
            ctx.run_items([data], path, build_alert, env, indexed=False)
    elif type(data) is list:
        if not data:
            raise AdapterError(R.EMPTY, path, "empty array: the event carries no alerts")
        ctx.check_batch(len(data), path)
        ctx.run_items(data, path, build_alert, env)
    else:
        raise AdapterError(
            R.INVALID_ALERT, path, f"expected alert object or array of alerts, got {type_name(data)}"
        )


def build_alert(item: Any, ctx: ParseContext, env: Env = NO_ENV) -> dict[str, Any]:
    """A native alert, or a Prometheus-style one when it uses Prometheus' camelCase fields."""
    if type(item) is dict and not prometheus.CAMEL_KEYS.isdisjoint(item):
        return prometheus.build_alert(item, ctx, env)
    return native.build_alert(item, ctx, env)
