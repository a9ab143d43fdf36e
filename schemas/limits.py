"""Parse limits: the bounds on what one raw record may cost, and their defaults, defined once.

The adapters enforce them (schemas.adapters); ``stormwatch.config.IngestSettings`` takes its
defaults from ``DEFAULT_LIMITS`` and hands the configured values back through
``ParseLimits.from_settings``, which reads any object with the five fields (``LimitSettings``), so
the contracts never import the configuration layer above them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Protocol

__all__ = ["DEFAULT_LIMITS", "EPOCH", "LimitSettings", "ParseLimits"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LimitSettings(Protocol):
    """What ``ParseLimits.from_settings`` reads: the configurable limits (``IngestSettings``)."""

    @property
    def max_record_bytes(self) -> int: ...
    @property
    def max_alerts_per_record(self) -> int: ...
    @property
    def max_labels(self) -> int: ...
    @property
    def max_label_bytes(self) -> int: ...
    @property
    def max_json_depth(self) -> int: ...


@dataclass(frozen=True)
class ParseLimits:
    """Bounds that keep one hostile record from costing more than a bounded amount of work.

    These defaults are the configuration's defaults too (``ingest.*``); the year range, which is
    not configurable, bounds every timestamp.
    """

    max_record_bytes: int = 4 * 1024 * 1024
    max_alerts_per_record: int = 10_000
    max_labels: int = 256
    max_label_bytes: int = 16 * 1024
    max_json_depth: int = 32
    min_year: int = 2000
    max_year: int = 2200

    def __post_init__(self) -> None:
        for name in (
            "max_record_bytes",
            "max_alerts_per_record",
            "max_labels",
            "max_label_bytes",
            "max_json_depth",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"ParseLimits.{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.min_year <= self.max_year <= 9998:
            raise ValueError(
                f"ParseLimits year range {self.min_year}..{self.max_year} must satisfy "
                "1 <= min_year <= max_year <= 9998"
            )

    @classmethod
    def from_settings(cls, settings: LimitSettings) -> ParseLimits:
        return cls(
            max_record_bytes=settings.max_record_bytes,
            max_alerts_per_record=settings.max_alerts_per_record,
            max_labels=settings.max_labels,
            max_label_bytes=settings.max_label_bytes,
            max_json_depth=settings.max_json_depth,
        )

    @cached_property
    def earliest(self) -> datetime:
        return datetime(self.min_year, 1, 1, tzinfo=UTC)

    @cached_property
    def latest(self) -> datetime:
        """Exclusive upper bound: the first instant after ``max_year``."""
        return datetime(self.max_year + 1, 1, 1, tzinfo=UTC)

    @cached_property
    def earliest_epoch(self) -> float:
        return (self.earliest - EPOCH).total_seconds()

    @cached_property
    def latest_epoch(self) -> float:
        return (self.latest - EPOCH).total_seconds()


DEFAULT_LIMITS = ParseLimits()
