"""stormwatch's own input format (docs/input-formats.md, "Native").

A batch ``{"stormwatch": 1, "source"?: str, "alerts": [alert, ...]}`` or a single alert object that
carries ``"stormwatch": 1`` itself. An alert is ``{labels, annotations?, status?, severity?,
starts_at?, ends_at?, generator_url?, source?, key?}``; unknown fields are refused so typos surface
in the DLQ instead of silently changing meaning. ``stormwatch`` is the format version.

The pydantic models at the bottom describe the format for the JSON Schema export
(schemas/json/native_input.json); parsing uses the hand-written checks above them, which are several
times faster and report JSON paths.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from stormwatch.schemas.adapters.base import (
    NO_ENV,
    AdapterError,
    Env,
    ParseContext,
    R,
    join_path,
    key_str,
    opt_str,
    show,
    start_default,
    type_name,
)
from stormwatch.schemas.alert import AlertStatus
from stormwatch.schemas.fingerprint import key_fingerprint, label_fingerprint_trusted
from stormwatch.schemas.severity import normalize_severity

SOURCE = "native"
VERSION = 1
ALERT_FIELDS = frozenset(
    {"labels", "annotations", "status", "severity", "starts_at", "ends_at", "generator_url", "source", "key"}
)
_SINGLE_FIELDS = ALERT_FIELDS | {"stormwatch"}
_BATCH_FIELDS = frozenset({"stormwatch", "source", "alerts"})
_STATUSES = {"firing": AlertStatus.FIRING, "resolved": AlertStatus.RESOLVED}


def parse(doc: Any, ctx: ParseContext) -> None:
    if type(doc) is not dict:
        raise AdapterError(R.INVALID_ALERT, "", f"expected a native document object, got {type_name(doc)}")
    parse_document(doc, ctx, "", NO_ENV)


def _unknown_field(doc: dict[str, Any], known: frozenset[str], path: str) -> AdapterError:
    name = sorted(k for k in doc if k not in known)[0]
    return AdapterError(
        R.INVALID_ALERT, path, f"unknown field {show(name)} (known: {', '.join(sorted(known))})"
    )


def parse_document(doc: dict[str, Any], ctx: ParseContext, path: str, env: Env) -> None:
    """Checks the document (raising before any alert is made), then each alert."""
    version = doc.get("stormwatch")
    if type(version) is not int or version != VERSION:
        if version is None:
            raise AdapterError(R.INVALID_ALERT, join_path(path, "stormwatch"), "missing (expected 1)")
        raise AdapterError(
            R.UNSUPPORTED_VERSION,
            join_path(path, "stormwatch"),
            f"format version {show(version)} is not supported (this release reads {VERSION})",
        )
    if "alerts" not in doc:
        ctx.run_items([doc], path, _build_single, env, indexed=False)
        return
    if not _BATCH_FIELDS.issuperset(doc):
        raise _unknown_field(doc, _BATCH_FIELDS, path)
    alerts = doc["alerts"]
    alerts_path = join_path(path, "alerts")
    if type(alerts) is not list:
        raise AdapterError(R.INVALID_ALERT, alerts_path, f"expected array, got {type_name(alerts)}")
    if not alerts:
        raise AdapterError(R.EMPTY, alerts_path, "empty: the document carries no alerts")
    default_source = opt_str(doc.get("source"), join_path(path, "source"))
    ctx.check_batch(len(alerts), alerts_path)
    ctx.run_items(alerts, alerts_path, build_alert, Env(env.source, default_source, env.default_time))


def _build_single(item: Any, ctx: ParseContext, env: Env) -> dict[str, Any]:
    return _build(item, ctx, env, _SINGLE_FIELDS)


def build_alert(item: Any, ctx: ParseContext, env: Env = NO_ENV) -> dict[str, Any]:
    return _build(item, ctx, env, ALERT_FIELDS)


def _build(item: Any, ctx: ParseContext, env: Env, known: frozenset[str]) -> dict[str, Any]:
    if type(item) is not dict:
        raise AdapterError(R.INVALID_ALERT, "", f"expected alert object, got {type_name(item)}")
    if not known.issuperset(item):
        raise _unknown_field(item, known, "")
    labels = ctx.labels(item.get("labels"), sanitize=True)
    annotations = ctx.string_map(item.get("annotations"), "annotations")
    received_at = ctx.received_at
    starts_at = ctx.timestamp(item.get("starts_at"), "starts_at", epoch=True)
    ends_at = ctx.timestamp(item.get("ends_at"), "ends_at", epoch=True)
    raw_status = item.get("status")
    if raw_status is None:
        resolved = ends_at is not None and ends_at <= received_at
        status = AlertStatus.RESOLVED if resolved else AlertStatus.FIRING
    else:
        found = _STATUSES.get(raw_status.lower()) if type(raw_status) is str else None
        if found is None:
            raise AdapterError(
                R.INVALID_ALERT, "status", f'expected "firing" or "resolved", got {show(raw_status)}'
            )
        status = found
    raw_severity = item.get("severity")
    if raw_severity is None:
        raw_severity = labels.get("severity")
    elif type(raw_severity) is not str:
        raise AdapterError(R.INVALID_ALERT, "severity", f"expected string, got {type_name(raw_severity)}")
    key = key_str(item.get("key"), "key")
    return {
        "source": env.source or opt_str(item.get("source"), "source") or env.default_source or SOURCE,
        "fingerprint": key_fingerprint(SOURCE, key) if key is not None else label_fingerprint_trusted(labels),
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "severity": normalize_severity(raw_severity),
        "starts_at": starts_at or start_default(env, received_at, ends_at),
        "ends_at": ends_at,
        "generator_url": opt_str(item.get("generator_url"), "generator_url"),
        "source_key": key,
    }


# ---------------------------------------------------------------- JSON Schema of the format

_TIME_HELP = "RFC 3339 timestamp with offset, or Unix epoch number (seconds; milliseconds when >= 1e11)"


class NativeAlert(BaseModel):
    """One alert in stormwatch's native input format."""

    model_config = ConfigDict(extra="forbid", title="NativeAlert")

    labels: dict[str, str] = Field(
        min_length=1,
        description="Identity of the alert. Names outside [a-zA-Z_][a-zA-Z0-9_]* are sanitized; "
        "empty values are dropped",
    )
    annotations: dict[str, str] = Field(default_factory=dict, description="Free text: summary, runbook, ...")
    status: Literal["firing", "resolved"] | None = Field(
        default=None, description="Default: resolved iff ends_at is set and not after the record timestamp"
    )
    severity: str | None = Field(
        default=None,
        description="Any word of the severity table (docs/contracts.md); "
        "default: labels.severity, else warning",
    )
    starts_at: datetime | float | None = Field(
        default=None, description=f"{_TIME_HELP}; default: record time"
    )
    ends_at: datetime | float | None = Field(default=None, description=_TIME_HELP)
    generator_url: str | None = Field(default=None, description="Link back to what produced the alert")
    source: str | None = Field(default=None, description="Producing system; default: the document's source")
    key: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="The producer's own identity for the alert; when set, the fingerprint is derived from it",
    )


class NativeBatch(BaseModel):
    """A batch of alerts in stormwatch's native input format."""

    model_config = ConfigDict(extra="forbid", title="NativeBatch")

    stormwatch: Literal[1] = Field(description="Format version")
    source: str | None = Field(default=None, description="Default source of every alert; default: native")
    alerts: list[NativeAlert] = Field(min_length=1)


class NativeSingleAlert(NativeAlert):
    """One alert on its own, marked with the format version."""

    model_config = ConfigDict(extra="forbid", title="NativeSingleAlert")

    stormwatch: Literal[1] = Field(description="Format version")


class NativeInput(RootModel[NativeBatch | NativeSingleAlert]):
    """stormwatch's native input format: a batch, or a single alert."""

    model_config = ConfigDict(title="NativeInput")
