"""Shared machinery of the input adapters: results, errors and the field checks (limits: schemas.limits).

The checks are plain Python on the orjson-decoded document (pydantic validation of a whole batch
would cost several times more); the canonical ``Alert`` is then built with ``model_validate`` from
already-checked values, which measured faster than ``model_construct`` (see docs/input-formats.md).
Every error carries the JSON path of the offending field, so a dead letter says exactly what to fix.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from stormwatch.schemas.alert import Alert, InputFormat
from stormwatch.schemas.dlq import DeadLetter, DeadLetterReason
from stormwatch.schemas.limits import DEFAULT_LIMITS as DEFAULT_LIMITS  # defined there, long imported here
from stormwatch.schemas.limits import EPOCH, ParseLimits

log = logging.getLogger("stormwatch.adapters")

MAX_KEY_CHARS = 255  # PagerDuty's documented dedup_key limit; also used for the native "key"
EPOCH_MS_THRESHOLD = 1e11  # epoch numbers at or above this are milliseconds (1e11 s is year 5138)

LABEL_NAME_RULE = "[a-zA-Z_][a-zA-Z0-9_]*"
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_NOT_LABEL_CHAR = re.compile(r"[^a-zA-Z0-9_]")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_VALID_NAMES: set[str] = set()  # label names seen valid; bounded, names repeat across alerts
_VALID_NAMES_MAX = 8192
# Parsed timestamps by text: the alerts of one push often share endsAt/startsAt values. A pure
# function's memo, so results do not depend on what was parsed before.
_TS_CACHE: dict[str, datetime] = {}
_TS_CACHE_MAX = 4096

R = DeadLetterReason

# Alert.model_validate minus its Python wrapper (~0.4 µs of ~2.5 µs per alert). It measured faster
# than Alert.model_construct (~5.8 µs: its per-field Python loop), and it re-checks our checks.
_validate_alert = Alert.__pydantic_validator__.validate_python


@dataclass(slots=True)
class ParseResult:
    """What one raw record became: canonical alerts and/or dead letters (never neither)."""

    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    format: InputFormat | None = None  # detected or declared; None when it could not be told
    truncated_alerts: int = 0  # alerts Alertmanager left out of the webhook (its max_alerts setting)


@dataclass(slots=True)
class CheckedResult:
    """``parse_record_checked``'s result: like ParseResult, but each alert is its checked fields.

    Every dict holds what ``Alert.model_validate`` would be given (the builder's fields plus
    ``format`` and ``received_at``; no ``origin``), after the same checks, so it describes exactly
    the Alert that ``parse_record`` makes of it.
    """

    alerts: list[dict[str, Any]]
    dead_letters: list[DeadLetter]
    format: InputFormat | None
    received_at: datetime


class AdapterError(Exception):
    """A problem with one alert (or, raised before any alert was made, with the document)."""

    def __init__(self, reason: DeadLetterReason, path: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.path = path
        self.message = message

    def under(self, prefix: str) -> AdapterError:
        self.path = join_path(prefix, self.path)
        return self

    @property
    def detail(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def __str__(self) -> str:
        return self.detail


class RecordError(AdapterError):
    """A problem that dead-letters the whole record (size, encoding, limits, unknown format)."""


# ---------------------------------------------------------------- small helpers


_TYPE_NAMES: dict[type, str] = {
    type(None): "null",
    bool: "bool",
    int: "int",
    float: "float",
    str: "string",
    list: "array",
    dict: "object",
}


def type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def show(value: Any, limit: int = 64) -> str:
    """A short JSON rendering of a user value for error messages."""
    if type(value) is str and len(value) > limit:
        return orjson.dumps(value[:limit]).decode() + "..."
    try:
        text = orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def join_path(prefix: str, rest: str) -> str:
    if not prefix:
        return rest
    if not rest:
        return prefix
    return prefix + rest if rest[0] == "[" else f"{prefix}.{rest}"


def key_path(parent: str, key: str) -> str:
    """``parent.key``, or ``parent["odd key"]`` when the key is not an identifier."""
    part = key if _IDENT.match(key) else f"[{show(key)}]"
    return join_path(parent, part)


def sanitize_label_name(name: str) -> str:
    """Every character outside [a-zA-Z0-9_] becomes ``_``; a leading digit gets a ``_`` prefix."""
    out = _NOT_LABEL_CHAR.sub("_", name)
    if out and out[0].isdigit():
        out = "_" + out
    return out


def is_valid_label_name(name: str) -> bool:
    if name in _VALID_NAMES:
        return True
    if _LABEL_NAME.match(name) is None:
        return False
    if len(_VALID_NAMES) < _VALID_NAMES_MAX:
        _VALID_NAMES.add(name)
    return True


def encode_item(item: Any) -> bytes:
    """Re-encode one alert of a batch for its dead letter (compact JSON, as it was decoded)."""
    try:
        return orjson.dumps(item)
    except (TypeError, orjson.JSONEncodeError):  # not reachable for orjson-decoded input
        return repr(item).encode("utf-8", "backslashreplace")


def from_epoch_ms(ms: int) -> datetime:
    """Exact conversion (no float rounding) of a Kafka timestamp."""
    return EPOCH + timedelta(milliseconds=ms)


class Env:
    """Defaults an enclosing envelope hands to the alerts inside it (CloudEvents, native batch)."""

    __slots__ = ("default_source", "default_time", "source")

    def __init__(
        self,
        source: str | None = None,
        default_source: str | None = None,
        default_time: datetime | None = None,
    ) -> None:
        self.source = source  # overrides whatever the alert says (the CloudEvents ``source``)
        self.default_source = default_source  # used when the alert names no source
        self.default_time = default_time  # starts_at when the alert has none (else received_at)


NO_ENV = Env()

Builder = Callable[[Any, "ParseContext", Env], dict[str, Any]]


# ---------------------------------------------------------------- the per-record context


class ParseContext:
    """Collects the alerts and dead letters of one record and holds its coordinates."""

    __slots__ = (
        "_next_index",
        "alerts",
        "checked_only",
        "dead_letters",
        "format",
        "limits",
        "offset",
        "partition",
        "received_at",
        "topic",
        "truncated_alerts",
    )

    def __init__(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        received_at: datetime,
        limits: ParseLimits,
        format: InputFormat | None = None,
        checked_only: bool = False,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.received_at = received_at
        self.limits = limits
        self.format = format
        # Alerts, or their checked field dicts when ``checked_only`` (see CheckedResult).
        self.alerts: list[Any] = []
        self.checked_only = checked_only
        self.dead_letters: list[DeadLetter] = []
        self.truncated_alerts = 0
        self._next_index = 0

    @classmethod
    def for_record(
        cls,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int,
        limits: ParseLimits,
        *,
        checked_only: bool,
    ) -> ParseContext:
        """The context of one raw record; its timestamp is the alerts' ``received_at``."""
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            received_at=from_epoch_ms(timestamp_ms),
            limits=limits,
            checked_only=checked_only,
        )

    # ---- batches

    def check_record_size(self, size: int) -> None:
        """Checked before decoding: a record over ``max_record_bytes`` is never parsed."""
        if size > self.limits.max_record_bytes:
            raise RecordError(
                R.TOO_LARGE,
                "",
                f"record is {size} bytes, limit {self.limits.max_record_bytes} (ingest.max_record_bytes)",
            )

    def check_batch(self, count: int, path: str) -> None:
        if count > self.limits.max_alerts_per_record:
            raise RecordError(
                R.TOO_LARGE,
                path,
                f"{count} alerts in one record, limit {self.limits.max_alerts_per_record} "
                "(ingest.max_alerts_per_record)",
            )

    def take_index(self) -> int:
        """Position of the next alert in the record (Origin.index / DeadLetter.alert_index)."""
        index = self._next_index
        if index >= self.limits.max_alerts_per_record:
            raise RecordError(
                R.TOO_LARGE,
                "",
                f"more than {self.limits.max_alerts_per_record} alerts in one record "
                "(ingest.max_alerts_per_record)",
            )
        self._next_index = index + 1
        return index

    def run_items(
        self, items: list[Any], prefix: str, build: Builder, env: Env = NO_ENV, *, indexed: bool = True
    ) -> None:
        """Turn each item into an alert; a bad item becomes a dead letter and the rest go on."""
        for i, item in enumerate(items):
            index = self.take_index()
            try:
                self.add_alert(build(item, self, env), index)
            except RecordError:
                raise
            except AdapterError as exc:
                self.reject(item, exc.under(f"{prefix}[{i}]" if indexed else prefix), index)
            except Exception as exc:  # a bug must cost one dead letter, never the stream
                self.reject_internal(item, f"{prefix}[{i}]" if indexed else prefix, index, exc)

    def add_alert(self, fields: dict[str, Any], index: int) -> None:
        fields["format"] = self.format
        fields["received_at"] = self.received_at
        if self.checked_only:
            self.alerts.append(fields)
            return
        fields["origin"] = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "index": index,
        }
        self.alerts.append(_validate_alert(fields))

    # ---- dead letters

    def dead_letter(
        self, reason: DeadLetterReason, detail: str, original: bytes, alert_index: int | None
    ) -> DeadLetter:
        return DeadLetter.model_validate(
            {
                "reason": reason,
                "detail": detail,
                "original": base64.b64encode(original).decode("ascii"),
                "original_size": len(original),
                "source_topic": self.topic,
                "source_partition": self.partition,
                "source_offset": self.offset,
                "alert_index": alert_index,
                "format": self.format.value if self.format is not None else None,
                "at": self.received_at,
            }
        )

    def reject(self, item: Any, exc: AdapterError, index: int) -> None:
        self.dead_letters.append(self.dead_letter(exc.reason, exc.detail, encode_item(item), index))

    def reject_internal(self, item: Any, path: str, index: int, exc: Exception) -> None:
        log.error(
            "adapter bug on %s/%d@%d item %d", self.topic, self.partition, self.offset, index, exc_info=exc
        )
        detail = f"internal adapter error ({type(exc).__name__}: {str(exc)[:200]})"
        if path:
            detail = f"{path}: {detail}"
        self.dead_letters.append(self.dead_letter(R.INVALID_ALERT, detail, encode_item(item), index))

    # ---- field checks (paths are relative to the alert; run_items prefixes them)

    def labels(self, value: Any, path: str = "labels", *, sanitize: bool = False) -> dict[str, str]:
        """A non-empty str -> str map with valid names; empty values are dropped (as in Prometheus).

        ``sanitize`` rewrites invalid names (non-Prometheus formats) instead of rejecting them.
        """
        if type(value) is not dict:
            if value is None:
                raise AdapterError(R.MISSING_LABELS, path, "missing (every alert needs at least one label)")
            raise AdapterError(R.INVALID_ALERT, path, f"expected object, got {type_name(value)}")
        count = len(value)
        if count == 0:
            raise AdapterError(R.MISSING_LABELS, path, "empty (every alert needs at least one label)")
        limits = self.limits
        if count > limits.max_labels:
            raise AdapterError(
                R.TOO_MANY_LABELS, path, f"{count} labels, limit {limits.max_labels} (ingest.max_labels)"
            )
        max_bytes = limits.max_label_bytes
        quick = max_bytes // 4  # a UTF-8 character is at most 4 bytes
        valid = _VALID_NAMES
        clean = True
        for name, text in value.items():
            if type(text) is not str:
                raise AdapterError(
                    R.INVALID_ALERT, key_path(path, name), f"expected string, got {type_name(text)}"
                )
            if name not in valid and not is_valid_label_name(name):
                if not sanitize:
                    raise AdapterError(
                        R.INVALID_ALERT,
                        path,
                        f"invalid label name {show(name)} (must match {LABEL_NAME_RULE})",
                    )
                clean = False
            if not text:
                clean = False
            elif len(name) + len(text) > quick:
                size = len(name.encode()) + len(text.encode())
                if size > max_bytes:
                    raise AdapterError(
                        R.INVALID_ALERT,
                        key_path(path, name),
                        f"label is {size} bytes, limit {max_bytes} (ingest.max_label_bytes)",
                    )
        return value if clean else _rebuild_labels(value, path)

    def label_text(self, name: str, text: str, path: str) -> str:
        """A label value built from another field: enforce the per-label size limit at that field."""
        max_bytes = self.limits.max_label_bytes
        if len(name) + len(text) > max_bytes // 4:
            size = len(name.encode()) + len(text.encode())
            if size > max_bytes:
                raise AdapterError(
                    R.INVALID_ALERT,
                    path,
                    f"label {name} would be {size} bytes, limit {max_bytes} (ingest.max_label_bytes)",
                )
        return text

    def string_map(self, value: Any, path: str) -> dict[str, str]:
        """Annotations and the like: an optional str -> str map."""
        if value is None:
            return {}
        if type(value) is not dict:
            raise AdapterError(R.INVALID_ALERT, path, f"expected object, got {type_name(value)}")
        for name, text in value.items():
            if type(text) is not str:
                raise AdapterError(
                    R.INVALID_ALERT, key_path(path, name), f"expected string, got {type_name(text)}"
                )
        return value

    def timestamp(self, value: Any, path: str, *, epoch: bool = False) -> datetime | None:
        """RFC 3339 (any offset, any fraction) -> aware UTC datetime; None when unset.

        Go's zero time ``0001-01-01T00:00:00Z`` (Alertmanager's "no end") counts as unset.
        With ``epoch`` a JSON number is Unix time: seconds, or milliseconds when >= 1e11.
        """
        if value is None:
            return None
        kind = type(value)
        if kind is str:
            when = _TS_CACHE.get(value)
            if when is None:
                when = _parse_rfc3339(value)
                if (when is None or when.year == 1) and value.startswith("0001-01-01T00:00:00"):
                    return None
                if when is None:
                    raise AdapterError(
                        R.BAD_TIMESTAMP, path, f"{show(value)} is not an RFC 3339 timestamp with offset"
                    )
                if len(_TS_CACHE) >= _TS_CACHE_MAX:
                    _TS_CACHE.clear()
                _TS_CACHE[value] = when
        elif epoch and (kind is int or kind is float):
            seconds = value / 1000.0 if abs(value) >= EPOCH_MS_THRESHOLD else float(value)
            limits = self.limits
            if not limits.earliest_epoch <= seconds < limits.latest_epoch:
                raise AdapterError(
                    R.BAD_TIMESTAMP,
                    path,
                    f"epoch {show(value)} is outside the accepted years {limits.min_year}..{limits.max_year}",
                )
            if kind is int:
                delta = (
                    timedelta(milliseconds=value) if value >= EPOCH_MS_THRESHOLD else timedelta(seconds=value)
                )
                return EPOCH + delta
            return EPOCH + timedelta(seconds=seconds)
        else:
            wanted = "RFC 3339 timestamp string or epoch number" if epoch else "RFC 3339 timestamp string"
            raise AdapterError(R.BAD_TIMESTAMP, path, f"expected {wanted}, got {type_name(value)}")
        limits = self.limits
        if not limits.earliest <= when < limits.latest:
            raise AdapterError(
                R.BAD_TIMESTAMP,
                path,
                f"{show(value)} is outside the accepted years {limits.min_year}..{limits.max_year}",
            )
        return when


def start_default(env: Env, received_at: datetime, ends_at: datetime | None) -> datetime:
    """``starts_at`` of an alert that names none: the envelope's time, else the record time,
    but never after the alert's own end."""
    start = env.default_time or received_at
    return ends_at if ends_at is not None and ends_at < start else start


def opt_str(value: Any, path: str) -> str | None:
    """An optional string field; "" counts as unset."""
    if value is None:
        return None
    if type(value) is not str:
        raise AdapterError(R.INVALID_ALERT, path, f"expected string, got {type_name(value)}")
    return value or None


def req_str(value: Any, path: str, why: str = "") -> str:
    """A required non-empty string field."""
    if value is None or value == "":
        raise AdapterError(R.INVALID_ALERT, path, "missing" + (f" ({why})" if why else ""))
    if type(value) is not str:
        raise AdapterError(R.INVALID_ALERT, path, f"expected string, got {type_name(value)}")
    return value


def key_str(value: Any, path: str) -> str | None:
    """An optional identity key: non-empty string of at most MAX_KEY_CHARS characters."""
    if value is None:
        return None
    if type(value) is not str:
        raise AdapterError(R.INVALID_ALERT, path, f"expected string, got {type_name(value)}")
    if not value:
        raise AdapterError(R.INVALID_ALERT, path, "empty")
    if len(value) > MAX_KEY_CHARS:
        raise AdapterError(R.INVALID_ALERT, path, f"{len(value)} characters, limit {MAX_KEY_CHARS}")
    return value


def _rebuild_labels(value: dict[str, str], path: str) -> dict[str, str]:
    """Slow path: drop empty values, sanitize names, refuse names that collide after sanitizing."""
    out: dict[str, str] = {}
    source_of: dict[str, str] = {}
    for name, text in value.items():
        if not text:
            continue
        new = name if is_valid_label_name(name) else sanitize_label_name(name)
        if not new:
            raise AdapterError(R.INVALID_ALERT, path, "empty label name")
        if new in out:
            raise AdapterError(
                R.INVALID_ALERT,
                path,
                f"label names {show(source_of[new])} and {show(name)} both become {show(new)} "
                "after sanitizing",
            )
        out[new] = text
        source_of[new] = name
    if not out:
        raise AdapterError(
            R.MISSING_LABELS, path, "every label value is empty (an empty value means no label)"
        )
    return out


def _parse_rfc3339(text: str) -> datetime | None:
    """``YYYY-MM-DD(T|t| )hh:mm:ss[.frac](Z|z|±hh:mm)`` -> UTC datetime, else None."""
    if (
        len(text) < 20
        or text[4] != "-"
        or text[7] != "-"
        or text[10] not in "Tt "
        or text[13] != ":"
        or text[16] != ":"
    ):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        try:
            when = datetime.fromisoformat(text.upper())  # lower-case 't' / 'z' are valid RFC 3339
        except ValueError:
            return None
    tz = when.tzinfo
    if tz is None:
        return None
    if tz is not UTC:
        try:
            when = when.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00
            return None
    return when
