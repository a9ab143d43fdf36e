"""One raw Kafka record in, canonical alerts and dead letters out; never raises.

The result depends only on the record (value, headers, coordinates, timestamp) and the limits:
``received_at`` is the record timestamp, not the wall clock, so re-reading the raw log gives the
same alerts, byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from stormwatch.schemas.adapters import alertmanager, cloudevents, native, pagerduty, prometheus
from stormwatch.schemas.adapters.base import (
    AdapterError,
    CheckedResult,
    ParseContext,
    ParseResult,
    R,
    RecordError,
    log,
    show,
    type_name,
)
from stormwatch.schemas.adapters.depth import depth_exceeds
from stormwatch.schemas.adapters.detect import ENCODING_HEADER, FORMAT_HEADER, NOTES_V1, detect_format
from stormwatch.schemas.alert import InputFormat
from stormwatch.schemas.limits import DEFAULT_LIMITS, ParseLimits

__all__ = ["ADAPTERS", "parse_record", "parse_record_checked"]

ADAPTERS: dict[InputFormat, Callable[[Any, ParseContext], None]] = {
    InputFormat.PROMETHEUS: prometheus.parse,
    InputFormat.ALERTMANAGER: alertmanager.parse,
    InputFormat.PAGERDUTY: pagerduty.parse,
    InputFormat.CLOUDEVENTS: cloudevents.parse,
    InputFormat.NATIVE: native.parse,
}

_BOM = b"\xef\xbb\xbf"
_FORMAT_NAMES = ", ".join(f.value for f in InputFormat)


def parse_record(
    value: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    headers: Mapping[str, bytes | str | None] | None = None,
    limits: ParseLimits = DEFAULT_LIMITS,
) -> ParseResult:
    """Parse one raw record. Every record yields at least one alert or dead letter.

    A bad alert in a batch becomes a dead letter of its own (``alert_index`` set, ``original`` its
    JSON) while the others become alerts; a bad record (too large, not UTF-8, not JSON, too deep,
    unknown format, empty) becomes one dead letter holding the whole record. ``value`` None is a
    tombstone and counts as empty.
    """
    ctx = _run(value, topic, partition, offset, timestamp_ms, headers, limits, checked_only=False)
    return ParseResult(
        alerts=ctx.alerts,
        dead_letters=ctx.dead_letters,
        format=ctx.format,
        truncated_alerts=ctx.truncated_alerts,
    )


def parse_record_checked(
    value: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    headers: Mapping[str, bytes | str | None] | None = None,
    limits: ParseLimits = DEFAULT_LIMITS,
) -> CheckedResult:
    """``parse_record`` without the pydantic models: the same checks and the same dead letters,
    but each alert stays the dict of checked fields (see CheckedResult).

    For the ingest stage, which turns every alert into its compact wire form right away: building
    and validating an ``Alert`` it would drop at once was about a third of its CPU time.
    """
    ctx = _run(value, topic, partition, offset, timestamp_ms, headers, limits, checked_only=True)
    return CheckedResult(
        alerts=ctx.alerts, dead_letters=ctx.dead_letters, format=ctx.format, received_at=ctx.received_at
    )


def _run(
    value: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    headers: Mapping[str, bytes | str | None] | None,
    limits: ParseLimits,
    *,
    checked_only: bool,
) -> ParseContext:
    ctx = ParseContext.for_record(topic, partition, offset, timestamp_ms, limits, checked_only=checked_only)
    raw = b"" if value is None else bytes(value)
    try:
        _parse(raw, headers, ctx)
    except AdapterError as exc:  # RecordError, or a document-level problem: the whole record goes
        _reject_record(ctx, raw, exc.reason, exc.detail)
    except Exception as exc:  # a bug must cost one dead letter, never the stream
        log.error("adapter bug on %s/%d@%d", topic, partition, offset, exc_info=exc)
        _reject_record(
            ctx, raw, R.INVALID_ALERT, f"internal adapter error ({type(exc).__name__}: {str(exc)[:200]})"
        )
    if not ctx.alerts and not ctx.dead_letters:  # every path above yields something; keep it a law
        _reject_record(ctx, raw, R.EMPTY, "record holds no alerts")
    return ctx


def _reject_record(ctx: ParseContext, raw: bytes, reason: R, detail: str) -> None:
    ctx.alerts.clear()
    ctx.dead_letters.clear()
    ctx.truncated_alerts = 0
    ctx.dead_letters.append(ctx.dead_letter(reason, detail, raw, None))


def _declared_format(headers: Mapping[str, bytes | str | None] | None) -> InputFormat | None:
    if not headers:
        return None
    declared = headers.get(FORMAT_HEADER)
    if declared is None:
        for key, val in headers.items():
            if key.lower() == FORMAT_HEADER:
                declared = val
                break
        else:
            return None
    if isinstance(declared, bytes | bytearray):
        text = bytes(declared).decode("utf-8", "replace")
    else:
        text = declared or ""
    try:
        return InputFormat(text.strip().lower())
    except ValueError:
        raise RecordError(
            R.UNKNOWN_FORMAT,
            "",
            f"header {FORMAT_HEADER}={show(text)} names no input format (expected one of {_FORMAT_NAMES})",
        ) from None


def _decode(raw: bytes) -> Any:
    if raw.startswith(_BOM):
        raw = raw[3:]
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(
            R.INVALID_UTF8, "", f"invalid UTF-8 at byte {exc.start}: {exc.reason} (JSON must be UTF-8)"
        ) from None
    if not raw.strip():
        raise RecordError(R.EMPTY, "", "record is only whitespace")
    if "surrogate" in message:
        raise RecordError(R.INVALID_UTF8, "", f"not representable as UTF-8: {message}")
    if "depth limit" in message or "recursion" in message:
        raise RecordError(R.TOO_DEEP, "", f"nesting deeper than the JSON parser allows: {message}")
    raise RecordError(R.NOT_JSON, "", f"not JSON: {message}")


def _parse(raw: bytes, headers: Mapping[str, bytes | str | None] | None, ctx: ParseContext) -> None:
    limits = ctx.limits
    if not raw:
        raise RecordError(R.EMPTY, "", "empty record")
    ctx.check_record_size(len(raw))
    if headers and headers.get(ENCODING_HEADER) in (NOTES_V1, NOTES_V1.decode()):
        raise RecordError(
            R.UNKNOWN_FORMAT,
            "",
            "a notes-v1 record (alerts the gateway already parsed) is read by ingest "
            "(stormwatch.streams.core.canonical), not by the input-format adapters",
        )
    declared = _declared_format(headers)
    ctx.format = declared
    doc = _decode(raw)
    max_depth = limits.max_json_depth
    # nesting depth <= number of opening brackets, so most records skip the walk entirely
    if raw.count(b"[") + raw.count(b"{") > max_depth and depth_exceeds(doc, max_depth):
        raise RecordError(R.TOO_DEEP, "", f"nesting deeper than {max_depth} (ingest.max_json_depth)")
    if doc is None or doc == [] or doc == {}:
        if doc == {} and declared is None:
            raise RecordError(R.UNKNOWN_FORMAT, "", "empty object: no input format recognised")
        raise RecordError(R.EMPTY, "", f"empty document ({orjson.dumps(doc).decode()})")
    fmt = declared or detect_format(doc)
    if fmt is None:
        raise RecordError(R.UNKNOWN_FORMAT, "", _describe_unknown(doc))
    ctx.format = fmt
    ADAPTERS[fmt](doc, ctx)


def _describe_unknown(doc: Any) -> str:
    hint = f"set the {FORMAT_HEADER} header to one of {_FORMAT_NAMES} to force a format"
    if type(doc) is dict:
        keys = sorted(doc)
        shown = ", ".join(show(k, 32) for k in keys[:8]) + (", ..." if len(keys) > 8 else "")
        return f"no input format recognised: object with keys {shown}; {hint}"
    if type(doc) is list:
        return f"no input format recognised: array of {len(doc)} without a telling object; {hint}"
    return f"no input format recognised: top-level {type_name(doc)}; {hint}"
