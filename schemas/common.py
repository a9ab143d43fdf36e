"""Shared building blocks of every wire contract.

All contracts travel as orjson-encoded JSON with a ``schema_version`` so consumers can refuse
(dead-letter) records written by an incompatible future release instead of misreading them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict

SCHEMA_VERSION = 1


class Contract(BaseModel):
    """Base of every wire contract: strict about unknown fields, cheap to (de)serialize."""

    # cache_strings off: by default pydantic-core keeps the strings it parses (values too, up to
    # 16,384 of them) in one cache for the life of the process. A catch-up after a fault parses
    # thousands of records at once, and the strings it left in that cache each kept a memory arena
    # around them (issue #17). Parsing an incident event costs about 6% more without it.
    model_config = ConfigDict(extra="forbid", frozen=False, populate_by_name=True, cache_strings=False)

    schema_version: int = SCHEMA_VERSION

    def to_bytes(self) -> bytes:
        # pydantic-core's own JSON writer: the same bytes as orjson over model_dump(mode="json"),
        # without building the intermediate dicts first (2.8x faster on an event listing
        # thousands of alert changes, high-cardinality's first wave; issue #16).
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Self:
        return cls.model_validate_json(data)

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Severity(StrEnum):
    """Normalized severity, ordered from most to least urgent."""

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]

    @classmethod
    def most_severe(cls, values: list[Severity]) -> Severity:
        return min(values, key=lambda s: s.rank) if values else cls.WARNING


_SEVERITY_RANK = {Severity.CRITICAL: 0, Severity.ERROR: 1, Severity.WARNING: 2, Severity.INFO: 3}


def utc_from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


def ms_from_dt(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def rfc3339(dt: datetime | None) -> str | None:
    """``2025-01-31T12:00:05.250Z``: UTC, millisecond precision, a fixed width that sorts as text.

    Naive datetimes are taken to be UTC, as everywhere in stormwatch. Here, in the contracts,
    because the pure core (streams.core.projection) writes it into the CLI's stable JSON.
    """
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
