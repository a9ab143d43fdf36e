"""Input-format adapters: raw Kafka records -> canonical alerts and dead letters.

Formats and their mapping are documented in docs/input-formats.md; ``parse_record`` is the entry
point (one call per raw record, never raises).
"""

from stormwatch.schemas.adapters.base import CheckedResult, ParseResult, sanitize_label_name
from stormwatch.schemas.adapters.detect import ENCODING_HEADER, FORMAT_HEADER, NOTES_V1, detect_format
from stormwatch.schemas.adapters.record import parse_record, parse_record_checked
from stormwatch.schemas.limits import DEFAULT_LIMITS, ParseLimits

__all__ = [
    "DEFAULT_LIMITS",
    "ENCODING_HEADER",
    "FORMAT_HEADER",
    "NOTES_V1",
    "CheckedResult",
    "ParseLimits",
    "ParseResult",
    "detect_format",
    "parse_record",
    "parse_record_checked",
    "sanitize_label_name",
]
