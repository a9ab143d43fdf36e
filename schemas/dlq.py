"""Dead letters: bad input kept with the reason and the original bytes, never dropped."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from stormwatch.schemas.common import Contract


class DeadLetterReason(StrEnum):
    TOO_LARGE = "too_large"  # record over the configured size limit
    INVALID_UTF8 = "invalid_utf8"
    NOT_JSON = "not_json"
    TOO_DEEP = "too_deep"  # nesting deeper than the configured limit
    UNKNOWN_FORMAT = "unknown_format"  # no adapter recognises it (or the header names none)
    INVALID_ALERT = "invalid_alert"  # the format is known but a field is missing or of the wrong type
    MISSING_LABELS = "missing_labels"  # an alert with no labels (nothing to fingerprint or group by)
    TOO_MANY_LABELS = "too_many_labels"
    BAD_TIMESTAMP = "bad_timestamp"  # unparseable or outside the accepted range
    UNSUPPORTED_VERSION = "unsupported_version"  # a schema_version this release cannot read
    EMPTY = "empty"  # empty record or empty batch
    LATE_ALERT = "late_alert"  # later than the allowed lateness, with late_policy=dead_letter
    UNKNOWN_INCIDENT = "unknown_incident"  # a command for an incident the correlator does not hold
    INVALID_COMMAND = "invalid_command"  # an operator command or mitigation result that does not validate


class DeadLetter(Contract):
    reason: DeadLetterReason
    detail: str = Field(description="What exactly was wrong, and where (JSON path, alert index)")
    original: str = Field(description="The original bytes, base64 (the whole record, or the bad alert)")
    original_size: int
    source_topic: str
    source_partition: int
    source_offset: int
    alert_index: int | None = None  # which alert of a batch, when only one alert was bad
    format: str | None = None  # the detected or declared input format, when known
    at: datetime
